"""Full-resolution crops of held-out photos, input next to each model's output, to judge by eye.

Thumbnails hide what a photographer looks at first: blown highlights and lifted noise at
100%. For each held-out photo this picks the ``--crop`` x ``--crop`` window (1:1 pixels,
no resampling) where the models' outputs differ most (mean absolute difference between the
brightest and the darkest output at each pixel, summed over the window), so the crop
shows what tells the models apart rather than a region where all agree. The photos shown
are the ``--photos`` whose windows differ most. Columns: input, then each model::

    python scripts/crop_grid.py --model default --model runs/v2/best.pt -o docs/crops.jpg

The baseline ``rave-unpaired`` comes first after the input, as in evaluate_default.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before_after import image_grid  # sibling scripts, not a package
from evaluate_default import Model, load_model, photos_or_notes, read_rgb, reference_model_source


def window_sums(
    values: np.ndarray, size: int, stride: int
) -> tuple[np.ndarray, list[int], list[int]]:
    """Sums of ``values`` (H, W) over ``size`` x ``size`` windows every ``stride`` pixels.

    Returns:
        ``(sums, tops, lefts)``: ``sums[i, j]`` is the window at ``(tops[i], lefts[j])``;
        windows are clamped inside the image (the last one ends at its border).
    """
    height, width = values.shape
    size_y, size_x = min(size, height), min(size, width)
    integral = np.zeros((height + 1, width + 1))
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    tops = sorted({*range(0, height - size_y + 1, stride), height - size_y})
    lefts = sorted({*range(0, width - size_x + 1, stride), width - size_x})
    y, x = np.array(tops)[:, None], np.array(lefts)[None, :]
    sums = (
        integral[y + size_y, x + size_x] - integral[y, x + size_x]
        - integral[y + size_y, x] + integral[y, x]
    )  # fmt: skip
    return sums, tops, lefts


def most_telling_window(outputs: Sequence[np.ndarray], size: int) -> tuple[int, int, float]:
    """``(top, left, score)`` of the window where the outputs (H, W, 3) disagree most."""
    stack = np.stack(outputs)
    spread = (stack.max(axis=0) - stack.min(axis=0)).mean(axis=2)
    sums, tops, lefts = window_sums(spread, size, max(1, size // 4))
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return (
        tops[i],
        lefts[j],
        float(sums[i, j]) / (min(size, spread.shape[0]) * min(size, spread.shape[1])),
    )


def _tile(image: np.ndarray, top: int, left: int, size: int, caption: str) -> Image.Image:
    crop = image[top : top + size, left : left + size]
    tile = Image.fromarray((np.clip(crop, 0, 1) * 255 + 0.5).astype(np.uint8))
    if caption:
        ImageDraw.Draw(tile).text(
            (4, 4), caption, fill="white", stroke_width=2, stroke_fill="black"
        )
    return tile


def crop_rows(
    photos: Sequence[Path], models: Sequence[Model], *, size: int, count: int
) -> list[list[Image.Image]]:
    """Rows ``[input, model outputs...]`` of the ``count`` photos whose windows differ most."""
    scored = []
    for path in photos:
        image = read_rgb(path, 10**9)  # full resolution
        outputs = [model.run(image) for model in models]
        top, left, score = most_telling_window(outputs, size)
        caption = f"{path.stem} ({left},{top})"
        row = [_tile(image, top, left, size, caption)]
        row += [_tile(output, top, left, size, "") for output in outputs]
        scored.append((score, row))
    scored.sort(key=lambda item: -item[0])
    return [row for _, row in scored[:count]]


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME|PATH",
                        help="model to show after rave-unpaired (repeatable)")  # fmt: skip
    parser.add_argument("--label", action="append", default=[], help="column title per --model")
    parser.add_argument("--data", type=Path, default=None, help="folder with dicm/ and lime/")
    parser.add_argument("--images", type=Path, default=None, help="photos instead of the split")
    parser.add_argument("--crop", type=int, default=256, help="crop side in pixels (1:1)")
    parser.add_argument("--photos", type=int, default=6, help="rows to show")
    parser.add_argument("-o", "--output", type=Path, required=True, help="PNG/JPEG to write")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.label and len(args.label) != len(args.model):
        parser.error("give one --label per --model, or none")

    import torch

    torch.set_num_threads(args.threads)
    photos = photos_or_notes(args.data, args.images)
    if not photos:
        print("error: no photos to show", file=sys.stderr)
        return 1
    labels = args.label or [Path(m).stem for m in args.model]
    models = [load_model(reference_model_source(), "rave-unpaired")]
    models += [load_model(m, label) for m, label in zip(args.model, labels, strict=True)]
    rows = crop_rows(photos, models, size=args.crop, count=args.photos)
    grid = image_grid(rows, ["input", *(m.name for m in models)])
    from rave.io import atomic_write

    jpeg = args.output.suffix.lower() in (".jpg", ".jpeg")
    options = {"format": "JPEG", "quality": 92} if jpeg else {"format": "PNG"}
    atomic_write(args.output, lambda stream: grid.save(stream, **options))
    print(f"wrote {args.output} ({len(rows)} photos, {args.crop} px crops at 1:1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
