"""Smoothed light map: distil a trained network into one whose light map keeps local contrast.

Not a method of the paper: the third stage of the built-in model's offline recipe
(docs/method.md, "Smoothed light map"). The EfficientNet-guided networks of that recipe
lift shadows as much as the CLIP-trained reference, but their light maps ``L`` follow
fine texture, which ``I / L`` then divides out; the enhanced photos look flatter, which
no-reference naturalness scores (NIQE) penalise. The same light maps passed through an
edge-aware filter keep their lift and score better than the reference (model card,
eleventh pair). This stage teaches the network to produce the filtered map itself, so that every
engine (tiled CPU kernel, ONNX export, the server) runs the same network as before.

Loss, for a frozen ``teacher`` (the network to smooth) and the student ``L``::

    mean (log L - log L_target)^2
    log L_target = max(GF(log L_t), min(log L_t, log(m / knee)))

with ``L_t`` the teacher's light map, ``GF`` the guided filter (:func:`rave.losses.
guided_filter`) guided by the log of the input's largest channel ``m`` (LIME's
illumination estimate), and the second term a cap: where filtering would raise a pixel's
gain, it may raise the output no higher than ``max(knee, the teacher's output)``, so
smoothing adds no blown highlights. The cap holds at the training size; at full resolution
the student's smoother map can still brighten bright areas next to dark ones (model card),
so ``highlight_weight`` can add the offline recipe's highlight term
(:func:`rave.losses.highlight_loss`, measured before the clamp, same ``knee``) as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rave.losses import guided_filter, highlight_loss
from rave.training.methods.base import GuidanceMethod, MethodContext

__all__ = ["SmoothLightMethod", "SmoothLightOptions", "smoothed_log_light"]

LIGHT_FLOOR = 1e-3  # as the light-map losses: a zero light map is a blown pixel


@dataclass(frozen=True)
class SmoothLightOptions:
    """``method_options`` of ``method: smooth-light``."""

    # the network to smooth: a zoo name or a checkpoint (also the usual init_weights)
    teacher: str = ""
    # guided filter window radius, in pixels of the training images (crop_size)
    radius: int = 3
    # guided filter regularisation, in (log units)^2 of the guide
    eps: float = 0.1
    # smoothing may not raise an output above max(knee, the teacher's output)
    knee: float = 0.9
    # weight of rave.losses.highlight_loss on the student's output (0 = off)
    highlight_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.radius < 1:
            raise ValueError(f"method_options.radius must be >= 1, got {self.radius}")
        if self.eps <= 0:
            raise ValueError(f"method_options.eps must be > 0, got {self.eps}")
        if not 0 < self.knee <= 1:
            raise ValueError(f"method_options.knee must be in (0, 1], got {self.knee}")


def smoothed_log_light(
    teacher_light: Tensor, inputs: Tensor, *, radius: int, eps: float, knee: float
) -> Tensor:
    """``log L_target`` of the module docstring.

    Args:
        teacher_light: ``(B, 1, H, W)`` the teacher's light map, ``L > 0``.
        inputs: ``(B, 3, H, W)`` the images it was computed on, in [0, 1].
        radius, eps: the guided filter's window radius (pixels) and regularisation.
        knee: in (0, 1].

    Returns:
        ``(B, 1, H, W)`` log light map.
    """
    log_teacher = torch.log(teacher_light.clamp(min=LIGHT_FLOOR))
    largest = inputs.amax(dim=1, keepdim=True).clamp(min=LIGHT_FLOOR)
    filtered = guided_filter(log_teacher, torch.log(largest), radius, eps)
    # the lowest log L that keeps the output at or below max(knee, teacher's output)
    floor = torch.minimum(log_teacher, torch.log(largest) - math.log(knee))
    return torch.maximum(filtered, floor)


class SmoothLightMethod(GuidanceMethod):
    """Distils ``method_options.teacher`` into a network with an edge-aware smooth light map."""

    name = "smooth-light"
    Options = SmoothLightOptions

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        if not self.options.teacher:
            raise ValueError("smooth-light: set method_options.teacher (a model or checkpoint)")
        from rave.zoo import load_enhancer

        teacher = load_enhancer(self.options.teacher, device=context.device)
        teacher.set_padding_mode("zeros")  # as the student is trained
        self.teacher = teacher.eval().requires_grad_(False)

    def guided_loss(
        self, enhanced: Tensor, inputs: Tensor, *, step: int, light: Tensor | None = None
    ) -> dict[str, Tensor]:
        if light is None:
            raise ValueError("smooth-light needs the light map (loss(..., light=L))")
        options = self.options
        with torch.no_grad():
            target = smoothed_log_light(
                self.teacher(inputs).float(),
                inputs.float(),
                radius=options.radius,
                eps=options.eps,
                knee=options.knee,
            )
        distill = (torch.log(light.clamp(min=LIGHT_FLOOR)) - target).pow(2).mean()
        terms = {"distill": distill, "total": distill}
        if options.highlight_weight:
            highlight = highlight_loss(enhanced, inputs, knee=options.knee, light=light)
            terms["highlight"] = highlight
            terms["total"] = distill + options.highlight_weight * highlight
        return terms
