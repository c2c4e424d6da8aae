"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2) through ``rawpy`` (LibRaw).

A backlit scene is where RAW matters: highlight detail that the camera's JPEG clipped is
still in the sensor data. LibRaw demosaics to 16 bits per channel with the camera's white
balance into sRGB primaries with the sRGB tone curve (what the network was trained on),
without LibRaw's automatic brightening (which would clip the highlights rave is meant to
keep), and turns the picture upright. The result is enhanced at 16 bits and written as a
16-bit TIFF unless another format is chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from rave.io.formats import missing_reader
from rave.io.pixel_limit import over_pixel_limit

__all__ = [
    "RAW_DECODE_SETTINGS",
    "RawReadError",
    "raw_exif",
    "read_raw_pixels",
    "srgb_icc_profile",
]

# IFD0 tags carried out of TIFF-based RAW files: description, make, model, orientation,
# software, date, artist, copyright.
_DESCRIPTIVE_TAGS = (270, 271, 272, 274, 305, 306, 315, 33432)

RAW_DECODE_SETTINGS = "LibRaw: camera white balance, sRGB primaries and tone curve, 16-bit"
"""What the decoder does, for notes and provenance."""


class RawReadError(Exception):
    """A RAW file LibRaw cannot decode; ``str()`` is the reason (no file name)."""


def read_raw_pixels(path: Path, max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """Decode a camera RAW file to upright ``(H, W, 3)`` ``uint16`` sRGB pixels.

    Args:
        path: the RAW file.
        max_pixels: refuse sensors with more pixels than this before demosaicing.

    Returns:
        The pixels (value / 65535 = sRGB-encoded intensity) and notes on the decoding.

    Raises:
        RawReadError: rawpy missing, not a RAW file LibRaw knows, corrupt, or too large.
    """
    hint = missing_reader(path.suffix)
    if hint is not None:
        raise RawReadError(f"camera RAW files need rawpy: {hint}")
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            height, width = raw.sizes.height, raw.sizes.width
            if height * width > max_pixels:
                raise RawReadError(over_pixel_limit((width, height), max_pixels))
            pixels = raw.postprocess(
                use_camera_wb=True,
                output_color=rawpy.ColorSpace.sRGB,
                output_bps=16,
                gamma=(2.4, 12.92),  # the sRGB curve (LibRaw's default is BT.709's)
                no_auto_bright=True,
            )
    except RawReadError:
        raise
    except (rawpy.LibRawError, OSError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise RawReadError(f"LibRaw cannot decode this RAW file ({reason})") from None
    return np.ascontiguousarray(pixels), [f"RAW decoded by {RAW_DECODE_SETTINGS}"]


def srgb_icc_profile() -> bytes | None:
    """An sRGB ICC profile to tag decoded RAW pixels with (None without littleCMS)."""
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    except Exception:  # Pillow built without littleCMS: the output is untagged sRGB
        return None


def raw_exif(path: Path) -> bytes | None:
    """EXIF from a TIFF-based RAW file (DNG, CR2, NEF, ARW, ORF...), or None.

    Pillow cannot open a CFA TIFF, so tifffile reads the IFD0 tags and the EXIF sub-IFD
    (exposure, lens, date); Pillow serialises them. Tags of types Pillow cannot write are
    left out. CR3 and RAF are not TIFF containers: None.
    """
    import tifffile
    from PIL import Image

    try:
        with tifffile.TiffFile(path) as tiff:
            tags = cast(tifffile.TiffPage, tiff.pages[0]).tags  # a frame only with useframes
            exif = Image.Exif()
            for code in _DESCRIPTIVE_TAGS:
                if code in tags and isinstance(tags[code].value, (str, int)):
                    exif[code] = tags[code].value
            sub_ifd = tags.get(34665)
            if sub_ifd is not None and isinstance(sub_ifd.value, dict):
                registry = tifffile.TIFF.TAGS
                values = {}
                for name, value in sub_ifd.value.items():
                    code = registry.get(name, None) if isinstance(name, str) else name
                    if isinstance(code, int) and isinstance(value, (str, int)):
                        values[code] = value
                if values:
                    exif[0x8769] = values
    except Exception:  # not a TIFF container, or tags tifffile cannot parse
        return None
    return exif.tobytes() if len(exif) else None
