"""RAVE's guidance and identity losses (docs/method.md, "RAVE"), as small pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

__all__ = ["IDENTITY_LAYER_WEIGHTS", "identity_loss", "residual_loss"]

IDENTITY_LAYER_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.5)


def residual_loss(
    embeddings: Tensor,
    residual: Tensor,
    threshold: float | Tensor,
    *,
    power: float = 2.0,
    scale: float = 0.0,
) -> Tensor:
    """``L_res = mean_i rho(cos(e_i, r) - thr)``: pulls each image's projection on ``r`` to ``thr``.

    ``rho(d) = |d|^p`` (the paper: ``p = 2``), or with ``scale = s > 0`` the smoothed
    ``rho(d) = (d^2 + s^2)^(p/2) - s^p``: like ``|d|^p`` for ``|d| >> s`` but quadratic,
    with a slope going to 0, within about ``s`` of ``thr``.

    Args:
        embeddings: ``(B, D)`` image embeddings (need not be unit length: cosine is used).
        residual: ``(D,)`` the residual vector ``r``.
        threshold: ``thr = v_w . r``, the projection of the well-lit mean on ``r``, in [-1, 1].
        power: ``p > 0``; 2 is the paper's. Not RAVE: 1 pulls every image equally hard
            whatever its distance, below 1 images near ``thr`` hardest, so that photos far
            below ``thr`` (night scenes, whose projection barely moves however much they are
            brightened) do not dominate the batch's gradient (docs/method.md, "Robust
            residual loss").
        scale: ``s >= 0``. Not RAVE: below ``p = 2`` the slope of ``|d|^p`` grows without
            bound as ``d -> 0``, so images that already project near ``thr`` (photos that
            are already well exposed) would be pushed hardest; ``s`` removes that push
            within about ``s`` of ``thr``. 0 is the plain power. For ``p = 2``, ``rho`` is
            ``d^2`` whatever ``s``.

    Returns:
        scalar tensor >= 0 (at most ``2**p``), averaged over the batch.
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    if scale < 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    if embeddings.ndim != 2 or residual.ndim != 1 or embeddings.shape[1] != residual.shape[0]:
        raise ValueError(
            f"expected embeddings (B, D) and residual (D,), got {tuple(embeddings.shape)} "
            f"and {tuple(residual.shape)}"
        )
    residual = residual.to(embeddings)
    cos = F.cosine_similarity(embeddings, residual.unsqueeze(0), dim=1)
    if power == 2.0:
        return ((cos - threshold) ** 2).mean()
    if scale > 0:
        squared = (cos - threshold) ** 2 + scale**2
        return (squared.pow(power / 2) - scale**power).mean()
    # below 1 the power's slope is infinite at 0: an image exactly at thr gets none instead
    return (cos - threshold).abs().clamp_min(1e-12).pow(power).mean()


def identity_loss(
    feats_out: Sequence[Tensor],
    feats_in: Sequence[Tensor],
    weights: Sequence[float] = IDENTITY_LAYER_WEIGHTS,
    scales: Sequence[float] | None = None,
) -> Tensor:
    """``L_id = sum_i sum_l w_l * MSE(phi_l(O_i), phi_l(I_i)) / s_l``.

    Note the batch is **summed**, where :func:`residual_loss` averages: that is what the
    reference code does, and the paper's loss weights (22.5, 1920) are tuned for it, so the
    balance between the two terms depends on the batch size.

    Args:
        feats_out: ``L`` feature maps of the enhanced images, each ``(B, C_l, H_l, W_l)``
            (any shape with the batch first).
        feats_in: the same layers for the input images (same shapes).
        weights: ``L`` layer weights ``w_l``; the paper's are ``(1, 1, 1, 1, 0.5)``.
        scales: optional ``L`` positive normalisers ``s_l`` (typical MSE of each layer), so
            that layers of very different magnitude weigh alike; None means all 1.

    Returns:
        scalar tensor >= 0.
    """
    if not len(feats_out) == len(feats_in) == len(weights):
        raise ValueError(
            f"got {len(feats_out)} output feature maps, {len(feats_in)} input feature maps "
            f"and {len(weights)} weights: they must match"
        )
    if scales is not None and len(scales) != len(weights):
        raise ValueError(f"got {len(scales)} scales for {len(weights)} layers")
    total = feats_out[0].new_zeros(())
    for layer, (out, ref, weight) in enumerate(zip(feats_out, feats_in, weights, strict=True)):
        if out.shape != ref.shape:
            raise ValueError(
                f"layer {layer}: output features {tuple(out.shape)} vs input {tuple(ref.shape)}"
            )
        per_image = (out.float() - ref.float()).pow(2).flatten(1).mean(dim=1)  # (B,)
        term = weight * per_image.sum()
        if scales is not None:
            term = term / scales[layer]
        total = total + term
    return total
