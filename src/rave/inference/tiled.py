"""Exact tiled inference (placeholder: whole-image for now; tiling lands next)."""

from __future__ import annotations

import torch
from torch import Tensor

from rave.network.enhancer import EnhancementNet, apply_light_map

__all__ = ["enhance_tensor", "predict_light_map"]


@torch.inference_mode()
def predict_light_map(
    net: EnhancementNet, image: Tensor, *, tile: int | str | None = "auto"
) -> Tensor:
    """Light map of ``image`` ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` float32.

    ``tile``: ``"auto"`` picks a tile size that bounds memory, an int forces a tile size,
    ``None`` runs the whole image at once. The output is the same (to 1e-5) in every case.
    The computation runs on the device of ``net``; the result is on ``image``'s device.
    """
    device = next(net.parameters()).device
    return net(image.to(device, torch.float32)).to(image.device)


def enhance_tensor(
    net: EnhancementNet, image: Tensor, *, tile: int | str | None = "auto"
) -> Tensor:
    """Enhanced image ``clamp(image / L, 0, 1)``: ``(B, 3, H, W)`` in [0, 1], float32."""
    image = image.float()
    return apply_light_map(image, predict_light_map(net, image, tile=tile))
