"""Train RAVE, CLIP-LIT-Latent and CLIP-LIT on the same data with the same budget; compare.

The RAVE paper claims RAVE trains much faster and more stably than CLIP-LIT. This script
measures, for each method, on the same folders and with the same network budget
(reconstruction iterations + rounds of guided iterations, batch, crop, learning rate):

* wall time, split into the method's one-off setup (RAVE: the residual vector; CLIP-LIT:
  embedding the training sets and the prompt initialisation), the prompt refinements after
  each round, and the network iterations;
* guidance scores of the network at the end of every round, on held-out backlit photos:
  - ``proj_gap``: ``mean cos(Phi(O), r) - thr`` with RAVE's residual vector of the
    offline encoder (RAVE's target: 0 is reached, negative is under-enhanced);
  - ``p_well``: mean probability of the well-lit prompt of the CLIP-LIT-Latent run (that
    method's target: 1);
  - ``luma``: mean luminance (Rec. 709) of the outputs, and ``clipped``: share of pixels
    with a channel at or above 254/255 (method-independent);
* stability: the spread of those scores between rounds, and the coefficient of variation of
  each method's guided loss over its last round.

RAVE and CLIP-LIT-Latent guide with the offline ``effnet-lite0`` encoder. CLIP-LIT needs
CLIP's text tower; without CLIP weights it runs with ``clip:ViT-B-32@random``, which only
checks that it runs and measures its cost (its scores are meaningless). Every method uses
``effnet-lite0`` for the identity loss, so the runs differ only in their guidance.

Prompt stages are scaled with the network budget in the paper's proportions
(8000 initialisation and 1000 refinement iterations per 2100-iteration round).

Usage (data from ``scripts/make_default_dataset.py``)::

    python scripts/compare_methods.py --out runs/compare \
        --reconstruction 60 --round 60 --rounds 2 --crop 128 --batch 4 --lr 3e-4
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / "runs" / "data" / "default"
DEFAULT_METHODS = (
    "rave=effnet-lite0",
    "clip-lit-latent=effnet-lite0",
    "clip-lit=clip:ViT-B-32@random",
)

log = logging.getLogger("compare_methods")


@dataclass
class Timings:
    """Seconds spent in each part of one run."""

    setup: float = 0.0
    refinements: float = 0.0
    copying: float = 0.0  # keeping each round's network for scoring: not training time
    total: float = 0.0
    round_states: list[dict[str, torch.Tensor]] = field(default_factory=list)


class Scorer:
    """Guidance scores of an enhancement network on held-out backlit photos."""

    def __init__(self, heldout: list[Path], size: int, encoder: Any, residual: Any) -> None:
        from rave.training.data import load_image

        self.images = torch.stack([load_image(p, size).float() / 255.0 for p in heldout])
        self.encoder = encoder
        self.residual = residual.residual.float()
        self.threshold = float(residual.threshold)
        self.prompts: torch.Tensor | None = None  # (2, D) latent prompts, when known

    @torch.no_grad()
    def enhance(self, net: torch.nn.Module) -> torch.Tensor:
        from rave.network import apply_light_map

        net = net.eval()
        outs = [apply_light_map(x[None], net(x[None])) for x in self.images]
        return torch.cat(outs)

    @torch.no_grad()
    def score(self, net: torch.nn.Module | None) -> dict[str, float]:
        """Scores of ``net``'s outputs (None: of the inputs themselves)."""
        from rave.guidance.prompts import prompt_probabilities

        outputs = self.images if net is None else self.enhance(net)
        emb = self.encoder.embed(outputs, resize="squash")
        weights = torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)
        scores = {
            "proj_gap": float((emb @ self.residual).mean()) - self.threshold,
            "luma": float((outputs * weights).sum(1).mean()),
            "clipped": float((outputs >= 254 / 255).any(dim=1).float().mean()),
        }
        if self.prompts is not None:
            scores["p_well"] = float(prompt_probabilities(emb, self.prompts)[:, 1].mean())
        return scores


def _instrument(cls: type, timings: Timings) -> Callable[[], None]:
    """Wrap a method class's hooks with timers; returns a function that undoes it."""
    original_setup, original_round = cls.setup, cls.end_of_round

    @functools.wraps(original_setup)
    def setup(self: Any) -> None:
        start = time.perf_counter()
        original_setup(self)
        timings.setup += time.perf_counter() - start

    @functools.wraps(original_round)
    def end_of_round(self: Any, round_index: int, best: torch.nn.Module) -> None:
        start = time.perf_counter()
        timings.round_states.append(
            {k: v.detach().cpu().clone() for k, v in best.state_dict().items()}
        )
        timings.copying += time.perf_counter() - start
        start = time.perf_counter()
        original_round(self, round_index, best)
        timings.refinements += time.perf_counter() - start

    cls.setup, cls.end_of_round = setup, end_of_round

    def undo() -> None:
        cls.setup, cls.end_of_round = original_setup, original_round

    return undo


def _guided_loss_stats(metrics: Path, round_start: int) -> dict[str, float]:
    with metrics.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("stage") == "guided"]
    last = np.array([float(r["total"]) for r in rows if int(r["iteration"]) >= round_start])
    if len(last) < 2:
        return {}
    return {
        "final_loss": float(last[-max(1, len(last) // 5) :].mean()),
        "loss_cv_last_round": float(last.std() / max(abs(last.mean()), 1e-12)),
    }


def run_method(
    method: str, encoder: str, args: argparse.Namespace, scorer: Scorer
) -> dict[str, Any]:
    from rave.training.config import load_config
    from rave.training.loop import train
    from rave.training.methods import get_method

    out = args.out / method
    iterations = args.reconstruction + args.rounds * args.round
    scale = args.round / 2100.0
    overrides = [
        f"method={method}",
        f"backlit_dir={args.backlit}",
        f"well_lit_dir={args.well_lit}",
        f"guidance_encoder={encoder}",
        "identity_encoder=effnet-lite0",
        f"crop_size={args.crop}",
        f"batch_size={args.batch}",
        f"lr={args.lr}",
        f"reconstruction_iterations={args.reconstruction}",
        f"round_iterations={args.round}",
        f"iterations={iterations}",
        f"output_dir={out}",
        "device=cpu",
        "tensorboard=false",
        "log_every=5",
        f"checkpoint_every={iterations}",
        f"sample_every={iterations}",
        f"seed={args.seed}",
    ]
    if method != "rave":
        overrides += [
            f"method_options.prompt_init_iterations={max(1, round(8000 * scale))}",
            f"method_options.refine_iterations={max(1, round(1000 * scale))}",
        ]
    config = load_config(args.config, overrides)
    timings = Timings()
    undo = _instrument(get_method(method), timings)
    start = time.perf_counter()
    try:
        result = train(config)
    finally:
        undo()
    timings.total = time.perf_counter() - start
    network_time = timings.total - timings.setup - timings.refinements - timings.copying
    last_round_start = args.reconstruction + (args.rounds - 1) * args.round
    record: dict[str, Any] = {
        "method": method,
        "encoder": encoder,
        "iterations": result.iterations,
        "time_total_s": timings.total - timings.copying,
        "time_setup_s": timings.setup,
        "time_prompt_refinement_s": timings.refinements,
        "time_network_s": network_time,
        "s_per_network_iteration": network_time / max(1, result.iterations),
        "round_states": timings.round_states,  # scored (and dropped) once all runs are done
        **_guided_loss_stats(out / "metrics.csv", last_round_start),
    }
    if method == "clip-lit-latent" and encoder == scorer.encoder.name:
        from rave.training.methods.clip_lit import PROMPTS_FILENAME, load_prompt_features

        scorer.prompts = load_prompt_features(out / PROMPTS_FILENAME)[0]
    return record


def _spread(values: list[float]) -> float:
    return float(np.std(values)) if len(values) > 1 else float("nan")


def report(records: list[dict[str, Any]], baseline: dict[str, float]) -> str:
    keys = ("proj_gap", "p_well", "luma", "clipped")
    lines = [
        "| method (guidance encoder) | total s | setup s | prompt refine s | network s/it | "
        + " | ".join(f"{k} (last round)" for k in keys)
        + " | proj_gap spread | loss CV last round |",
        "|---" * (6 + len(keys)) + "|---|",
    ]
    base = " | ".join(f"{baseline[k]:.4f}" if k in baseline else "-" for k in keys)
    lines.append(f"| input photos | - | - | - | - | {base} | - | - |")
    for r in records:
        last = r["round_scores"][-1] if r["round_scores"] else {}
        scores = " | ".join(f"{last[k]:.4f}" if k in last else "-" for k in keys)
        spread = _spread([s["proj_gap"] for s in r["round_scores"]])
        lines.append(
            f"| {r['method']} ({r['encoder']}) | {r['time_total_s']:.1f} | "
            f"{r['time_setup_s']:.1f} | {r['time_prompt_refinement_s']:.1f} | "
            f"{r['s_per_network_iteration']:.3f} | {scores} | {spread:.4f} | "
            f"{r.get('loss_cv_last_round', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    names = [r["method"] for r in records]
    parts = ("time_setup_s", "time_prompt_refinement_s", "time_network_s")
    bottom = np.zeros(len(records))
    for part in parts:
        values = np.array([r[part] for r in records])
        axes[0].bar(
            names, values, bottom=bottom, label=part.removeprefix("time_").removesuffix("_s")
        )
        bottom += values
    axes[0].set_ylabel("seconds")
    axes[0].set_title("training time")
    axes[0].legend()
    for r in records:
        rounds = range(1, len(r["round_scores"]) + 1)
        axes[1].plot(rounds, [s["proj_gap"] for s in r["round_scores"]], "o-", label=r["method"])
        axes[2].plot(rounds, [s["luma"] for s in r["round_scores"]], "o-", label=r["method"])
    axes[1].axhline(0.0, color="grey", lw=0.8, ls="--")
    axes[1].set_title("held-out cos(Phi(O), r) - thr (effnet residual)")
    axes[2].set_title("held-out mean luminance")
    for axis in axes[1:]:
        axis.set_xlabel("round")
        axis.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlit", type=Path, default=DEFAULT_DATA / "train_backlit")
    parser.add_argument("--well-lit", type=Path, default=DEFAULT_DATA / "train_well_lit")
    parser.add_argument("--heldout", type=Path, default=DEFAULT_DATA / "heldout_backlit")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "compare")
    parser.add_argument("--config", type=Path, default=None, help="base YAML config")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help="METHOD=ENCODER entries, run in this order")  # fmt: skip
    parser.add_argument("--reconstruction", type=int, default=60)
    parser.add_argument("--round", type=int, default=60, help="guided iterations per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--score-size", type=int, default=256, help="held-out photos, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    for folder in (args.backlit, args.well_lit, args.heldout):
        if not folder.is_dir():
            print(
                f"error: {folder} not found (run scripts/make_default_dataset.py)", file=sys.stderr
            )
            return 2
    if (args.out).exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; choose another --out", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    from rave.encoders import create_encoder
    from rave.guidance.residual import compute_residual
    from rave.training.data import list_images

    encoder = create_encoder("effnet-lite0")
    residual = compute_residual(args.backlit, args.well_lit, encoder, progress=False)
    scorer = Scorer(list_images(args.heldout), args.score_size, encoder, residual)
    records = []
    for spec in args.methods:
        method, _, method_encoder = spec.partition("=")
        log.info("training %s guided by %s", method, method_encoder)
        records.append(run_method(method, method_encoder or "effnet-lite0", args, scorer))
    # scored last: p_well needs the latent run's prompts
    from rave.network import EnhancementNet

    for record in records:
        scores = []
        for state in record.pop("round_states"):
            net = EnhancementNet(padding_mode="reflect")
            net.load_state_dict(state)
            scores.append(scorer.score(net))
        record["round_scores"] = scores
    baseline = scorer.score(None)
    table = report(records, baseline)
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "inputs": baseline,
                "runs": records,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    (args.out / "results.md").write_text(table + "\n", encoding="utf-8")
    plot(records, args.out / "compare_methods.png")
    print(table)
    print(f"\nwritten: {args.out / 'results.json'}, results.md, compare_methods.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
