"""Highlight preservation: a penalty on outputs that saturate where the input does not.

Not part of RAVE (the paper has no such term): the built-in ``default`` model's guidance
(EfficientNet statistics) does not penalise blown highlights the way CLIP's space does, so
its offline recipe can add this term (``method_options.highlight_weight``, docs/method.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

# a pixel whose largest channel is at or above this counts as clipped, as in the metrics
from rave.evaluation.exposure import CLIP_THRESHOLD

__all__ = ["highlight_darkening_loss", "highlight_loss"]


def _largest_channels(enhanced: Tensor, inputs: Tensor, knee: float) -> tuple[Tensor, Tensor]:
    """``(m_in, m_out)``: each pixel's largest channel, ``(B, H, W)``, after checking shapes."""
    if enhanced.shape != inputs.shape or enhanced.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors, got {enhanced.shape}, {inputs.shape}")
    if not 0.0 < knee < 1.0:
        raise ValueError(f"knee must be in (0, 1), got {knee}")
    return inputs.detach().amax(dim=1), enhanced.amax(dim=1)


def highlight_loss(
    enhanced: Tensor,
    inputs: Tensor,
    *,
    knee: float = 0.9,
    saturated: float = CLIP_THRESHOLD,
    light: Tensor | None = None,
    max_gain: float = 3.0,
) -> Tensor:
    """Mean squared overshoot of the output's brightest channel above ``max(input, knee)``.

    Per pixel, with ``m_out`` and ``m_in`` the largest channel of output and input::

        (m_in < saturated) * relu(m_out - max(m_in, knee)) ** 2

    averaged over all pixels. It is zero for an output that keeps every pixel below
    ``knee`` or no brighter than its input (so it never pushes dark regions down), and it
    grows as a pixel that was not saturated in the input approaches white. Pixels already
    saturated in the input are free (they cannot be kept).

    Outputs of :func:`rave.network.apply_light_map` are clamped at 1 and the clamp passes
    no gradient, so on ``enhanced`` alone the term acts only while pixels move through
    ``[knee, 1)``: a pixel pushed past white costs the most and gets no gradient back. With
    ``light`` the overshoot is measured before the clamp, ``m_out = min(m_in / L,
    max_gain)`` (the light map is one channel, so ``I / L``'s brightest channel is
    ``m_in / L``), and a blown pixel keeps pulling its light map up.

    Args:
        enhanced: ``(B, 3, H, W)`` output in [0, 1].
        inputs: ``(B, 3, H, W)`` input in [0, 1], same shape (no gradient needed).
        knee: level in (0, 1) above which brightening a pixel costs.
        saturated: input level at or above which a pixel counts as already clipped.
        light: optional ``(B, 1, H, W)`` light map ``L > 0`` that gave ``enhanced``.
        max_gain: with ``light``, the unclamped output is capped here (the gradient of
            ``m_in / L`` grows as ``1 / L**2``; beyond this cap a pixel is as blown as can be).

    Returns:
        scalar tensor, >= 0, at most ``(1 - knee) ** 2`` (``(max_gain - knee) ** 2`` with
        ``light``).
    """
    m_in, m_out = _largest_channels(enhanced, inputs, knee)
    if light is not None:
        if light.shape != (enhanced.shape[0], 1, *enhanced.shape[2:]):
            raise ValueError(f"expected a (B, 1, H, W) light map, got {tuple(light.shape)}")
        if max_gain <= 1.0:
            raise ValueError(f"max_gain must be > 1, got {max_gain}")
        m_out = (m_in / light[:, 0].clamp(min=1e-6)).clamp(max=max_gain)
    ceiling = m_in.clamp(min=knee)
    overshoot = torch.relu(m_out - ceiling) * (m_in < saturated)
    return overshoot.square().mean()


def highlight_darkening_loss(
    enhanced: Tensor, inputs: Tensor, *, knee: float = 0.9, saturated: float | None = None
) -> Tensor:
    """Mean squared drop of the output's brightest channel below the input's, where the
    input is bright.

    Per pixel, with ``m_out`` and ``m_in`` the largest channel of output and input::

        (m_in >= knee) * relu(m_in - m_out) ** 2

    averaged over all pixels: the counterpart of :func:`highlight_loss`. With both, a
    highlight stays where it was, neither blown nor darkened (a network guided only to look
    well-lit learns ``L > 1`` on skies and clouds, which darkens them; saturated input
    pixels count here, so white clouds stay white). Dark and mid-tone pixels are free.

    With ``saturated``, input pixels at or above it are free instead: clipped areas may be
    darkened back into range (as the authors' CLIP-guided models do), while unclipped
    highlights are still held.

    Args:
        enhanced: ``(B, 3, H, W)`` output in [0, 1].
        inputs: ``(B, 3, H, W)`` input in [0, 1], same shape (no gradient needed).
        knee: input level in (0, 1) from which darkening a pixel costs.
        saturated: optional input level in ``(knee, 1]`` from which darkening is free again.

    Returns:
        scalar tensor, >= 0, at most ``1``.
    """
    m_in, m_out = _largest_channels(enhanced, inputs, knee)
    held = m_in >= knee
    if saturated is not None:
        if not knee < saturated <= 1.0:
            raise ValueError(f"saturated must be in (knee, 1], got {saturated}")
        held = held & (m_in < saturated)
    drop = torch.relu(m_in - m_out) * held
    return drop.square().mean()
