"""The one message for a photo over the decompression-bomb pixel limit.

Every reader (Pillow formats, tifffile, LibRaw) refuses such a photo from its header, with
this message: the size in the unit a person reads (megapixels, or pixels for the small
limits tests and servers set) and how to raise the limit for a trusted file.
"""

from __future__ import annotations

__all__ = ["over_pixel_limit"]


def _count(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 1_000_000 else f"{pixels:,} pixels"


def over_pixel_limit(size: tuple[int, int] | int | None, max_pixels: int) -> str:
    """Why a photo of ``size`` (``(width, height)``, a pixel count or unknown) is refused.

    Examples:
        >>> over_pixel_limit((64, 48), 100)
        '64x48 is 3,072 pixels, over the limit of 100 pixels (refused as a possible decompression bomb; if the file is trusted, raise the limit: --max-pixels on the command line, max_pixels= of rave.io.read_photo or Enhancer.enhance_file in Python)'
        >>> over_pixel_limit(1_040_000, 1_000_000).split(" (")[0]
        'the image is 1,040,000 pixels, over the limit of 1,000,000 pixels'
    """  # noqa: E501 (a doctest's output is one line)
    limit = _count(max_pixels)
    if size is None:
        found = "the image is over"
    else:
        width, height = size if isinstance(size, tuple) else (size, 1)
        pixels = width * height
        count = _count(pixels)
        if count == limit:  # 1.04 MP over a 1.0 MP limit: rounding hides the difference
            count, limit = f"{pixels:,} pixels", f"{max_pixels:,} pixels"
        name = f"{width}x{height}" if isinstance(size, tuple) else "the image"
        found = f"{name} is {count}, over"
    return (
        f"{found} the limit of {limit} (refused as a possible decompression bomb; if the file "
        "is trusted, raise the limit: --max-pixels on the command line, max_pixels= of "
        "rave.io.read_photo or Enhancer.enhance_file in Python)"
    )
