"""Side-by-side before/after picture: one row per photo, "before" left, "after" right.

Photos are matched by file stem (``in/cat.png`` with ``out/cat.jpg`` or ``out/cat.png``);
a photo without a match is reported and left out. Used for the README picture::

    python scripts/before_after.py examples/ examples/enhanced -o examples/before_after.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

LABEL_HEIGHT = 28
GAP = 6


def _images(folder: Path) -> dict[str, Path]:
    from rave.io.formats import list_image_files  # the package's one folder lister

    return {p.stem: p for p in list_image_files(folder)}


def match_pairs(before_dir: Path, after_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pairs ``(before, after)`` with the same stem, sorted by stem, and notes on unmatched."""
    before, after = _images(before_dir), _images(after_dir)
    pairs = [(before[s], after[s]) for s in sorted(before) if s in after]
    notes = [f"{before[s]}: no output with stem {s!r} in {after_dir}" for s in sorted(before)
             if s not in after]  # fmt: skip
    return pairs, notes


def _load(path: Path, height: int) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    width = max(1, round(im.width * height / im.height))
    return im.resize((width, height), Image.Resampling.LANCZOS)


def load_rows(
    pairs: list[tuple[Path, Path]], row_height: int
) -> tuple[list[tuple[Image.Image, Image.Image]], list[str]]:
    """Each pair scaled to ``row_height``; unreadable pairs are left out with a note."""
    rows: list[tuple[Image.Image, Image.Image]] = []
    notes: list[str] = []
    for before, after in pairs:
        try:
            rows.append((_load(before, row_height), _load(after, row_height)))
        except OSError as err:
            bad = before if not _readable(before) else after
            notes.append(f"{bad}: cannot read image ({err})")
    return rows, notes


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except OSError:
        return False


def image_grid(rows: Sequence[Sequence[Image.Image]], labels: Sequence[str]) -> Image.Image:
    """One RGB image: a row of column labels, then one row of images per entry of ``rows``.

    Each image is centred in its column; the columns are as wide as their widest image.

    Args:
        rows: rows of images, each row as long as ``labels``; images of one row share a
            height (rows may differ).
        labels: column titles.
    """
    if not rows or any(len(row) != len(labels) for row in rows):
        raise ValueError(f"need at least one row of {len(labels)} images")
    col_w = [max(row[c].width for row in rows) for c in range(len(labels))]
    heights = [max(im.height for im in row) for row in rows]
    width = sum(col_w) + (len(labels) + 1) * GAP
    canvas = Image.new("RGB", (width, LABEL_HEIGHT + sum(heights) + len(rows) * GAP + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=20)
    x_left = [GAP + sum(col_w[:c]) + c * GAP for c in range(len(labels))]
    for c, text in enumerate(labels):
        centre = (x_left[c] + col_w[c] // 2, LABEL_HEIGHT // 2)
        draw.text(centre, text, fill="black", font=font, anchor="mm")
    y = LABEL_HEIGHT
    for row, height in zip(rows, heights, strict=True):
        for c, im in enumerate(row):
            canvas.paste(im, (x_left[c] + (col_w[c] - im.width) // 2, y))
        y += height + GAP
    return canvas


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="folder of input photos")
    parser.add_argument("after", type=Path, help="folder of enhanced photos (same stems)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG/JPEG to write")
    parser.add_argument("--row-height", type=int, default=256, help="pixels per row")
    args = parser.parse_args(list(argv) if argv is not None else None)

    for folder in (args.before, args.after):
        if not folder.is_dir():
            print(f"error: {folder}: not a folder", file=sys.stderr)
            return 2
    pairs, notes = match_pairs(args.before, args.after)
    for note in notes:
        print(f"skipped: {note}", file=sys.stderr)
    if not pairs:
        print(f"error: no photo in {args.before} has a match in {args.after}", file=sys.stderr)
        return 1
    rows, bad = load_rows(pairs, args.row_height)
    for note in bad:
        print(f"skipped: {note}", file=sys.stderr)
    if not rows:
        print("error: no readable pair of photos", file=sys.stderr)
        return 1
    grid = image_grid(rows, ("before", "after"))
    from rave.io import atomic_write

    jpeg = args.output.suffix.lower() in (".jpg", ".jpeg")
    atomic_write(args.output, lambda stream: grid.save(stream, format="JPEG" if jpeg else "PNG"))
    print(f"wrote {args.output} ({len(rows)} photos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
