"""The interface every guiding image encoder implements.

An encoder is frozen (eval mode, ``requires_grad=False`` on its weights) but differentiable
with respect to its input images, so losses on its outputs train the enhancement network.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

__all__ = ["ImageEncoder", "ResizeMode"]

# "squash": plain resize of the whole image to the encoder's input size (the loss path);
# "center_crop": the encoder's standard resize of the short side + centre crop (residual path).
ResizeMode = Literal["squash", "center_crop"]


class ImageEncoder(nn.Module):
    """Base class of guiding encoders.

    Attributes:
        name: the encoder's registry name, e.g. ``"clip:ViT-B-32@openai"`` or ``"effnet-lite0"``.
        embed_dim: size ``D`` of the guidance embedding.
    """

    name: str
    embed_dim: int

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        """L2-normalised embeddings of ``images``.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1].
            resize: how images reach the encoder's input size (see :data:`ResizeMode`).

        Returns:
            ``(B, D)`` float32, unit L2 norm per row.
        """
        raise NotImplementedError

    def features(self, images: Tensor) -> list[Tensor]:
        """Intermediate feature maps for the identity loss, shallow to deep.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1]; squashed to the encoder's input size.

        Returns:
            a list of ``(B, C_l, H_l, W_l)`` tensors (5 for the paper's RN101 layout).
        """
        raise NotImplementedError
