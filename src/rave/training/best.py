"""The paper's rule for the best checkpoint, and the PSNR it uses during reconstruction.

During the reconstruction stage the network should reproduce its input, so the score is the
PSNR of the output's luma (Y) to the input's; in the guided stage it is the loss. Either way
the score is a moving average over the last ``window`` iterations (30 in the paper), so one
lucky batch cannot win.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["BestTracker", "psnr_y"]

# ITU-R BT.601 luma weights, the usual "Y channel" of image-restoration papers.
_LUMA = (0.299, 0.587, 0.114)


def psnr_y(images: Tensor, references: Tensor, eps: float = 1e-10) -> Tensor:
    """Mean over the batch of the PSNR between the luma (Y) channels, data range 1.

    Args:
        images: ``(B, 3, H, W)`` RGB in [0, 1].
        references: ``(B, 3, H, W)`` RGB in [0, 1].
        eps: floor of the MSE, so identical images give a finite 100 dB.

    Returns:
        scalar tensor in dB.
    """
    if images.shape != references.shape or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected two (B, 3, H, W) batches, got {tuple(images.shape)} and "
            f"{tuple(references.shape)}"
        )
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    y_a = (images.float() * weights).sum(dim=1)
    y_b = (references.float() * weights).sum(dim=1)
    mse = (y_a - y_b).pow(2).flatten(1).mean(dim=1).clamp_min(eps)
    return (-10.0 * torch.log10(mse)).mean()


class BestTracker:
    """Moving average of a per-iteration value, and the best average seen so far.

    Args:
        window: iterations averaged (no best is declared until the window is full).
        mode: ``"max"`` (PSNR: higher is better) or ``"min"`` (loss).
    """

    def __init__(self, window: int, mode: Literal["max", "min"]) -> None:
        self.window = window
        self.mode = mode
        self.recent: deque[float] = deque(maxlen=window)
        self.best: float | None = None
        self.best_iteration: int = -1

    def average(self) -> float | None:
        """The current moving average (None until the window is full)."""
        if len(self.recent) < self.window:
            return None
        return math.fsum(self.recent) / len(self.recent)

    def update(self, value: float, iteration: int) -> bool:
        """Record one iteration's value; True when the moving average is a new best."""
        self.recent.append(float(value))
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
        """Forget everything (a new stage or round starts)."""
        self.__init__(self.window, mode)  # type: ignore[misc]

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
