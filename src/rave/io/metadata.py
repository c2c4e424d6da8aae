"""Photo metadata: EXIF orientation, ICC colour spaces and PNG ancillary chunks.

EXIF blocks are handled as raw bytes (the TIFF structure, optionally behind Pillow's
``b"Exif\\x00\\x00"`` APP1 prefix) so that whatever the camera wrote, maker notes included,
reaches the output byte for byte; only the orientation value and the picture's size
(PixelXDimension / PixelYDimension) are patched.
"""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np

from rave.io.png_colour import png_colour_chunks, png_colour_in_profile

__all__ = [
    "EXIF_IFD_TAG",
    "EXIF_PREFIX",
    "ORIENTATION_TAG",
    "PIXEL_X_DIMENSION_TAG",
    "PIXEL_Y_DIMENSION_TAG",
    "apply_orientation",
    "drop_exif_thumbnail",
    "exif_orientation",
    "icc_colour_space",
    "insert_png_chunks",
    "png_chunk",
    "png_header_end",
    "png_metadata_chunks",
    "reset_exif_orientation",
    "reset_xmp_orientation",
    "set_exif_pixel_dimensions",
    "set_xmp_pixel_dimensions",
    "strip_exif_prefix",
]

EXIF_PREFIX = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112
EXIF_IFD_TAG = 0x8769  # IFD0's pointer to the Exif sub-IFD
PIXEL_X_DIMENSION_TAG = 0xA002  # in the Exif sub-IFD: the picture's width...
PIXEL_Y_DIMENSION_TAG = 0xA003  # ... and height
_SHORT, _LONG, _IFD = 3, 4, 13  # TIFF field types


def strip_exif_prefix(exif: bytes) -> bytes:
    """The TIFF structure of an EXIF block, without the JPEG APP1 ``Exif\\0\\0`` prefix."""
    return exif[len(EXIF_PREFIX) :] if exif.startswith(EXIF_PREFIX) else exif


def _first_directory(tiff: bytes) -> tuple[str, int, int] | None:
    """Byte order (``"<"`` or ``">"``), offset and entry count of IFD0, or None if garbled."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    return order, ifd, count


def _find_entry(tiff: bytes, order: str, ifd: int, tag: int) -> tuple[int, int, int] | None:
    """Offset, field type and count of ``tag``'s 12-byte entry in the directory at ``ifd``,
    or None if absent or the directory runs past the block."""
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            return None
        found, field_type, n = struct.unpack_from(order + "HHI", tiff, entry)
        if found == tag:
            return entry, field_type, n
    return None


def _patchable(exif: bytes) -> tuple[bytes, bytearray]:
    """An EXIF block's ``Exif\\0\\0`` prefix (``b""`` without one) and a mutable copy of its
    TIFF structure: values are patched in place and the two joined again, so that every
    other byte (offsets, maker notes, unknown tags) stays."""
    prefix = exif[: len(EXIF_PREFIX)] if exif.startswith(EXIF_PREFIX) else b""
    return prefix, bytearray(strip_exif_prefix(exif))


def _orientation_entry(tiff: bytes) -> tuple[str, int] | None:
    """Byte order and offset of the orientation value in IFD0, or None if absent/garbled."""
    directory = _first_directory(tiff)
    if directory is None:
        return None
    order, ifd, _ = directory
    found = _find_entry(tiff, order, ifd, ORIENTATION_TAG)
    if found is None:
        return None
    entry, field_type, n = found
    return (order, entry + 8) if field_type == _SHORT and n == 1 else None


def set_exif_pixel_dimensions(exif: bytes, width: int, height: int) -> bytes:
    """A copy of ``exif`` whose PixelXDimension / PixelYDimension say ``width`` x ``height``.

    Those two tags of the Exif sub-IFD give the size of the picture the block goes with;
    cameras write the sensor's stored size, which is wrong once the pixels are turned
    upright (6000 x 4000 stored with orientation 6 is a 4000 x 6000 result) or are not the
    size the camera wrote. Photo managers and ExifTool show them as the photo's size. Like
    the orientation, the values are patched in place (SHORT or LONG, as stored), so every
    other byte stays; a value a SHORT cannot hold (over 65535) is left, and blocks that
    are not a readable TIFF structure, or lack the tags, are returned unchanged.
    """
    prefix, tiff = _patchable(exif)
    directory = _first_directory(bytes(tiff))
    if directory is None:
        return exif
    order, ifd, _ = directory
    pointer = _find_entry(bytes(tiff), order, ifd, EXIF_IFD_TAG)
    if pointer is None or pointer[1] not in (_LONG, _IFD) or pointer[2] != 1:
        return exif
    (sub_ifd,) = struct.unpack_from(order + "I", tiff, pointer[0] + 8)
    for tag, value in ((PIXEL_X_DIMENSION_TAG, width), (PIXEL_Y_DIMENSION_TAG, height)):
        found = _find_entry(bytes(tiff), order, sub_ifd, tag)
        if found is None or found[2] != 1:
            continue
        entry, field_type, _ = found
        if field_type == _LONG:
            struct.pack_into(order + "I", tiff, entry + 8, value)
        elif field_type == _SHORT and value <= 0xFFFF:
            struct.pack_into(order + "H", tiff, entry + 8, value)
    return prefix + bytes(tiff)


def drop_exif_thumbnail(exif: bytes) -> bytes:
    """A copy of ``exif`` without its thumbnail (IFD1), for a photo whose pixels changed.

    The thumbnail is the camera's small copy of the original: beside an enhanced photo it
    shows the dark original (turned, once the orientation says 1), and file browsers,
    cameras and photo importers that show embedded thumbnails would show it. IFD0's link
    to IFD1 is set to 0 in place, so every other offset stays valid; the unreachable bytes
    remain. Blocks that are not a readable TIFF structure are returned unchanged.
    """
    prefix, tiff = _patchable(exif)
    directory = _first_directory(bytes(tiff))
    if directory is None:
        return exif
    order, ifd, count = directory
    link = ifd + 2 + 12 * count
    if link + 4 > len(tiff):
        return exif
    struct.pack_into(order + "I", tiff, link, 0)
    return prefix + bytes(tiff)


def exif_orientation(exif: bytes | None) -> int:
    """The EXIF orientation (1-8) stored in an EXIF block; 1 when absent or invalid."""
    if not exif:
        return 1
    tiff = strip_exif_prefix(exif)
    found = _orientation_entry(tiff)
    if found is None:
        return 1
    order, offset = found
    (value,) = struct.unpack_from(order + "H", tiff, offset)
    return value if 1 <= value <= 8 else 1


def reset_exif_orientation(exif: bytes) -> bytes:
    """A copy of ``exif`` whose orientation tag says 1 (pixels already upright).

    The value is patched in place rather than re-serialising the block (as
    ``PIL.Image.Exif.tobytes`` would), so offsets, maker notes and unknown tags survive.
    """
    prefix, tiff = _patchable(exif)
    found = _orientation_entry(bytes(tiff))
    if found is None:
        return exif
    order, offset = found
    struct.pack_into(order + "H", tiff, offset, 1)
    return prefix + bytes(tiff)


_XMP_ORIENTATION = re.compile(rb"(tiff:Orientation(?:=[\"']|>)\s*)[0-9]")


def reset_xmp_orientation(xmp: bytes) -> bytes:
    """A copy of an XMP packet whose ``tiff:Orientation`` says 1 (pixels already upright).

    Pillow (``Image.getexif``), ExifTool and photo managers read the orientation from XMP
    where the EXIF has none, e.g. in a 16-bit TIFF whose writer keeps only a few EXIF
    tags: a stale value would turn the upright result again. One digit is replaced by
    one, so the packet keeps its length and padding.
    """
    return _XMP_ORIENTATION.sub(rb"\g<1>1", xmp)


_XMP_SIZE = re.compile(
    rb"(((?:exif:PixelX|exif:PixelY)Dimension|tiff:Image(?:Width|Length))(?:=[\"']|>)\s*)[0-9]+"
)
_XMP_WIDTHS = (b"exif:PixelXDimension", b"tiff:ImageWidth")


def set_xmp_pixel_dimensions(xmp: bytes, width: int, height: int) -> bytes:
    """A copy of an XMP packet whose picture size says ``width`` x ``height``.

    XMP repeats the EXIF size (``exif:PixelXDimension`` / ``exif:PixelYDimension``, and
    ``tiff:ImageWidth`` / ``tiff:ImageLength`` where a raw converter wrote them); photo
    managers that read XMP first would show the camera's stored size, sideways once the
    pixels are turned upright. Only the numbers change (the packet may grow or shrink by a
    digit, which every container takes); a packet without them is returned unchanged.
    """

    def size(found: re.Match[bytes]) -> bytes:
        return found[1] + str(width if found[2] in _XMP_WIDTHS else height).encode()

    return _XMP_SIZE.sub(size, xmp)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn ``pixels`` (H, W[, C]) upright according to an EXIF orientation value (1-8).

    Returns a C-contiguous array (a copy unless ``orientation`` is 1), since torch cannot
    wrap the negative strides numpy's flips produce.
    """
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # 90 degrees clockwise
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],  # 90 degrees counter-clockwise
    }
    if orientation not in transforms:
        raise ValueError(f"EXIF orientation must be 1-8, got {orientation}")
    return np.ascontiguousarray(transforms[orientation](pixels))


def icc_colour_space(icc_profile: bytes | None) -> str | None:
    """The data colour space of an ICC profile (``"RGB"``, ``"GRAY"``, ``"CMYK"``...).

    None when there is no profile, or the bytes are not one: every ICC header holds the
    signature ``acsp`` at byte 36.
    """
    if not icc_profile or len(icc_profile) < 40 or icc_profile[36:40] != b"acsp":
        return None
    return icc_profile[16:20].decode("latin-1").strip()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def insert_png_chunks(
    png: bytes, *, icc_profile: bytes | None = None, exif: bytes | None = None
) -> bytes:
    """Add an ``iCCP`` (colour profile) and an ``eXIf`` chunk to an encoded PNG.

    OpenCV is the writer for 16-bit PNGs (Pillow keeps 16-bit colour only as 8 bits) and it
    has no way to embed either, so the two chunks are inserted right after ``IHDR``, where
    the PNG specification allows both (before ``PLTE`` and ``IDAT``).
    """
    end_of_ihdr = png_header_end(png)
    extra = png_metadata_chunks(icc_profile=icc_profile, exif=exif)
    return bytes(png[:end_of_ihdr]) + extra + bytes(png[end_of_ihdr:])


def png_header_end(png: bytes | memoryview) -> int:
    """Offset just past the ``IHDR`` chunk of an encoded PNG (where metadata may go)."""
    signature = b"\x89PNG\r\n\x1a\n"
    if bytes(png[:8]) != signature or bytes(png[12:16]) != b"IHDR":
        raise ValueError("not a PNG stream")
    (ihdr_length,) = struct.unpack_from(">I", png, 8)
    return 8 + 12 + ihdr_length


def png_metadata_chunks(
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    dpi: tuple[float, float] | None = None,
) -> bytes:
    """``iCCP``, ``eXIf``, XMP ``iTXt`` and ``pHYs`` chunks (each optional), after ``IHDR``.

    A profile that :func:`rave.io.png_colour.png_colour_profile` built from a PNG's
    ``sRGB`` / ``gAMA`` / ``cHRM`` chunks is written as those chunks, not as ``iCCP``.
    """
    extra = b""
    if dpi:
        # pHYs: pixels per metre, unit 1 (metre)
        per_metre = [round(value / 0.0254) for value in dpi]
        extra += png_chunk(b"pHYs", struct.pack(">IIB", per_metre[0], per_metre[1], 1))
    if xmp:
        # iTXt: keyword, NUL, compression flag 0, method 0, no language, no translated key
        extra += png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
    colour = png_colour_in_profile(icc_profile)
    if colour is not None:
        # A profile built from the source PNG's own colour chunks: those chunks again.
        extra += b"".join(png_chunk(kind, data) for kind, data in png_colour_chunks(colour))
    elif icc_profile:
        # iCCP: profile name, NUL, compression method 0 (zlib), compressed profile.
        extra += png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        extra += png_chunk(b"eXIf", strip_exif_prefix(exif))
    return extra
