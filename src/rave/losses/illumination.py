"""Light-map smoothness: total variation of ``log L``.

Not part of RAVE (the paper has no such term). Retinex-style methods keep the illumination
piecewise smooth (RetinexNet's smoothness loss, Zero-DCE's illumination smoothness); the
built-in ``default`` model's offline recipe can add it (``method_options.light_tv_weight``,
docs/method.md) because its EfficientNet-guided light maps follow texture two to three
times as much as the CLIP-trained ones (docs/model_card.md), which flattens local contrast
when ``I / L`` is taken.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["light_map_total_variation"]


def light_map_total_variation(light: Tensor, *, eps: float = 1e-3) -> Tensor:
    """Mean absolute difference of ``log L`` between neighbouring pixels.

    ``(mean |log L[y+1, x] - log L[y, x]| + mean |log L[y, x+1] - log L[y, x]|)`` over the
    batch. The L1 norm (not the square) makes one step of height ``h`` across the image
    cheaper than texture of the same amplitude repeated at every pixel, so the light map
    may still change where the illumination does (a backlit subject against the sky) but
    not follow fine detail; ``log`` makes the cost of a step depend on the ratio of the two
    gains, which is what the output ``I / L`` shows.

    Args:
        light: ``(B, 1, H, W)`` light map, ``L >= 0``, ``H, W >= 2``.
        eps: floor of ``L`` before the log (a zero light map is a blown pixel; its log
            would be -inf).

    Returns:
        scalar tensor >= 0; 0 for a constant light map.
    """
    if light.ndim != 4 or light.shape[1] != 1 or min(light.shape[2:]) < 2:
        raise ValueError(
            f"expected a (B, 1, H, W) light map with H, W >= 2, got {tuple(light.shape)}"
        )
    log_light = torch.log(light.clamp(min=eps))
    vertical = (log_light[..., 1:, :] - log_light[..., :-1, :]).abs().mean()
    horizontal = (log_light[..., :, 1:] - log_light[..., :, :-1]).abs().mean()
    return vertical + horizontal
