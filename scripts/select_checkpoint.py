"""Choose a training run's checkpoint by a validation score, never by the held-out photos.

A run with ``snapshot_every`` keeps the network every N iterations
(``RUN/snapshots/iter_NNNNNN.pt``). This script measures each snapshot (and ``best.pt``,
``last.pt``) on the validation photos that ``make_default_dataset.py`` set aside from the
*training* photos (``val_backlit``), with the figures of ``evaluate_default.py``, next to the
reference model (``rave-unpaired``), and picks:

1. among the checkpoints that clip no more than the reference on the validation photos (mean
   and median share of clipped pixels) *or no more than the photos themselves*, let no photo
   gain more than 2 points of clipping, the median photo gain no more than 0.1 point over
   the reference's median gain (or over none), and shift colours no more than the
   reference (mean chroma shift): each of issue 12's targets on the held-out photos has
   its counterpart here (the median and the chroma shift were added after a candidate
   chosen without them missed both on the held-out photos; the median gain after one added
   a few tenths of a point to most held-out photos that had none). The clipping bound is
   the larger of the reference's and the input's because the reference darkens white
   areas: where the validation photos clip more than the reference leaves (10.5% against
   7.7% on the project's first split), a model that leaves highlights as they are could
   never be admitted, while the per-photo gain still refuses any model that blows them,
2. with ``--scores``, also NIQE no worse than the reference's and BRISQUE no worse than the
   input's (the photos themselves) on the validation photos;
3. the one with the largest ``min(mean lift / reference's, p10 lift / reference's)``: the
   shadows lifted at least as much as the reference's on both figures, as far as it goes;
4. if none meets (1) and (2), the one that clips least.

Several runs can be given: their checkpoints compete under the same rule (the run is a
hyperparameter chosen on validation too).

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
    load_model,
    no_reference_scorers,
    photos_or_notes,
    reference_model_source,
)

MAX_GAIN_POINTS = 2.0
# The median photo's clipping gain may exceed the reference's (or none, if the reference's
# is negative) by this much: the held-out target "median clipping <= the reference's" allows
# 0.14 points over the input's own median there, and a model that adds a few tenths of a
# point to most photos that had none passed the level bound on validation and missed it.
MEDIAN_GAIN_SLACK_POINTS = 0.1


def candidates(run_dir: Path) -> list[Path]:
    """The run's snapshots in iteration order, then ``best.pt`` and ``last.pt`` if present."""
    snapshots = sorted((run_dir / "snapshots").glob("iter_*.pt"))
    return snapshots + [p for p in (run_dir / "best.pt", run_dir / "last.pt") if p.is_file()]


def summarise_model(rows: Sequence[dict]) -> dict[str, float]:
    """Mean figures over photos and the largest per-photo clipping gain (points)."""
    gains = [100 * (r["clipped_after"] - r["clipped_before"]) for r in rows]
    figures = {
        "mean_lift": float(np.mean([r["mean_lift"] for r in rows])),
        "p10_lift": float(np.mean([r["p10_lift"] for r in rows])),
        "clipped_after": float(np.mean([r["clipped_after"] for r in rows])),
        "clipped_after_median": float(np.median([r["clipped_after"] for r in rows])),
        "max_gain_points": float(max(gains)),
        "median_gain_points": float(np.median(gains)),
        "chroma_shift": float(np.mean([r["chroma_shift"] for r in rows])),
    }
    for score in ("NIQE", "BRISQUE"):
        if all(score in r for r in rows):
            figures[score] = float(np.nanmean([r[score] for r in rows]))
    return figures


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

    def natural(name: str) -> bool:  # only when the scores were computed
        own, source = figures[name], figures.get("identity", {})
        return own.get("NIQE", 0.0) <= ref.get("NIQE", 0.0) and own.get(
            "BRISQUE", 0.0
        ) <= source.get("BRISQUE", 0.0)

    # The input's own clipping counts as a bound too (module docstring, rule 1).
    source = figures.get("identity", ref)
    clip_bound = max(ref["clipped_after"], source["clipped_after"])
    median_bound = max(
        ref.get("clipped_after_median", 0.0), source.get("clipped_after_median", 0.0)
    )
    median_gain_bound = max(ref.get("median_gain_points", 0.0), 0.0) + MEDIAN_GAIN_SLACK_POINTS
    admissible = [
        n
        for n in names
        if figures[n]["clipped_after"] <= clip_bound
        and figures[n].get("clipped_after_median", 0.0) <= median_bound
        and figures[n].get("median_gain_points", 0.0) <= median_gain_bound
        and figures[n]["max_gain_points"] <= MAX_GAIN_POINTS
        and figures[n]["chroma_shift"] <= ref["chroma_shift"]
        and natural(n)
    ]
    if admissible:
        best = max(admissible, key=lift_ratio)
        return best, (
            f"clips (mean and median) no more than {reference} or the input, shifts colours "
            f"no more than {reference} on the validation photos (and is as natural, where "
            f"scored) and lifts the shadows "
            f"most: min(mean, p10 lift ratio) = {lift_ratio(best):.2f}"
        )
    best = min(names, key=lambda n: figures[n]["clipped_after"])
    return best, ("no checkpoint meets every criterion; this one clips least")


def _label(checkpoint: Path, several_runs: bool) -> str:
    """``iter_000250`` or, with several runs, ``RUN/iter_000250``."""
    if not several_runs:
        return checkpoint.stem
    run = checkpoint.parent.parent if checkpoint.parent.name == "snapshots" else checkpoint.parent
    return f"{run.name}/{checkpoint.stem}"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="training runs' output_dirs")
    parser.add_argument("--val", type=Path, required=True, help="the validation photos' folder")
    parser.add_argument("--out", type=Path, default=None, help="default FIRST_RUN/selection")
    parser.add_argument("--scores", action="store_true", help="NIQE/BRISQUE in the rule too")
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(list(argv) if argv is not None else None)

    import torch

    torch.set_num_threads(args.threads)
    photos = photos_or_notes(None, args.val)
    files = [path for run in args.run_dirs for path in candidates(run)]
    if not photos or not files:
        print(f"error: no validation photos in {args.val} or no checkpoints in {args.run_dirs}")
        return 1
    reference = "rave-unpaired"
    models = [Model("identity", lambda x: x), load_model(reference_model_source(), reference)]
    labels = [_label(p, len(args.run_dirs) > 1) for p in files]
    models += [load_model(str(p), label) for p, label in zip(files, labels, strict=True)]
    out = args.out or args.run_dirs[0] / "selection"
    scorers = no_reference_scorers()[0] if args.scores else {}
    rows, table = evaluate(photos, models, out, max_pixels=args.max_pixels, scorers=scorers)
    figures = {m.name: summarise_model([r for r in rows if r["model"] == m.name]) for m in models}
    chosen, why = choose(figures, reference)
    path = next(p for p, label in zip(files, labels, strict=True) if label == chosen)
    from rave.io import atomic_write

    record = {"chosen": str(path), "why": why, "validation": str(args.val), "figures": figures}
    atomic_write(out / "choice.json", json.dumps(record, indent=2).encode())
    print(table)
    print(f"chosen: {path} ({why})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
