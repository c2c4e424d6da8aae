"""Which network a run keeps: the best moving average of a per-iteration score.

During the reconstruction stage the network should reproduce its input, so the score is
the reconstruction PSNR of the luma channel (:func:`reconstruction_psnr`, higher is better);
in the guided stage it is the loss (lower is better). Two rules (``best_rule`` in the config;
docs/method.md, "Training schedule, checkpoint selection and restarts"):

* ``"project"``: the mean of the last ``best_window`` scores (of all there are, while fewer
  have been seen: a mean of fewer points is still a mean), compared every ``best_every``
  iterations; one best for the run (CLIP-LIT, whose loss changes between rounds, restarts
  the comparison each round).
* ``"reference"``: the authors' ``train_rave.py``: a ``best_window``-slot buffer that is
  zero-filled at the start of each stage and round, averaged as ``sum / best_window`` (so
  it is biased toward 0 until full), compared every ``best_every`` (their 20) iterations,
  one best per round.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

from torch import Tensor

from rave.evaluation.paired import psnr_y_batch

__all__ = ["PYIQA_EPS", "BestTracker", "reconstruction_psnr"]

# pyiqa's PSNR adds this to the MSE (caps identical images at 80 dB); the authors' 8 dB
# re-initialisation threshold is in pyiqa's units, so training uses them exactly.
PYIQA_EPS = 1e-8


def reconstruction_psnr(enhanced: Tensor, inputs: Tensor) -> Tensor:
    """Batch mean of the per-image luma PSNR (dB) of ``enhanced`` to ``inputs``.

    The authors' training metric: pyiqa ``psnr(test_y_channel=True, color_space="ycbcr")``,
    i.e. BT.601 studio-range Y (:func:`rave.evaluation.paired.luma_y`), data range 1, MSE
    plus 1e-8, averaged over the batch.

    Args:
        enhanced: ``(B, 3, H, W)`` RGB in [0, 1].
        inputs: ``(B, 3, H, W)`` RGB in [0, 1].

    Returns:
        scalar float32 tensor in dB.
    """
    return psnr_y_batch(enhanced.float(), inputs.float(), eps=PYIQA_EPS).mean()


class BestTracker:
    """Moving average of a per-iteration score, and the best average seen so far.

    Args:
        window: scores averaged.
        mode: ``"max"`` (PSNR: higher is better) or ``"min"`` (loss).
        zero_fill: average as ``sum / window`` over a zero-filled buffer (the authors' rule)
            instead of the mean of the scores seen.
        every: compare only after iterations ``i`` with ``(i + 1) % every == 0``.
    """

    def __init__(
        self,
        window: int,
        mode: Literal["max", "min"],
        *,
        zero_fill: bool = False,
        every: int = 1,
    ) -> None:
        self.window = window
        self.mode = mode
        self.zero_fill = zero_fill
        self.every = every
        self.recent: deque[float] = deque(maxlen=window)
        self.best: float | None = None
        self.best_iteration: int = -1

    def mean(self) -> float | None:
        """Mean of the last ``window`` scores (fewer at first); None before the first."""
        if not self.recent:
            return None
        return math.fsum(self.recent) / len(self.recent)

    def average(self) -> float | None:
        """The score the rule compares: :meth:`mean`, or ``sum / window`` with zero fill."""
        if self.zero_fill:
            return math.fsum(self.recent) / self.window
        return self.mean()

    def update(self, value: float, iteration: int) -> bool:
        """Record iteration ``iteration``'s score; True when the average is a new best."""
        self.recent.append(float(value))
        if (iteration + 1) % self.every:
            return False
        average = self.average()
        if average is None or not math.isfinite(average):
            return False
        better = (
            self.best is None
            or (self.mode == "max" and average > self.best)
            or (self.mode == "min" and average < self.best)
        )
        if better:
            self.best, self.best_iteration = average, iteration
        return better

    def reset(self, mode: Literal["max", "min"]) -> None:
        """Forget every score and the best (a new stage or round starts)."""
        self.mode = mode
        self.recent.clear()
        self.best, self.best_iteration = None, -1

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "recent": list(self.recent),
            "best": self.best,
            "best_iteration": self.best_iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset(state["mode"])
        self.recent.extend(float(v) for v in state["recent"])
        self.best = None if state["best"] is None else float(state["best"])
        self.best_iteration = int(state["best_iteration"])
