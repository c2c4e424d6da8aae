"""How the evaluator reads image files: :mod:`rave.io`'s decoder, as float RGB."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rave.io.formats import IMAGE_SUFFIXES  # the package's one suffix set

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "LoadedImage", "read_image"]


class ImageReadError(Exception):
    """A file that cannot be decoded; ``str()`` is one line naming the file and the problem."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels, always three channels.

    Attributes:
        pixels: ``(H, W, 3)`` float32 RGB in [0, 1] (grey files are replicated to 3 channels,
            alpha is dropped).
        bit_depth: bits per channel in the file (8 or 16).
        channels: colour channels in the file before replication (1 for grey, 3 for colour).
    """

    pixels: np.ndarray
    bit_depth: int
    channels: int


def read_image(path: str | Path) -> LoadedImage:
    """Read an image file upright, at its native bit depth, as float RGB in [0, 1].

    Decoding is :func:`rave.io.read_photo`'s (EXIF orientation, 16-bit PNG/TIFF kept at 16
    bits, palette/CMYK converted, decompression bombs refused); this adds the evaluator's
    view of the pixels: float RGB, grey replicated to three channels, alpha dropped.

    Raises:
        ImageReadError: the file is missing, not an image, or has an unsupported layout.
    """
    from rave.io import PhotoError, read_photo

    path = Path(path)
    try:
        photo = read_photo(path)
    except PhotoError as error:
        raise ImageReadError(path, error.reason) from None
    return _from_array(path, photo.pixels)


def _from_array(path: Path, raw: np.ndarray) -> LoadedImage:
    """``(H, W)``, ``(H, W, C)`` uint8/uint16 array -> :class:`LoadedImage`."""
    from rave.io.views import float_rgb

    channels = 1 if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] in (1, 2)) else 3
    try:
        pixels = float_rgb(raw)
    except ValueError:
        raise ImageReadError(path, f"unsupported pixel layout {raw.shape} {raw.dtype}") from None
    return LoadedImage(pixels=pixels, bit_depth=8 * raw.dtype.itemsize, channels=channels)
