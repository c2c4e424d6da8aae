"""How the evaluator reads image files: :func:`rave.io.read_photo`, seen as float RGB.

There is one decoder and one read error in rave (:mod:`rave.io.read`); this module only adds
what scoring needs to know about a decoded photo: its pixels as float RGB in [0, 1], the
bit depth of its samples (the reference protocol is defined on 8-bit files), whether it was
grey (compared with a colour file, it is replicated) and whether an alpha channel was
dropped (scores are of the colour channels only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rave.io.formats import IMAGE_SUFFIXES  # the package's one suffix set
from rave.io.read import PhotoError

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "LoadedImage", "read_image"]

# The package's read error under the name the evaluator has always exported: a file that
# cannot be decoded, ``str()`` one escaped line naming the file and the problem.
ImageReadError = PhotoError


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels, always three channels.

    Attributes:
        pixels: ``(H, W, 3)`` float32 RGB in [0, 1] (grey files are replicated to 3 channels,
            alpha is dropped).
        bit_depth: bits per sample in the file: 8, 16, or 32 for a float TIFF.
        channels: colour channels in the file before replication (1 for grey, 3 for colour).
        alpha: the file had an alpha channel (dropped from ``pixels``).
    """

    pixels: np.ndarray
    bit_depth: int
    channels: int
    alpha: bool = False


def read_image(path: str | Path) -> LoadedImage:
    """Read an image file upright, at its native bit depth, as float RGB in [0, 1].

    Decoding is :func:`rave.io.read_photo`'s (EXIF orientation, 16-bit PNG/TIFF kept at 16
    bits, float TIFF kept as float, palette/CMYK converted, decompression bombs refused);
    this adds the evaluator's view of the pixels: float RGB, grey replicated to three
    channels, alpha dropped.

    Raises:
        ImageReadError: (:class:`rave.io.PhotoError`) the file is missing, not an image, or
            has an unsupported layout; one line naming the file.
    """
    from rave.io import read_photo

    path = Path(path)
    return _from_array(path, read_photo(path).pixels)


def _from_array(path: Path, raw: np.ndarray) -> LoadedImage:
    """``(H, W)``, ``(H, W, C)`` uint8/uint16/float32 array -> :class:`LoadedImage`."""
    from rave.io.views import float_rgb

    try:
        pixels = float_rgb(raw)
    except ValueError:
        raise ImageReadError(path, f"unsupported pixel layout {raw.shape} {raw.dtype}") from None
    layers = 1 if raw.ndim == 2 else raw.shape[2]
    return LoadedImage(
        pixels=pixels,
        bit_depth=8 * raw.dtype.itemsize,
        channels=1 if layers in (1, 2) else 3,
        alpha=layers in (2, 4),
    )
