"""Side-by-side before/after picture: one row per photo, "before" left, "after" right.

Photos are matched by file stem (``in/cat.png`` with ``out/cat.jpg`` or ``out/cat.png``);
a photo without a match is reported and left out. Used for the README picture::

    python scripts/before_after.py examples/ examples/enhanced -o examples/before_after.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
LABEL_HEIGHT = 28
GAP = 6


def _images(folder: Path) -> dict[str, Path]:
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }


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


def before_after_grid(
    rows: list[tuple[Image.Image, Image.Image]],
    *,
    labels: tuple[str, str] = ("before", "after"),
) -> Image.Image:
    """One RGB image: a label row, then ``before | after`` for each row of equal-height images."""
    if not rows:
        raise ValueError("no rows to draw")
    row_height = rows[0][0].height
    col_w = max(max(a.width, b.width) for a, b in rows)
    width = 2 * col_w + 3 * GAP
    height = LABEL_HEIGHT + len(rows) * (row_height + GAP) + GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=20)
    for col, text in enumerate(labels):
        x0 = GAP + col * (col_w + GAP)
        draw.text((x0 + col_w // 2, LABEL_HEIGHT // 2), text, fill="black", font=font, anchor="mm")
    for r, (a, b) in enumerate(rows):
        y = LABEL_HEIGHT + r * (row_height + GAP)
        for col, im in enumerate((a, b)):
            x0 = GAP + col * (col_w + GAP) + (col_w - im.width) // 2
            canvas.paste(im, (x0, y))
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
    grid = before_after_grid(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".before_after.", suffix=args.output.suffix or ".png",
                               dir=args.output.parent)  # fmt: skip
    os.close(fd)
    try:
        grid.save(tmp, format="JPEG" if args.output.suffix.lower() in (".jpg", ".jpeg") else "PNG")
        os.replace(tmp, args.output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {args.output} ({len(rows)} photos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
