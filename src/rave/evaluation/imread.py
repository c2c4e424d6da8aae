"""The one place where the evaluator decodes image files.

Kept to one function so that it can be swapped for :mod:`rave.io` once that API settles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "LoadedImage", "read_image"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
"""File suffixes (lower case) that the evaluator treats as images."""

# Formats that may hold 16 bits per channel, which Pillow cannot keep for colour images.
_HIGH_DEPTH_SUFFIXES = frozenset({".png", ".tif", ".tiff"})


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

    8-bit files are decoded by Pillow with the EXIF orientation applied. PNG/TIFF files are
    first tried with OpenCV (``IMREAD_UNCHANGED``), which keeps 16 bits per channel; OpenCV's
    BGR order is converted to RGB. (OpenCV ignores EXIF orientation in that mode, but 16-bit
    PNG/TIFF files from raw converters are written upright.)

    Raises:
        ImageReadError: the file is missing, not an image, or has an unsupported layout.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "no such file")
    if path.suffix.lower() in _HIGH_DEPTH_SUFFIXES:
        import cv2

        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.dtype == np.uint16:
            return _from_array(path, raw, bgr=True)
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grey that OpenCV could not read (e.g. an unusual TIFF).
                return _from_array(path, np.asarray(image).astype(np.uint16), bgr=False)
            channels = 1 if image.mode in ("L", "LA", "1", "I", "F") else 3
            rgb = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageReadError(path, f"cannot decode image ({error})") from error
    return LoadedImage(pixels=rgb.astype(np.float32) / 255.0, bit_depth=8, channels=channels)


def _from_array(path: Path, raw: np.ndarray, *, bgr: bool) -> LoadedImage:
    """``(H, W)``, ``(H, W, C)`` uint8/uint16 array -> :class:`LoadedImage`."""
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    if raw.ndim == 2:
        raw, channels = raw[..., None], 1
    elif raw.ndim == 3 and raw.shape[2] in (1, 2):
        raw, channels = raw[..., :1], 1
    elif raw.ndim == 3 and raw.shape[2] in (3, 4):
        raw, channels = raw[..., :3], 3
        if bgr:
            raw = raw[..., ::-1]
    else:
        raise ImageReadError(path, f"unsupported pixel layout {raw.shape} {raw.dtype}")
    pixels = raw.astype(np.float32) / scale
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels), bit_depth=8 * raw.dtype.itemsize, channels=channels
    )
