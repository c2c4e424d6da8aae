"""Measure enhancement models on the held-out backlit photos (no ground truth needed).

For every held-out photo (the fixed split of ``make_default_dataset.py``) and every model
(``identity`` = the input itself, ``rave-unpaired``, and each ``--model NAME|PATH``):

- ``mean lift``: mean luminance of the darkest half of the photo after minus before;
- ``p10 lift``: 10th percentile of luminance in that half, after minus before;
- ``clipped``: share of pixels whose largest channel is >= 0.99 (before = identity row),
  and how many photos gain more than 2 points of it (and the largest gain);
- ``chroma shift``: mean change of chromaticity ``rgb / (r + g + b)`` (0 for a pure
  brightening; a colour cast or clipped channels raise it), ``rave.evaluation.exposure``;
- ``NIQE`` (lower is more natural), when a no-reference scorer is importable.

Luminance is Rec. 709 luma of the sRGB-encoded values, ``Y = 0.2126 R + 0.7152 G +
0.0722 B``. The darkest half is fixed by the input: pixels whose input luminance is at or
below the input's median. Photos are downscaled (area averaging) to at most
``--max-pixels`` (default 1 MP) before inference, which bounds the CPU time; the held-out
photos are all smaller than that, so the default changes none of them.

Writes ``OUT/results.md`` (mean and median over photos), ``OUT/per_image.csv`` and
``OUT/grid.png`` (rows = photos; columns = input | each model)::

    python scripts/evaluate_default.py --out runs/eval/default
    python scripts/evaluate_default.py --model runs/default/final.pth --out runs/eval/mine
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rave.evaluation.exposure import chroma_shift
from rave.io import PhotoError
from rave.metrics import shadow_lift

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before_after import image_grid  # sibling script, not a package
from make_default_dataset import DEFAULT_DATA, REPO_ROOT, split_backlit

REFERENCE_CKPT = REPO_ROOT.parent / "shared" / "reference" / "checkpoints" / "rave_unpaired.pth"
CLIP_LEVEL = 0.99

Scorer = Callable[[np.ndarray], float]


# --------------------------------------------------------------------------- metrics


def exposure_stats(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Luminance lift in the input's darkest half and clipped-highlight shares.

    Args:
        before: input ``(H, W, 3)`` RGB float in [0, 1].
        after: enhanced ``(H, W, 3)`` RGB float in [0, 1], same shape.

    Returns:
        ``mean_lift``, ``p10_lift`` (after minus before, over pixels whose input luminance
        is <= the input median), ``dark_mean_after``, ``clipped_before``, ``clipped_after``
        (share of pixels whose largest channel is >= 0.99).
    """
    if before.shape != after.shape or before.ndim != 3 or before.shape[2] != 3:
        raise ValueError(f"expected two (H, W, 3) images, got {before.shape} and {after.shape}")
    # The same definitions as `rave evaluate` (rave.metrics.shadow_lift), so the figures of
    # the model card and of the evaluator agree.
    lift = shadow_lift(before, after, clip_threshold=CLIP_LEVEL)
    return {
        "mean_lift": lift.mean_lift,
        "p10_lift": lift.p10_lift,
        "dark_mean_after": lift.mean_after,
        "clipped_before": lift.clipped_before,
        "clipped_after": lift.clipped_after,
        "chroma_shift": chroma_shift(before, after),
    }


def no_reference_scorers() -> tuple[dict[str, Scorer], str]:
    """Available no-reference quality scores (lower is better) and a note on what is missing.

    Prefers ``rave.metrics`` (``niqe``, ``brisque``) and falls back to
    ``rave.evaluation.niqe.niqe``; each takes ``(H, W, 3)`` RGB float in [0, 1].
    """
    scorers: dict[str, Scorer] = {}
    try:
        import rave.metrics as metrics

        for name in ("niqe", "brisque"):
            fn = getattr(metrics, name, None)
            if callable(fn):
                scorers[name.upper()] = fn
    except ImportError:
        pass
    if "NIQE" not in scorers:
        try:
            from rave.evaluation.niqe import niqe

            scorers["NIQE"] = niqe
        except ImportError:
            pass
    note = "" if scorers else "no NIQE/BRISQUE implementation importable: scores left out"
    return scorers, note


# --------------------------------------------------------------------------- models


@dataclass
class Model:
    """A named image -> image function on ``(H, W, 3)`` float RGB in [0, 1]."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]


def _label(model: str, all_models: list[str]) -> str:
    """A model's column name: its file stem, or ``run/stem`` where stems repeat."""
    path = Path(model)
    if sum(Path(m).stem == path.stem for m in all_models) > 1:
        return f"{path.parent.name}/{path.stem}"
    return path.stem


def load_model(name_or_path: str, label: str | None = None) -> Model:
    """Wrap a zoo name or checkpoint file as a :class:`Model` (exact tiled inference)."""
    import torch

    from rave.inference import enhance_tensor
    from rave.zoo import load_enhancer

    net = load_enhancer(name_or_path)

    def run(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
        with torch.inference_mode():
            y = enhance_tensor(net, x, tile="auto")
        return y[0].permute(1, 2, 0).numpy().astype(np.float32)

    return Model(label or Path(str(name_or_path)).stem, run)


def reference_model_source() -> str:
    """The authors' ``rave-unpaired``: the file in ../shared when present, else the zoo name."""
    return str(REFERENCE_CKPT) if REFERENCE_CKPT.is_file() else "rave-unpaired"


# --------------------------------------------------------------------------- data


def heldout_photos(data_dir: Path | None, images_dir: Path | None) -> tuple[list[Path], list[str]]:
    """The photos to evaluate: the fixed held-out split of ``data_dir`` or all of ``images_dir``."""
    if images_dir is not None:
        if not images_dir.is_dir():
            return [], [f"{images_dir}: not a folder"]
        from rave.io.formats import list_image_files  # the package's one folder lister

        files = list_image_files(images_dir)
        return files, []
    _, heldout, notes = split_backlit(data_dir or DEFAULT_DATA)
    return heldout, [n for n in notes if "held-out" in n or "not found" in n]


def photos_or_notes(data_dir: Path | None, images_dir: Path | None) -> list[Path]:
    """:func:`heldout_photos`, with its notes printed to stderr (empty list: none found)."""
    photos, notes = heldout_photos(data_dir, images_dir)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return photos


def read_rgb(path: Path, max_pixels: int) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1], area-downscaled to at most ``max_pixels``.

    Read with the package's reader (``rave.io``: upright, 16-bit kept until the scaling).
    """
    from rave.io.views import read_float_rgb

    rgb = read_float_rgb(path)
    scale = math.sqrt(max_pixels / (rgb.shape[0] * rgb.shape[1]))
    if scale >= 1:
        return rgb
    size = (max(1, int(rgb.shape[1] * scale)), max(1, int(rgb.shape[0] * scale)))
    channels = [Image.fromarray(rgb[:, :, c], mode="F").resize(size, Image.Resampling.BOX)
                for c in range(3)]  # fmt: skip
    return np.stack([np.asarray(c) for c in channels], axis=2).astype(np.float32)


# --------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def summarise(rows: list[dict], models: Sequence[str], score_names: Sequence[str]) -> str:
    """Markdown table: per model, mean (and median) over photos of each figure."""
    head = ["model", "mean lift", "p10 lift", "dark-half mean after", "clipped before",
            "clipped after", "photos gaining > 2 points of clipping (max)", "chroma shift",
            *score_names]  # fmt: skip
    keys = ["mean_lift", "p10_lift", "dark_mean_after", "clipped_before", "clipped_after",
            "clipping_gains", "chroma_shift", *score_names]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        cells = [model]
        for key in keys:
            if key == "clipping_gains":
                gains = [100 * (r["clipped_after"] - r["clipped_before"]) for r in mine]
                over = sum(g > 2.0 for g in gains)
                cells.append(f"{over} of {len(gains)} ({max(gains):.1f})")
                continue
            values = np.array([r.get(key, math.nan) for r in mine], dtype=float)
            digits = 2 if key in score_names else (4 if key.startswith("clipped") else 3)
            digits = 4 if key == "chroma_shift" else digits
            if np.isnan(values).all():
                cells.append("n/a")
            else:
                cells.append(
                    f"{_fmt(np.nanmean(values), digits)} ({_fmt(np.nanmedian(values), digits)})"
                )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_atomic(path: Path, data: bytes) -> None:
    from rave.io import atomic_write

    atomic_write(path, data)


def _thumb(image: np.ndarray, height: int) -> Image.Image:
    im = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    return im.resize(
        (max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS
    )


def evaluate(
    photos: Sequence[Path],
    models: Sequence[Model],
    out_dir: Path,
    *,
    max_pixels: int = 1_000_000,
    grid_height: int = 160,
    scorers: dict[str, Scorer] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], str]:
    """Run every model on every photo; write ``results.md``, ``per_image.csv``, ``grid.png``.

    Returns:
        The per-photo rows and the Markdown summary table.
    """
    scorers = scorers or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    grid_rows: list[list[Image.Image]] = []
    seconds = dict.fromkeys((m.name for m in models), 0.0)
    for path in photos:
        try:
            image = read_rgb(path, max_pixels)
        except (OSError, ValueError, PhotoError) as err:
            log(f"skipped: {path}: unreadable image ({err})")
            continue
        thumbs = [_thumb(image, grid_height)]
        for model in models:
            start = time.perf_counter()
            output = model.run(image)
            seconds[model.name] += time.perf_counter() - start
            row = {"image": f"{path.parent.name}/{path.name}", "model": model.name,
                   "width": image.shape[1], "height": image.shape[0],
                   **exposure_stats(image, output)}  # fmt: skip
            for name, score in scorers.items():
                try:
                    row[name] = float(score(output))
                except ValueError as err:  # e.g. too small for NIQE's blocks
                    log(f"{path}: {name} not computed ({err})")
                    row[name] = math.nan
            rows.append(row)
            if model.name != "identity":
                thumbs.append(_thumb(output, grid_height))
        grid_rows.append(thumbs)
        log(f"{path.name}: done")
    if not rows:
        raise RuntimeError("no photo could be evaluated")

    names = [m.name for m in models]
    table = summarise(rows, names, list(scorers))
    timing = ", ".join(f"{n} {s:.1f} s" for n, s in seconds.items() if n != "identity")
    md = "\n".join([
        "# Held-out evaluation", "",
        f"{len(grid_rows)} photos; figures are the mean over photos (median in brackets). "
        "Lifts are in luminance units (0-1) over the darkest half of each input; clipped = "
        f"share of pixels with a channel >= {CLIP_LEVEL}; NIQE: lower is more natural.", "",
        table, "", f"Inference time (CPU): {timing}.", "",
    ])  # fmt: skip
    _write_atomic(out_dir / "results.md", md.encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    _write_atomic(out_dir / "per_image.csv", buf.getvalue().encode())
    grid = image_grid(grid_rows, ["input", *[n for n in names if n != "identity"]])
    png = io.BytesIO()
    grid.save(png, format="PNG")
    _write_atomic(out_dir / "grid.png", png.getvalue())
    return rows, table


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help="model to evaluate besides identity and rave-unpaired (repeatable)",
    )
    parser.add_argument(
        "--reference",
        default=None,
        metavar="NAME|PATH",
        help="the baseline model (default: ../shared's rave_unpaired.pth, "
        "else the zoo's rave-unpaired)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder with dicm/ and lime/ (default ../shared/data)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="evaluate every image in this folder instead of the split",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "default")
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    parser.add_argument("--no-score", action="store_true", help="skip NIQE/BRISQUE (faster)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(list(argv) if argv is not None else None)  # fmt: skip

    import torch

    torch.set_num_threads(args.threads)
    photos = photos_or_notes(args.data, args.images)
    if not photos:
        print("error: no held-out photos found", file=sys.stderr)
        return 2
    models = [Model("identity", lambda image: image)]
    reference = args.reference or reference_model_source()
    try:
        models.append(load_model(reference, label="rave-unpaired"))
        models += [load_model(m, label=_label(m, args.model)) for m in args.model]
    except Exception as err:  # zoo/checkpoint errors: one clear line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    scorers, note = ({}, "scores skipped (--no-score)") if args.no_score else no_reference_scorers()
    if note:
        print(f"note: {note}", file=sys.stderr)
    _, table = evaluate(photos, models, args.out, max_pixels=args.max_pixels, scorers=scorers)
    print(table)
    print(f"wrote {args.out / 'results.md'}, per_image.csv and grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
