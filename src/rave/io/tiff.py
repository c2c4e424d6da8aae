"""TIFF layouts Pillow's first-page view gets wrong: thumbnails first, float samples.

DNG and many scanner/RAW-converter TIFFs store a small preview as the first page and the
photo in a SubIFD or a later page; Pillow opens the first page only. HDR workflows write
32-bit float TIFFs, which Pillow cannot open as colour at all. Both are read here with
tifffile (the library the field uses for TIFF); everything else keeps the ordinary path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["FloatRangeError", "read_tiff_special"]


class FloatRangeError(ValueError):
    """Float samples outside [0, 1] (scene-referred HDR), which the network cannot take."""


def _pages(tiff: object) -> list:
    """Every image of the file: top-level pages and their SubIFDs, in file order."""
    found = []
    for page in tiff.pages:  # type: ignore[attr-defined]
        found.append(page)
        found.extend(getattr(page, "pages", None) or [])
    return found


def _pixel_count(page: object) -> int:
    return int(page.imagewidth) * int(page.imagelength)  # type: ignore[attr-defined]


def read_tiff_special(
    path: Path, max_pixels: int, *, always: bool = False
) -> tuple[np.ndarray, list[str]] | None:
    """Pixels that Pillow's view of ``path`` would get wrong, else ``None``.

    With ``always``, the largest image is returned whatever its layout (for files Pillow
    cannot open at all).

    Returns:
        ``(pixels, notes)`` when the largest image is not the first page (``uint8`` or
        ``uint16``) or has float samples (``float32``, values checked to lie in [0, 1]);
        ``None`` for ordinary TIFFs, which the Pillow/OpenCV path reads.

    Raises:
        FloatRangeError: float samples outside [0, 1] or not finite.
        ValueError: the largest image is over ``max_pixels`` or of an unusable layout.
    """
    import tifffile

    try:
        tiff = tifffile.TiffFile(path)
    except Exception:  # not a TIFF tifffile understands: Pillow decides
        return None
    with tiff:
        pages = _pages(tiff)
        if not pages:
            return None
        largest = max(pages, key=_pixel_count)
        is_float = largest.dtype is not None and largest.dtype.kind == "f"
        if largest is pages[0] and not is_float and not always:
            return None
        if _pixel_count(largest) > max_pixels:
            raise ValueError(
                f"{largest.imagewidth}x{largest.imagelength} is over the "
                f"{max_pixels / 1e6:.1f} MP limit (raise the pixel limit if the file is trusted)"
            )
        pixels = largest.asarray()
    notes = []
    if largest is not pages[0]:
        first = pages[0]
        notes.append(
            f"the first page is a {first.imagewidth}x{first.imagelength} preview; the "
            f"{largest.imagewidth}x{largest.imagelength} image is enhanced"
        )
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (2, 3, 4)):
        raise ValueError(f"unsupported TIFF layout {pixels.shape} (expected grey or RGB(A))")
    if is_float:
        pixels = pixels.astype(np.float32, copy=False)
        if not np.isfinite(pixels).all():
            raise FloatRangeError("float TIFF holds NaN or infinite values")
        low, high = float(pixels.min()), float(pixels.max())
        if low < 0 or high > 1:
            raise FloatRangeError(
                f"float TIFF values span [{low:.3g}, {high:.3g}]; rave enhances display-"
                "referred values in [0, 1] (tone-map scene-referred HDR first)"
            )
    elif pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"unsupported TIFF sample type {pixels.dtype}")
    return np.ascontiguousarray(pixels), notes
