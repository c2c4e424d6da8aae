"""Writing photos atomically, at their bit depth, with their ICC profile and EXIF.

Every file goes through :func:`rave.io.atomic.atomic_write`: a hidden temporary file in
the target folder whose every write is checked, re-opened and checked as a photo of the
expected size and complete (JPEG end marker, PNG ``IEND``...), then renamed over the
target. A full disk or an interrupted run never leaves a half-written photo under the
final name, and never replaces an existing one.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
from PIL import Image

from rave.io.atomic import atomic_write, scratch_file
from rave.io.library_messages import captured_messages
from rave.io.metadata import (
    EXIF_PREFIX,
    icc_colour_space,
    png_chunk,
    png_header_end,
    png_metadata_chunks,
    set_exif_pixel_dimensions,
    set_xmp_pixel_dimensions,
    strip_exif_prefix,
)
from rave.io.png_colour import png_colour_chunks, png_colour_in_profile
from rave.io.printable import printable

__all__ = [
    "FORMATS",
    "SIXTEEN_BIT_FORMATS",
    "atomic_write",
    "format_for_suffix",
    "write_photo",
]

logger = logging.getLogger(__name__)

# Output format -> (Pillow format name, canonical file suffix).
FORMATS: dict[str, tuple[str, str]] = {
    "jpg": ("JPEG", ".jpg"),
    "png": ("PNG", ".png"),
    "tif": ("TIFF", ".tif"),
    "webp": ("WEBP", ".webp"),
    "bmp": ("BMP", ".bmp"),
    "heic": ("HEIF", ".heic"),  # through pillow-heif (rave.io.heif)
}
SIXTEEN_BIT_FORMATS = frozenset({"png", "tif"})
_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".jpe": "jpg", ".png": "png", ".tif": "tif",
             ".tiff": "tif", ".webp": "webp", ".bmp": "bmp", ".heic": "heic",
             ".heif": "heic", ".hif": "heic"}  # fmt: skip
_ALPHA_FORMATS = frozenset({"png", "tif", "webp", "bmp", "heic"})
_XMP_FORMATS = frozenset({"jpg", "png", "tif", "webp", "heic"})
_DPI_FORMATS = frozenset({"jpg", "png", "tif"})


def format_for_suffix(suffix: str) -> str | None:
    """The output format a file suffix stands for (``".JPEG"`` -> ``"jpg"``), or None."""
    return _SUFFIXES.get(suffix.lower())


def _to_8_bit(pixels: np.ndarray) -> np.ndarray:
    # round(v * 255 / 65535) = round(v / 257): the nearest 8-bit value.
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _write_pillow(
    stream: BinaryIO,
    pixels: np.ndarray,
    fmt: str,
    icc_profile: bytes | None,
    exif: bytes | Image.Exif | None,
    quality: int,
    xmp: bytes | None = None,
    dpi: tuple[float, float] | None = None,
    lossless: bool = False,
    notes: list[str] | None = None,
) -> None:
    image = Image.fromarray(pixels)  # L, I;16, LA, RGB or RGBA from the shape
    if fmt in ("webp", "heic") and image.mode == "LA":
        image = image.convert("RGBA")  # WebP and HEIF have no grey + alpha mode
    options: dict[str, object] = {}
    # A profile built from a PNG's sRGB / gAMA / cHRM chunks goes back to PNG as them.
    png_colour = png_colour_in_profile(icc_profile) if fmt == "png" else None
    if icc_profile and fmt != "bmp" and png_colour is None:
        options["icc_profile"] = icc_profile
    if isinstance(exif, Image.Exif):
        options["exif"] = exif  # parsed beforehand: TIFF (see _parsed_exif)
    elif exif and fmt != "bmp":
        options["exif"] = exif if exif.startswith(EXIF_PREFIX) else EXIF_PREFIX + exif
    options.update(_xmp_and_dpi_options(fmt, options.get("exif"), xmp, dpi))
    if png_colour is not None:
        from PIL import PngImagePlugin

        info = options.setdefault("pnginfo", PngImagePlugin.PngInfo())
        for kind, data in png_colour_chunks(png_colour):
            cast(PngImagePlugin.PngInfo, info).add(kind, data)  # before PLTE and IDAT
    if fmt == "jpg":
        # Full-resolution chroma at high quality (as photo editors do), 4:2:0 below. No
        # optimize=True: libjpeg would hold every DCT coefficient of the photo in memory.
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp" and lossless:
        # No quality: in lossless mode it means compression effort (Pillow's default is
        # kept). exact: libwebp would otherwise change the colour of transparent pixels.
        options.update(lossless=True, exact=True, method=4)
    elif fmt == "webp":
        options.update(quality=quality, method=4)
    elif fmt == "heic":
        from rave.io.heif import register_heif

        if not register_heif():
            raise ValueError("writing HEIC needs pillow-heif: pip install pillow-heif")
        options.update(quality=quality)
    elif fmt == "tif":
        # Uncompressed: Pillow's libtiff-based compressed writer cannot store the EXIF
        # sub-IFD (camera settings), its own uncompressed writer can.
        options.update(compression=None)
    try:
        image.save(stream, format=FORMATS[fmt][0], **options)
    except ValueError as err:
        # JPEG's APP1 segment holds at most 64 KB of EXIF; keep the photo, lose the EXIF.
        if "exif" not in options or "EXIF" not in str(err).upper():
            raise
        # A note for the photo (not a bare log line on the terminal, even with -q).
        size = len(exif) if isinstance(exif, bytes) else None
        of = f" ({size // 1024} KB)" if size else ""
        message = f"EXIF{of} not written: too large for {FORMATS[fmt][0]} ({err})"
        if notes is None:
            logger.warning("%s", message)
        elif message not in notes:
            notes.append(message)
        stream.seek(0)
        stream.truncate()
        del options["exif"]
        image.save(stream, format=FORMATS[fmt][0], **options)


def _xmp_and_dpi_options(
    fmt: str, exif: object, xmp: bytes | None, dpi: tuple[float, float] | None
) -> dict[str, object]:
    """Pillow save options that carry the XMP packet and the resolution into ``fmt``."""
    options: dict[str, object] = {}
    if dpi and fmt in _DPI_FORMATS:
        options["dpi"] = dpi
    if not xmp or fmt not in _XMP_FORMATS:
        return options
    if fmt == "png":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
        options["pnginfo"] = info
    elif fmt == "tif":
        # Pillow's TIFF writer takes extra IFD0 tags only through the EXIF mapping (a
        # separate tiffinfo would replace the EXIF): XMP is tag 700 there.
        tags = exif if isinstance(exif, Image.Exif) else Image.Exif()
        tags[700] = xmp
        options["exif"] = tags
    else:
        options["xmp"] = xmp
    return options


def _write_png_16(
    stream: BinaryIO,
    pixels: np.ndarray,
    icc_profile: bytes | None,
    exif: bytes | None,
    xmp: bytes | None = None,
    dpi: tuple[float, float] | None = None,
) -> None:
    import cv2

    to_bgr = None
    if pixels.ndim == 3:
        # OpenCV encodes BGR. Swapping the channels in place (and back afterwards) spares a
        # copy of the photo: 144 MB for 24 MP, which the 1 GB memory budget has not got.
        in_place = pixels.flags.writeable and pixels.flags.c_contiguous
        to_bgr = cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
        bgr = cv2.cvtColor(pixels, to_bgr, dst=pixels if in_place else None)
    else:
        in_place, bgr = False, pixels
    # libpng streams into a file of its own, then the metadata chunks are spliced in while
    # copying: cv2.imencode's growing buffer would cost up to twice the encoded size. That
    # file lies beside the output (named like every rave temporary), not in $TMPDIR.
    with scratch_file(Path(getattr(stream, "name", ".")).parent, ".png") as encoded:
        try:
            # libpng and OpenCV print their complaints to stderr: keep them for our message.
            with captured_messages() as messages:
                ok = cv2.imwrite(str(encoded), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        finally:
            if in_place and to_bgr is not None:
                cv2.cvtColor(pixels, to_bgr, dst=pixels)  # the same swap restores RGB
        if not ok or not _png_complete(encoded):
            # OpenCV says only "false": a full disk is the usual cause, so say so then.
            if _disk_full(encoded.parent):
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (16-bit PNG)")
            detail = f" ({printable('; '.join(messages))})" if messages else ""
            raise OSError(f"OpenCV could not encode the 16-bit PNG{detail}")
        for message in messages:
            logger.info("16-bit PNG encoder: %s", printable(message))
        with open(encoded, "rb") as png:
            head = png.read(33)  # signature (8) + IHDR chunk (8 + 13 + 4)
            end_of_ihdr = png_header_end(head)
            stream.write(head[:end_of_ihdr])
            stream.write(png_metadata_chunks(icc_profile=icc_profile, exif=exif, xmp=xmp, dpi=dpi))
            stream.write(head[end_of_ihdr:])
            shutil.copyfileobj(png, stream, 1 << 20)


_PNG_END = png_chunk(b"IEND", b"")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY_ALPHA_BAND_ROWS = 256  # 12 MB of filtered rows for a 6000-pixel-wide photo


def _write_png_grey_alpha_16(
    stream: BinaryIO,
    pixels: np.ndarray,
    icc_profile: bytes | None,
    exif: bytes | None,
    xmp: bytes | None = None,
    dpi: tuple[float, float] | None = None,
) -> None:
    """A 16-bit grey + alpha PNG (colour type 4), a layout neither OpenCV nor Pillow encodes.

    Each row gets PNG's Sub filter (the difference to the sample one pixel to the left,
    which compresses photos' smooth gradients) and is deflated band by band, so only one
    band of filtered rows is held besides the photo.
    """
    height, width = pixels.shape[:2]
    stream.write(_PNG_SIGNATURE)
    stream.write(png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)))
    stream.write(png_metadata_chunks(icc_profile=icc_profile, exif=exif, xmp=xmp, dpi=dpi))
    row_bytes = width * 4  # two 16-bit samples per pixel
    deflate = zlib.compressobj(6)
    for top in range(0, height, _GREY_ALPHA_BAND_ROWS):
        band = np.ascontiguousarray(pixels[top : top + _GREY_ALPHA_BAND_ROWS], ">u2")  # PNG order
        raw = band.view(np.uint8).reshape(len(band), row_bytes)
        filtered = np.empty((len(band), 1 + row_bytes), np.uint8)
        filtered[:, 0] = 1  # filter type Sub
        filtered[:, 1:5] = raw[:, :4]
        np.subtract(raw[:, 4:], raw[:, :-4], out=filtered[:, 5:])  # modulo 256, as PNG says
        data = deflate.compress(filtered.tobytes())
        if data:
            stream.write(png_chunk(b"IDAT", data))
    stream.write(png_chunk(b"IDAT", deflate.flush()))
    stream.write(_PNG_END)


def _png_complete(path: Path) -> bool:
    """Whether a PNG file ends with its ``IEND`` chunk (libpng may lose its last buffer)."""
    try:
        with open(path, "rb") as png:
            png.seek(-len(_PNG_END), os.SEEK_END)
            return png.read() == _PNG_END
    except OSError:
        return False


def _disk_full(folder: Path) -> bool:
    """Whether fewer than 1 MiB are left for us in ``folder``'s file system."""
    try:
        status = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False
    return status.f_bavail * status.f_frsize < (1 << 20)


def _verify_photo(path: Path, fmt: str, width: int, height: int) -> None:
    """Re-open a written photo: its header must say ``width`` x ``height`` and its data end.

    Raises:
        OSError: the file is not the complete photo that was encoded.
    """
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(16)
        stream.seek(max(0, size - 12))
        tail = stream.read()
    complete = {
        "jpg": tail.endswith(b"\xff\xd9"),
        "png": tail == _PNG_END,
        "webp": len(head) >= 8 and struct.unpack_from("<I", head, 4)[0] + 8 == size,
        "bmp": len(head) >= 6 and struct.unpack_from("<I", head, 2)[0] == size,
    }.get(fmt, True)
    try:
        found = _stored_size(path, fmt)
    except Exception as err:  # any decoder complaint means the file is not what we wrote
        raise OSError(errno.EIO, f"written file does not read back ({err})") from None
    if not complete or found != (width, height):
        raise OSError(
            errno.EIO, f"written file is incomplete ({size} bytes, reads as {found[0]}x{found[1]})"
        )


def _stored_size(path: Path, fmt: str) -> tuple[int, int]:
    """``(width, height)`` that the written file's header declares."""
    if fmt == "tif":
        # tifffile reads every layout rave writes (float32 RGB too, which Pillow cannot).
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            page = cast(tifffile.TiffPage, tiff.pages[0])  # a frame only with useframes
            return int(page.imagewidth), int(page.imagelength)
    # Pillow parses the EXIF while opening (a JPEG's dpi may be there) and warns about what
    # is damaged in it: the caller's EXIF, copied byte for byte, whose reader has reported
    # it already. Only the size is wanted here; the warning must not reach the terminal.
    with captured_messages(native=False), Image.open(path) as image:
        return image.size


# Descriptive IFD0 tags (ImageDescription, Make, Model, DateTime, Artist, Copyright) that
# tifffile can write as plain ASCII tags; the EXIF sub-IFD (exposure etc.) it cannot.
_TIFF_ASCII_TAGS = (270, 271, 272, 306, 315, 33432)


# IFD0 tags whose loss is not worth a note: the orientation (1, the pixels being upright),
# the program that wrote the source, and the resolution and layout (written anew).
_TIFF_HOUSEKEEPING_TAGS = frozenset({0x0112, 0x0131, 0x011A, 0x011B, 0x0128, 0x0213})
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825


def _parsed_exif(exif: bytes, notes: list[str]) -> Image.Exif | None:
    """``exif`` parsed by Pillow, its sub-IFDs included, for the TIFF writers.

    Both TIFF writers take the EXIF tag by tag, and Pillow warns (``UserWarning``) about
    damaged blocks while parsing: that happens here, captured, once, and becomes a note
    instead of a line on the terminal. A block Pillow cannot parse at all is dropped.
    """
    from PIL import TiffTags

    with captured_messages(native=False) as messages:
        parsed = Image.Exif()
        try:
            parsed.load(exif)
            for tag in TiffTags.TAGS_V2_GROUPS:
                if tag in parsed:
                    parsed.get_ifd(tag)  # parsed now, not while saving
        except Exception as err:  # SyntaxError, struct.error...: not an EXIF block
            messages.append(f"{type(err).__name__}: {err}")
            parsed = None
    if parsed is not None and not len(parsed):
        parsed = None
    if messages:
        kept = "not written" if parsed is None else "only what Pillow could read is written"
        notes.append(f"EXIF damaged, {kept} ({printable('; '.join(messages))})")
    return parsed


def _tiff_ascii_tags(exif: Image.Exif | None) -> list[tuple[int, str, int, str | bytes, bool]]:
    if exif is None:
        return []
    return [
        (tag, "s", 0, exif[tag], True)
        for tag in _TIFF_ASCII_TAGS
        if isinstance(exif.get(tag), str) and exif[tag].isascii()
    ]


def _exif_lost_by_tifffile(exif: Image.Exif) -> list[str]:
    """What of ``exif`` the tifffile writer leaves out, named for a note (empty if nothing
    of value: a source's Software tag alone is not worth one)."""
    lost = []
    if exif.get_ifd(_EXIF_IFD):
        lost.append("the EXIF sub-IFD (exposure, lens...)")
    if exif.get_ifd(_GPS_IFD):
        lost.append("GPS")
    carried = {tag for tag, *_ in _tiff_ascii_tags(exif)}
    others = set(exif) - carried - _TIFF_HOUSEKEEPING_TAGS - {_EXIF_IFD, _GPS_IFD}
    if others:
        lost.append(f"{len(others)} other tag{'s' if len(others) > 1 else ''}")
    return lost


def _write_tiff_16(
    stream: BinaryIO,
    pixels: np.ndarray,
    icc_profile: bytes | None,
    exif: Image.Exif | None,
    xmp: bytes | None = None,
    dpi: tuple[float, float] | None = None,
) -> None:
    """16-bit or float32 TIFF through tifffile (Pillow writes neither as colour)."""
    import tifffile

    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    extratags = _tiff_ascii_tags(exif)
    if xmp:
        extratags.append((700, "B", len(xmp), xmp, True))
    tifffile.imwrite(
        stream,
        pixels,
        photometric="minisblack" if channels <= 2 else "rgb",
        extrasamples=("unassalpha",) if channels in (2, 4) else None,
        # Deflate with horizontal differencing, as photo editors write 16-bit TIFF: a
        # 24 MP photo in 1.7 s and 44 MB on 2 cores (no predictor: 3.3 s and 117 MB).
        compression="zlib",
        # float predictor needs imagecodecs, which tifffile does not require
        predictor=pixels.dtype != np.float32,
        maxworkers=min(4, os.cpu_count() or 1),
        iccprofile=icc_profile,
        metadata=None,  # ImageDescription is the photo's, not tifffile's shape JSON
        extratags=extratags,
        resolution=dpi,
        resolutionunit="INCH" if dpi else None,
    )


def _grey_stored_as_rgb(pixels: np.ndarray, fmt: str) -> bool:
    """Whether ``fmt`` stores these grey (+ alpha) pixels as RGB: WebP always, HEIC with alpha."""
    grey = pixels.ndim == 2 or pixels.shape[2] == 2
    return grey and (fmt == "webp" or (fmt == "heic" and pixels.ndim == 3))


def _grey_to_srgb(
    pixels: np.ndarray, icc_profile: bytes, fmt: str, notes: list[str]
) -> tuple[np.ndarray, bytes | None]:
    """Grey (+ alpha) 8-bit pixels as sRGB (+ alpha) through their GRAY profile.

    A GRAY profile cannot describe RGB pixels (colour-managed viewers reject or misread
    it), so the tones are converted with littleCMS and tagged sRGB; where the profile
    cannot be converted it is dropped, with a note either way.
    """
    from io import BytesIO

    from PIL import ImageCms

    grey = pixels if pixels.ndim == 2 else pixels[:, :, 0]
    try:
        source = ImageCms.ImageCmsProfile(BytesIO(icc_profile))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        rgb = np.asarray(
            ImageCms.profileToProfile(Image.fromarray(grey), source, srgb, outputMode="RGB")
        )
    except (OSError, ValueError, ImageCms.PyCMSError) as err:
        notes.append(
            f"GRAY ICC profile dropped: {fmt.upper()} stores grey as RGB and the profile "
            f"cannot be converted ({printable(str(err))})"
        )
        return pixels, None
    layout = "grey" if pixels.ndim == 2 else "grey + alpha"
    notes.append(
        f"{layout} written as {'RGB' if pixels.ndim == 2 else 'RGBA'} ({fmt.upper()} has no "
        f"{layout} mode): GRAY ICC profile converted to sRGB"
    )
    if pixels.ndim == 3:
        rgb = np.dstack((rgb, pixels[:, :, 1]))
    return rgb, srgb.tobytes()


def _is_png_srgb(icc_profile: bytes) -> bool:
    """Whether ``icc_profile`` stands for a PNG's ``sRGB`` chunk (nothing lost without it)."""
    colour = png_colour_in_profile(icc_profile)
    return colour is not None and colour.srgb_intent is not None


def write_photo(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    format: str | None = None,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    quality: int = 95,
    xmp: bytes | None = None,
    dpi: tuple[float, float] | None = None,
    lossless: bool = False,
) -> list[str]:
    """Write ``pixels`` atomically to ``path``, with colour profile and EXIF.

    Args:
        path: the target file; its folder is created if needed.
        pixels: ``(H, W)``, ``(H, W, 2)``, ``(H, W, 3)`` or ``(H, W, 4)`` (grey, grey +
            alpha, RGB, RGBA), ``uint8`` or ``uint16``.
        format: ``"jpg"``, ``"png"``, ``"tif"``, ``"webp"`` or ``"bmp"``; by default the
            one named by the suffix of ``path``.
        icc_profile: colour profile to embed (every format but BMP, which says so in a
            note). One built from a PNG's ``sRGB`` / ``gAMA`` / ``cHRM`` chunks
            (:mod:`rave.io.png_colour`) is written to PNG as those chunks.
        exif: EXIF block to embed (JPEG, PNG, WebP, 8-bit TIFF; 16-bit TIFF keeps only
            the descriptive IFD0 tags); orientation should say 1. Its PixelXDimension /
            PixelYDimension are set to the size of ``pixels``.
        quality: JPEG/WebP/HEIC quality, 1-100.
        xmp: XMP packet to embed (JPEG, PNG, TIFF, WebP, HEIC); the picture size it
            repeats from EXIF, if any, is set like EXIF's.
        dpi: resolution in dots per inch to store (JPEG, PNG, TIFF).
        lossless: write WebP lossless (``quality`` is then ignored), as for a lossless
            WebP source (:attr:`rave.io.Photo.lossless`); the other formats ignore it.

    Returns:
        Notes on what could not be kept (alpha dropped for JPEG, 16 bits reduced to 8 for
        formats without 16-bit samples, EXIF reduced for 16-bit TIFF, the colour profile
        for BMP).

    Raises:
        ValueError: unknown format or unsupported array layout.
        OSError: the file cannot be written, or does not read back complete (nothing is
            left behind and an existing ``path`` is kept as it was).
    """
    path = Path(path)
    fmt = format or format_for_suffix(path.suffix)
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown output format {format or path.suffix!r}")
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"pixels must be uint8, uint16 or float32, got {pixels.dtype}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (2, 3, 4))):
        raise ValueError(f"pixels must be (H, W) or (H, W, 2|3|4), got {pixels.shape}")
    notes: list[str] = []
    if pixels.dtype == np.float32 and fmt != "tif":
        # Only TIFF holds float samples: the nearest integers (in [0, 1] by contract), at
        # the most bits the format holds.
        if fmt in SIXTEEN_BIT_FORMATS:
            notes.append(f"float samples written as 16-bit: {fmt.upper()} holds no floats")
            pixels = np.round(np.clip(pixels, 0, 1) * 65535).astype(np.uint16)
        else:
            notes.append(f"float samples written as 8-bit: {fmt.upper()} holds only 8 bits")
            pixels = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4) and fmt not in _ALPHA_FORMATS:
        notes.append(f"alpha channel dropped: {fmt.upper()} has no transparency")
        pixels = pixels[:, :, :-1] if pixels.shape[2] == 4 else pixels[:, :, 0]
    if pixels.dtype == np.uint16 and fmt not in SIXTEEN_BIT_FORMATS:
        notes.append(f"16-bit samples written as 8-bit: {fmt.upper()} holds only 8 bits")
        pixels = _to_8_bit(pixels)
    if (
        icc_profile is not None
        and icc_colour_space(icc_profile) == "GRAY"
        and _grey_stored_as_rgb(pixels, fmt)
    ):
        pixels, icc_profile = _grey_to_srgb(pixels, icc_profile, fmt, notes)
    if icc_profile and fmt == "bmp" and not _is_png_srgb(icc_profile):
        # Viewers take untagged pixels as sRGB: a wider colour space would look dull. Say so.
        notes.append("ICC profile not written: BMP holds none, so viewers show the colours as sRGB")
    if exif:
        # The EXIF's picture size must be this picture's (turned upright, or another size
        # than the camera's): viewers and photo managers show it as the photo's size.
        exif = set_exif_pixel_dimensions(exif, pixels.shape[1], pixels.shape[0])
    if xmp:
        xmp = set_xmp_pixel_dimensions(xmp, pixels.shape[1], pixels.shape[0])
    exif_bytes = strip_exif_prefix(exif) if exif else None
    parsed = _parsed_exif(exif_bytes, notes) if exif_bytes and fmt == "tif" else None

    def write(stream: BinaryIO) -> None:
        if pixels.dtype == np.uint16 and fmt == "png" and pixels.ndim == 3:
            if pixels.shape[2] == 2:
                _write_png_grey_alpha_16(stream, pixels, icc_profile, exif_bytes, xmp, dpi)
            else:
                _write_png_16(stream, pixels, icc_profile, exif_bytes, xmp, dpi)
        elif pixels.dtype != np.uint8 and fmt == "tif":
            _write_tiff_16(stream, pixels, icc_profile, parsed, xmp, dpi)
        else:
            # Pillow writes 8-bit images and 16-bit grey PNG (mode I;16) with metadata.
            tiff_exif = parsed if fmt == "tif" else exif
            _write_pillow(
                stream, pixels, fmt, icc_profile, tiff_exif, quality, xmp, dpi, lossless, notes
            )

    lost = _exif_lost_by_tifffile(parsed) if parsed and pixels.dtype != np.uint8 else []
    if lost:
        depth = "float" if pixels.dtype == np.float32 else "16-bit"
        notes.append(
            f"EXIF reduced to make, model, date and credits: the {depth} TIFF writer "
            f"(tifffile) cannot embed {' or '.join(lost)}"
        )
    height, width = pixels.shape[:2]
    atomic_write(path, write, verify=lambda written: _verify_photo(written, fmt, width, height))
    for note in notes:
        logger.info("%s: %s", printable(path), printable(note))
    return notes
