"""Terms on the light map ``L`` itself: smoothness (total variation of ``log L``) and a
soft ceiling on the gain ``1 / L``.

Not part of RAVE (the paper has neither term). Retinex-style methods keep the illumination
piecewise smooth (RetinexNet's smoothness loss, Zero-DCE's illumination smoothness); the
built-in ``default`` model's offline recipe can add it (``method_options.light_tv_weight``,
docs/method.md) because its EfficientNet-guided light maps follow texture two to three
times as much as the CLIP-trained ones (docs/model_card.md), which flattens local contrast
when ``I / L`` is taken. The gain ceiling is for the same recipe: its models lift the
darkest regions up to 3.7 times where the CLIP-trained ``rave-unpaired`` stops near 3, and
what a larger gain brings out of a dark region is mostly noise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# the edge-aware filter is the refinement's (a model's inference step); the smooth-light
# training stage uses the same one
from rave.network.refinement import box_mean, guided_filter

__all__ = ["box_mean", "guided_filter", "light_map_gain_excess", "light_map_total_variation"]


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


def light_map_gain_excess(light: Tensor, max_gain: float, *, eps: float = 1e-3) -> Tensor:
    """Mean squared excess of the log gain over ``log max_gain``.

    Per pixel ``relu(log(1 / L) - log(max_gain)) ** 2``, averaged over the batch and the
    pixels: zero wherever the output ``I / L`` is at most ``max_gain`` times the input, so
    the term leaves mid-tones and highlights alone and only bounds how far the darkest
    regions are lifted. In logs so that the cost depends on the ratio of the two gains.

    Args:
        light: ``(B, 1, H, W)`` light map, ``L >= 0``.
        max_gain: ``> 1``, the gain above which a pixel costs.
        eps: floor of ``L`` before the log.

    Returns:
        scalar tensor >= 0.
    """
    if light.ndim != 4 or light.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) light map, got {tuple(light.shape)}")
    if max_gain <= 1.0:
        raise ValueError(f"max_gain must be > 1, got {max_gain}")
    log_gain = -torch.log(light.clamp(min=eps))
    return torch.relu(log_gain - math.log(max_gain)).pow(2).mean()
