"""The float views of a photo that training, evaluation and ``rave residual`` work on.

There is one decoder, :func:`rave.io.read_photo` (upright, 8 or 16 bits, palette and CMYK
converted, damaged files refused); these helpers only change how its pixels are held:
three colour channels (grey replicated, alpha dropped), and float32 in [0, 1] with 8-bit
samples divided by 255 and 16-bit ones by 65535, so a 16-bit photo keeps its 16 bits in
every path (a float TIFF's samples, which the reader has checked are in [0, 1], as they are).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from rave.io.read import DEFAULT_MAX_PIXELS, read_photo

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["float_rgb", "read_float_rgb", "read_tensor", "rgb_samples", "unit_float"]


def rgb_samples(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` colour samples of a photo, in its own dtype (no copy for RGB).

    Args:
        pixels: ``(H, W)`` grey, ``(H, W, 1|2)`` grey (+ alpha) or ``(H, W, 3|4)`` RGB(A).

    Raises:
        ValueError: any other layout.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported pixel layout {pixels.shape}")
    if pixels.shape[2] in (1, 2):
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels[:, :, :3]


def _scale(dtype: np.dtype) -> float:
    if dtype == np.float32:  # a float TIFF, whose samples read_photo keeps in [0, 1]
        return 1.0
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    raise ValueError(f"expected uint8, uint16 or float32 samples, got {dtype}")


def float_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1] from uint8/uint16/float32 photo pixels (any layout)."""
    rgb = rgb_samples(pixels)
    return np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(_scale(rgb.dtype))


def read_float_rgb(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A photo file as ``(H, W, 3)`` float32 RGB in [0, 1].

    Raises:
        rave.io.PhotoError: one line naming the file, if it cannot be read.
    """
    return float_rgb(read_photo(path, max_pixels=max_pixels).pixels)


def read_tensor(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """A photo file as a ``(3, H, W)`` float32 tensor in [0, 1].

    Raises:
        rave.io.PhotoError: one line naming the file, if it cannot be read.
    """
    import torch

    return torch.from_numpy(read_float_rgb(path, max_pixels=max_pixels)).permute(2, 0, 1)


def unit_float(samples: Tensor) -> Tensor:
    """A ``uint8`` or ``uint16`` tensor as float32 in [0, 1] (divided by 255 or 65535)."""
    import torch

    scale = {torch.uint8: 255.0, torch.uint16: 65535.0}.get(samples.dtype)
    if scale is None:
        raise ValueError(f"expected uint8 or uint16 samples, got {samples.dtype}")
    return samples.to(torch.float32).div_(scale)
