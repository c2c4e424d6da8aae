"""TIFF layouts Pillow's first-page view gets wrong: thumbnails first, float samples.

DNG and many scanner/RAW-converter TIFFs store a small preview as the first page and the
photo in a SubIFD or a later page; Pillow opens the first page only. HDR workflows write
32-bit float TIFFs, which Pillow cannot open as colour at all. Both are read here with
tifffile (the library the field uses for TIFF); everything else keeps the ordinary path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rave.io.pixel_limit import over_pixel_limit

__all__ = [
    "FloatRangeError",
    "colour_and_alpha",
    "extra_channels_note",
    "read_tiff_special",
    "to_min_is_black",
]

_MIN_IS_WHITE, _MIN_IS_BLACK, _RGB = 0, 1, 2  # PhotometricInterpretation
_ALPHA_SAMPLES = (1, 2)  # ExtraSamples: associated, unassociated alpha


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


def to_min_is_black(pixels: np.ndarray, photometric: int) -> np.ndarray:
    """Grey samples stored MINISWHITE (0 is white) turned into the usual MINISBLACK ones.

    Neither tifffile nor Pillow (above 8 bits) inverts them: a scan read as stored comes out
    a negative. The grey channel is inverted in place (``pixels`` must be writeable); alpha
    is left as it is.
    """
    if photometric != _MIN_IS_WHITE:
        return pixels
    grey = pixels if pixels.ndim == 2 else pixels[:, :, 0]
    if pixels.dtype.kind == "f":
        np.subtract(1, grey, out=grey)
    else:
        np.invert(grey, out=grey)  # max - v for unsigned integers
    return pixels


def colour_and_alpha(
    pixels: np.ndarray, photometric: int, extrasamples: tuple[int, ...]
) -> tuple[np.ndarray, str | None]:
    """The colour samples of a decoded TIFF page and its alpha, other extra samples dropped.

    Args:
        pixels: ``(H, W)`` or ``(H, W, S)`` as tifffile decodes a contiguous page.
        photometric: the page's PhotometricInterpretation (grey and RGB are told apart).
        extrasamples: the page's ExtraSamples values (alpha or unspecified data).

    Returns:
        ``(pixels, note)``: ``pixels`` unchanged for grey, grey + alpha, RGB and RGBA (the
        one extra sample is taken as alpha, as before); for more samples, colour plus the
        first extra sample if it is declared alpha, and a note saying what was dropped.
    """
    colour = {_MIN_IS_WHITE: 1, _MIN_IS_BLACK: 1, _RGB: 3}.get(int(photometric))
    if pixels.ndim != 3 or colour is None or pixels.shape[2] <= colour + 1:
        return pixels, None
    keep = colour + (1 if extrasamples[:1] and int(extrasamples[0]) in _ALPHA_SAMPLES else 0)
    kept = ("L", "LA", "RGB", "RGBA")[(colour == 3) * 2 + (keep > colour)]
    note = extra_channels_note(pixels.shape[2] - keep, kept)
    return (pixels[:, :, 0] if keep == 1 else pixels[:, :, :keep]), note


def extra_channels_note(dropped: int, mode: str) -> str:
    """The note for a TIFF whose samples beyond ``mode``'s (a Pillow mode) were dropped."""
    kept = {"L": "grey", "LA": "grey and alpha", "RGBA": "RGB and alpha"}.get(mode, mode)
    return f"{dropped} extra channel{'s' if dropped > 1 else ''} dropped (kept: {kept})"


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
            size = (int(largest.imagewidth), int(largest.imagelength))
            raise ValueError(over_pixel_limit(size, max_pixels))
        pixels = largest.asarray()
        photometric, extrasamples = largest.photometric, tuple(largest.extrasamples)
    notes = []
    if largest is not pages[0]:
        first = pages[0]
        notes.append(
            f"the first page is a {first.imagewidth}x{first.imagelength} preview; the "
            f"{largest.imagewidth}x{largest.imagelength} image is enhanced"
        )
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    pixels, dropped = colour_and_alpha(pixels, photometric, extrasamples)
    notes += [dropped] if dropped else []
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
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    return to_min_is_black(pixels, photometric), notes
