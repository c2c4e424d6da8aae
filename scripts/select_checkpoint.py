"""Choose a training run's checkpoint by a validation score, never by the held-out photos.

A run with ``snapshot_every`` keeps the network every N iterations
(``RUN/snapshots/iter_NNNNNN.pt``). This script measures each snapshot (and ``best.pt``,
``last.pt``) on the validation photos that ``make_default_dataset.py`` set aside from the
*training* photos (``val_backlit``), with the figures of ``evaluate_default.py``, next to the
reference model (``rave-unpaired``), and picks:

1. among the checkpoints that clip no more than the reference on the validation photos (mean
   share of clipped pixels) and let no photo gain more than 2 points of clipping,
2. the one with the largest ``min(mean lift / reference's, p10 lift / reference's)``: the
   shadows lifted at least as much as the reference's on both figures, as far as it goes;
3. if none meets (1), the one that clips least.

Writes ``OUT/results.md``, ``OUT/per_image.csv``, ``OUT/grid.png`` (evaluate_default's
files) and ``OUT/choice.json``; prints the choice::

    python scripts/select_checkpoint.py runs/default_model_v2 --val runs/data/v2/val_backlit
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_default import (  # sibling script, not a package
    Model,
    evaluate,
    heldout_photos,
    load_model,
    reference_model_source,
)

MAX_GAIN_POINTS = 2.0


def candidates(run_dir: Path) -> list[Path]:
    """The run's snapshots in iteration order, then ``best.pt`` and ``last.pt`` if present."""
    snapshots = sorted((run_dir / "snapshots").glob("iter_*.pt"))
    return snapshots + [p for p in (run_dir / "best.pt", run_dir / "last.pt") if p.is_file()]


def summarise_model(rows: Sequence[dict]) -> dict[str, float]:
    """Mean figures over photos and the largest per-photo clipping gain (points)."""
    gains = [100 * (r["clipped_after"] - r["clipped_before"]) for r in rows]
    return {
        "mean_lift": float(np.mean([r["mean_lift"] for r in rows])),
        "p10_lift": float(np.mean([r["p10_lift"] for r in rows])),
        "clipped_after": float(np.mean([r["clipped_after"] for r in rows])),
        "max_gain_points": float(max(gains)),
        "chroma_shift": float(np.mean([r["chroma_shift"] for r in rows])),
    }


def choose(figures: dict[str, dict[str, float]], reference: str) -> tuple[str, str]:
    """The chosen checkpoint's name and why, by the rule in the module docstring."""
    ref = figures[reference]
    names = [n for n in figures if n not in (reference, "identity")]
    if not names:
        raise ValueError("no checkpoint to choose from")

    def lift_ratio(name: str) -> float:
        own = figures[name]
        return min(
            own["mean_lift"] / max(ref["mean_lift"], 1e-9),
            own["p10_lift"] / max(ref["p10_lift"], 1e-9),
        )

    admissible = [
        n
        for n in names
        if figures[n]["clipped_after"] <= ref["clipped_after"]
        and figures[n]["max_gain_points"] <= MAX_GAIN_POINTS
    ]
    if admissible:
        best = max(admissible, key=lift_ratio)
        return best, (
            f"clips no more than {reference} on the validation photos and lifts the shadows "
            f"most: min(mean, p10 lift ratio) = {lift_ratio(best):.2f}"
        )
    best = min(names, key=lambda n: figures[n]["clipped_after"])
    return best, f"no checkpoint clips as little as {reference}; this one clips least"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a training run's output_dir")
    parser.add_argument("--val", type=Path, required=True, help="the validation photos' folder")
    parser.add_argument("--out", type=Path, default=None, help="default RUN/selection")
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(list(argv) if argv is not None else None)

    import torch

    torch.set_num_threads(args.threads)
    photos, notes = heldout_photos(None, args.val)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    files = candidates(args.run_dir)
    if not photos or not files:
        print(f"error: no validation photos in {args.val} or no checkpoints in {args.run_dir}")
        return 1
    reference = "rave-unpaired"
    models = [Model("identity", lambda x: x), load_model(reference_model_source(), reference)]
    models += [load_model(str(p), p.stem) for p in files]
    out = args.out or args.run_dir / "selection"
    rows, table = evaluate(photos, models, out, max_pixels=args.max_pixels, scorers={})
    figures = {m.name: summarise_model([r for r in rows if r["model"] == m.name]) for m in models}
    chosen, why = choose(figures, reference)
    path = next(p for p in files if p.stem == chosen)
    from rave.io import atomic_write

    record = {"chosen": str(path), "why": why, "validation": str(args.val), "figures": figures}
    atomic_write(out / "choice.json", json.dumps(record, indent=2).encode())
    print(table)
    print(f"chosen: {path} ({why})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
