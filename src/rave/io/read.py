"""Reading photos the way a photographer expects: upright, at full bit depth, with metadata.

Pillow decodes 8-bit images and every header; 16-bit colour, which Pillow only holds as 8
bits, is decoded by OpenCV (``IMREAD_UNCHANGED``: native depth, no automatic rotation). In
both cases the EXIF orientation is applied here, on the numpy array, so one code path
handles it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from rave.io.formats import HEIF_SUFFIXES, RAW_SUFFIXES, image_kind, unsupported_format_hint
from rave.io.heif import can_write_heif, register_heif
from rave.io.library_messages import captured_messages, is_premature_end
from rave.io.metadata import (
    EXIF_PREFIX,
    apply_orientation,
    exif_orientation,
    icc_colour_space,
    reset_exif_orientation,
    reset_xmp_orientation,
    set_exif_pixel_dimensions,
    set_xmp_pixel_dimensions,
)
from rave.io.pixel_limit import over_pixel_limit
from rave.io.png_colour import PngColour, png_colour_from_info, png_colour_profile
from rave.io.printable import printable
from rave.io.raw import RawReadError, raw_exif, read_raw_pixels, srgb_icc_profile
from rave.io.tiff import (
    FloatRangeError,
    colour_and_alpha,
    extra_channels_note,
    read_tiff_special,
    to_min_is_black,
)

__all__ = ["DEFAULT_MAX_PIXELS", "Photo", "PhotoError", "read_photo"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 200_000_000
"""Decompression-bomb guard: images with more pixels than this are refused unread."""

# Pillow format name -> the output format written by default for it.
_NATIVE_FORMATS = {
    "JPEG": "jpg",
    "MPO": "jpg",  # phones' multi-picture JPEGs: the first picture is the photo
    "PNG": "png",
    "TIFF": "tif",
    "WEBP": "webp",
    "BMP": "bmp",
    "HEIF": "heic",
}


class PhotoError(Exception):
    """A photo that cannot be read or written; ``str()`` is one line naming the file.

    The name and the reason are escaped (:func:`rave.io.printable.printable`): neither a
    file name nor a decoder's message can put control characters on a terminal.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{printable(path)}: {printable(reason)}")
        self.path = Path(path)
        self.reason = reason


class PhotoNotFoundError(PhotoError, FileNotFoundError):
    """A photo path that does not exist: a :class:`PhotoError` that ``except
    FileNotFoundError`` (or ``OSError``) catches too, with ``errno`` ENOENT."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, "no such file")
        self.errno = errno.ENOENT


@dataclass
class Photo:
    """Decoded pixels plus what must travel to the enhanced file.

    Attributes:
        pixels: ``(H, W)`` grey, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)`` RGB or
            ``(H, W, 4)`` RGBA, ``uint8`` or ``uint16``, upright (EXIF orientation applied);
            may be read-only.
        format: the output format that matches the source (``"jpg"``, ``"png"``, ``"tif"``,
            ``"webp"``, ``"bmp"``; other sources map to ``"png"``).
        icc_profile: the embedded colour profile, if it still describes ``pixels``; for
            a PNG whose colour is given by ``sRGB`` / ``gAMA`` / ``cHRM`` chunks instead,
            a profile built from them (:mod:`rave.io.png_colour`), which
            :func:`rave.io.write_photo` writes back to PNG as those chunks.
        exif: the EXIF block (JPEG ``Exif\\0\\0`` prefix included) with orientation reset
            to 1 and PixelXDimension / PixelYDimension set to the size of ``pixels``, or None.
        xmp: the XMP packet (ratings, keywords, edits), or None; its orientation and
            picture size (where it repeats them) as in ``exif``.
        dpi: the stored resolution in dots per inch ``(x, y)``, or None.
        lossless: the source is lossless WebP, so its WebP output should be lossless too
            (``write_photo(..., lossless=photo.lossless)``).
        notes: conversions made while reading, e.g. ``"palette image converted to RGB"``.
    """

    pixels: np.ndarray
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    notes: list[str] = field(default_factory=list)
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None
    lossless: bool = False

    @property
    def bit_depth(self) -> int:
        """Bits per sample: 8, 16, or 32 for a float TIFF."""
        return 8 * self.pixels.dtype.itemsize


def _check_path(path: Path) -> None:
    if not os.path.lexists(path):
        raise PhotoNotFoundError(path)
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PhotoError(path, "symbolic link loop (the link points back to itself)") from None
        if path.is_symlink():
            raise PhotoError(
                path, f"broken symbolic link (target {os.readlink(path)} is missing)"
            ) from None
        raise PhotoError(path, f"cannot be opened ({err.strerror})") from None
    if path.is_dir():
        raise PhotoError(path, "is a directory, not an image file")
    if not path.is_file():
        raise PhotoError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise PhotoError(path, "empty file (0 bytes)")


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__


# IFD0 tags worth carrying out of a TIFF (the rest describe the TIFF's own layout).
_TIFF_DESCRIPTIVE_TAGS = (270, 271, 272, 274, 305, 306, 315, 33432)
_TIFF_SUB_IFDS = (0x8769, 0x8825)  # Exif and GPS


def _tiff_exif(source: Image.Exif) -> bytes | None:
    """An EXIF block built from a TIFF's descriptive tags, or None if it has none."""
    exif = Image.Exif()
    for tag in _TIFF_DESCRIPTIVE_TAGS:
        if tag in source and not (tag == 270 and _is_tifffile_shape(source[tag])):
            exif[tag] = source[tag]
    for tag in _TIFF_SUB_IFDS:
        sub_ifd = source.get_ifd(tag)
        if sub_ifd:
            exif[tag] = sub_ifd
    return exif.tobytes() if len(exif) else None


def _is_tifffile_shape(description: object) -> bool:
    """Whether an ImageDescription is tifffile's record of its array's shape.

    That JSON describes the array the file was written from, not the photo: carried into an
    output whose shape differs (turned upright, alpha dropped), tifffile would warn that
    the file does not match it, and reshape what it reads.
    """
    if not isinstance(description, str) or not description.startswith("{"):
        return False
    try:
        parsed = json.loads(description)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "shape" in parsed


def _tiff_metadata_from_tags(
    path: Path,
) -> tuple[bytes | None, bytes | None, bytes | None, tuple[float, float] | None]:
    """ICC profile, EXIF, XMP and dpi of a TIFF's first page, read through tifffile.

    For the TIFFs Pillow cannot open (float RGB): the same metadata as the Pillow path
    carries, the EXIF block built by the same Pillow parser, from the same IFD.
    """
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = cast(tifffile.TiffPage, tiff.pages[0])  # a frame only with useframes
        tags = {tag.code: tag.value for tag in page.tags}
        source = Image.Exif()
        source.endian, source.bigtiff = tiff.byteorder, tiff.is_bigtiff
        with open(path, "rb") as stream:
            source.load_from_fp(stream, page.offset)
            exif = _tiff_exif(source)  # sub-IFDs are read from the stream here
    icc_profile = tags.get(34675)
    xmp = tags.get(700)
    return (
        bytes(icc_profile) if icc_profile else None,
        exif,
        bytes(xmp) if isinstance(xmp, bytes | bytearray) and xmp else None,
        _tiff_dpi(tags.get(282), tags.get(283), tags.get(296)),
    )


def _tiff_dpi(x: object, y: object, unit: object) -> tuple[float, float] | None:
    """Dots per inch from TIFF resolution tags (as Pillow reads them: no unit means inch)."""
    if not (isinstance(x, tuple) and isinstance(y, tuple) and len(x) == len(y) == 2):
        return None
    if not (x[1] and y[1]):
        return None
    scale = {None: 1.0, 2: 1.0, 3: 2.54}.get(None if unit is None else int(cast(int, unit)))
    if scale is None:  # unit 1: an aspect ratio, not a resolution
        return None
    dpi = (x[0] / x[1] * scale, y[0] / y[1] * scale)
    return dpi if min(dpi) > 0 else None


def _is_16_bit(image: Image.Image, path: Path) -> bool:
    """Whether the file stores more than 8 bits per colour sample (Pillow would drop them)."""
    if image.mode.startswith("I;16"):
        return True
    if image.format == "PNG" and image.mode in ("RGB", "RGBA", "LA"):
        return _png_depth_and_colour_type(path)[0] == 16
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258, 8)
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


_PNG_GREY_ALPHA = 4  # IHDR colour type


def _png_depth_and_colour_type(path: Path) -> tuple[int, int]:
    """IHDR bit depth and colour type of a PNG: bytes 24 and 25 of every PNG (signature 8,
    chunk length 4, type 4, size 8), or ``(0, 0)`` when the file is too short."""
    with open(path, "rb") as stream:
        header = stream.read(26)
    return (header[24], header[25]) if len(header) == 26 else (0, 0)


def _decode_16_bit(path: Path, tiff: bool = False, notes: list[str] | None = None) -> np.ndarray:
    """16-bit pixels in RGB(A) order via tifffile (TIFF) or OpenCV, or raises PhotoError."""
    import cv2

    if tiff:
        pixels = _decode_16_bit_tiff(path, notes)
        if pixels is not None:
            return pixels
    if sys.platform == "win32":
        # OpenCV's imread takes no non-ASCII path on Windows: decode the file's bytes.
        data = np.fromfile(path, dtype=np.uint8)
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        del data
    else:
        # Straight from the file: decoding its bytes held the file and the pixels at once
        # (a 24 MP 16-bit PNG through `rave enhance`: 981 MB peak instead of 856).
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        unsupported = _unsupported_tiff_layout(path) if tiff else None
        raise PhotoError(path, unsupported or "corrupt or truncated 16-bit image data")
    if pixels.dtype != np.uint16:
        raise PhotoError(path, f"unsupported sample type {pixels.dtype} (expected 8 or 16 bit)")
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, dst=pixels)
    elif pixels.ndim == 3 and pixels.shape[2] == 4:
        cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA, dst=pixels)
    elif pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return pixels


def _unsupported_tiff_layout(path: Path) -> str | None:
    """Why neither tifffile's path nor OpenCV decoded a 16-bit TIFF, if its layout says."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = cast(tifffile.TiffPage, tiff.pages[0])  # a frame only with useframes
            photometric = page.photometric
    except Exception:  # not a TIFF tifffile understands: the data is what is wrong
        return None
    if photometric in (
        tifffile.PHOTOMETRIC.RGB,
        tifffile.PHOTOMETRIC.MINISBLACK,
        tifffile.PHOTOMETRIC.MINISWHITE,
    ):
        return None
    if photometric == tifffile.PHOTOMETRIC.SEPARATED:
        kind = "CMYK"
    else:
        kind = getattr(photometric, "name", f"photometric {int(photometric)}")
    return f"16-bit {kind} TIFF is not supported (convert it to RGB, or save it at 8 bits)"


def _decode_16_bit_tiff(path: Path, notes: list[str] | None = None) -> np.ndarray | None:
    """The first page of a 16-bit RGB(A) or grey TIFF through tifffile, else ``None``.

    tifffile decodes straight into the result, already in RGB order: OpenCV holds the file
    and two copies of the pixels at once (a 24 MP uncompressed photo: 430 MB instead of
    144 MB), too much for the 1 GB budget. Other layouts (CMYK, palette...) and any
    compression tifffile cannot decode go to OpenCV, as do planar files. Extra channels
    beyond alpha are dropped with a note added to ``notes``.
    """
    import tifffile

    grey_or_rgb = (
        tifffile.PHOTOMETRIC.RGB,
        tifffile.PHOTOMETRIC.MINISBLACK,
        tifffile.PHOTOMETRIC.MINISWHITE,
    )
    try:
        with tifffile.TiffFile(path) as tiff:
            page = cast(tifffile.TiffPage, tiff.pages[0])  # a frame only with useframes
            photometric = page.photometric
            if (
                page.dtype != np.uint16
                or photometric not in grey_or_rgb
                or page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
            ):
                return None
            pixels = page.asarray()
            extrasamples = tuple(page.extrasamples)
    except Exception:  # tifffile's errors are many (codecs, malformed tags): OpenCV decides
        return None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    pixels, dropped = colour_and_alpha(pixels, photometric, extrasamples)
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (2, 3, 4)):
        return None
    if dropped and notes is not None:
        notes.append(dropped)
    pixels = np.ascontiguousarray(pixels)
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    return to_min_is_black(pixels, photometric)


def _to_supported_mode(
    image: Image.Image, path: Path, icc_profile: bytes | None, notes: list[str]
) -> tuple[Image.Image, bytes | None]:
    """Convert modes the network cannot take (palette, CMYK, bilevel...) to L/LA/RGB/RGBA."""
    mode = image.mode
    if mode in ("L", "RGB") and "transparency" in image.info:
        # A colour key (PNG tRNS): kept as alpha, as for 16-bit colour and palette images.
        return image.convert("LA" if mode == "L" else "RGBA"), icc_profile
    if mode in ("L", "LA", "RGB", "RGBA") or mode.startswith("I;16"):
        return image, icc_profile
    if mode == "CMYK":
        converted = _cmyk_to_srgb(image, icc_profile)
        if converted is not None:
            notes.append("CMYK converted to sRGB with its ICC profile")
            return converted
        notes.append("CMYK converted to RGB (no usable ICC profile: naive conversion)")
        return image.convert("RGB"), None
    if mode == "I":
        # Pillow opens some 16-bit grey files as 32-bit integers.
        low, high = cast(tuple[int, int], image.getextrema())  # one band: (min, max)
        if low >= 0 and high <= 65535:
            return image.convert("I;16"), icc_profile
        raise PhotoError(path, "32-bit integer images are not supported")
    if mode == "F":
        raise PhotoError(path, "32-bit floating-point images are not supported")
    has_alpha = mode in ("PA", "RGBa", "La") or "transparency" in image.info
    if mode in ("1", "La") or (mode == "P" and _palette_is_grey(image) and not has_alpha):
        target = "LA" if has_alpha else "L"
    else:
        target = "RGBA" if has_alpha else "RGB"
    kind = {"P": "palette", "PA": "palette", "1": "1-bit"}.get(mode, mode)
    notes.append(f"{kind} image converted to {target}")
    return image.convert(target), icc_profile


def _palette_is_grey(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    triples = zip(palette[0::3], palette[1::3], palette[2::3], strict=False)
    return bool(palette) and all(r == g == b for r, g, b in triples)


def _cmyk_to_srgb(
    image: Image.Image, icc_profile: bytes | None
) -> tuple[Image.Image, bytes | None] | None:
    if icc_colour_space(icc_profile) != "CMYK":
        return None
    try:
        from io import BytesIO

        from PIL import ImageCms

        srgb = ImageCms.createProfile("sRGB")
        source = ImageCms.ImageCmsProfile(BytesIO(icc_profile))  # type: ignore[arg-type]
        converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
        assert converted is not None  # None only with inPlace=True
        return converted, ImageCms.ImageCmsProfile(srgb).tobytes()
    except Exception:  # littleCMS missing or a profile it cannot use: fall back
        return None


def _is_heif(path: Path) -> bool:
    """Whether the file starts like a HEIF photo (an ISO box ``ftyp`` with a HEIF brand)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(12)
    except OSError:
        return False  # the decoder names the problem
    return image_kind(head) == "HEIF"


def _decode_photo(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """The decoding part of :func:`read_photo` (same arguments, result and errors), without
    its checks for truncated data and its capture of the decoders' messages."""
    path = Path(path)
    _check_path(path)
    suffix = path.suffix.lower()
    if suffix in RAW_SUFFIXES:
        return _read_raw(path, max_pixels)
    # By content too: rave serve keeps uploads without their name's suffix.
    if (suffix in HEIF_SUFFIXES or _is_heif(path)) and not register_heif():
        raise PhotoError(path, f"HEIF photos need pillow-heif: {unsupported_format_hint('.heic')}")
    notes: list[str] = []
    if max_pixels > (Image.MAX_IMAGE_PIXELS or max_pixels):
        # Pillow's own guard (an error at twice its limit) must not be stricter than ours,
        # which is checked from the header below with a clearer message.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below gives a clearer message than Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError:
        # By content, not name: uploads and misnamed files are TIFFs all the same.
        if suffix in (".tif", ".tiff") or _has_tiff_signature(path):
            photo = _read_tiff_pillow_cannot_open(path, max_pixels)
            if photo is not None:
                return photo
        hint = unsupported_format_hint(suffix)
        raise PhotoError(
            path, hint or "not an image file, or a format Pillow cannot read"
        ) from None
    except Image.DecompressionBombError as err:
        # Pillow's own guard fires at twice its limit, which is at least ours: the photo is
        # over our limit, which is the one to state (and the one the user can raise).
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = int(found[1]) if found else None
        raise PhotoError(path, over_pixel_limit(size, max_pixels)) from None
    except PermissionError:
        raise PhotoError(path, "permission denied") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise PhotoError(path, f"corrupt or truncated image ({_describe(err)})") from None

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise PhotoError(path, over_pixel_limit((width, height), max_pixels))
        # The output format that keeps this source as it is; whoever writes the result
        # says when it differs (rave.io.formats.default_output_note), as only the caller
        # knows whether the user chose another one.
        format_name = _NATIVE_FORMATS.get(image.format or "", "png")
        if format_name == "heic" and not can_write_heif():
            format_name = "jpg"
        xmp, dpi = _xmp_and_dpi(image)
        icc_profile = image.info.get("icc_profile") or None
        # sRGB / gAMA / cHRM: the colour space of a PNG without (or with a dropped) iCCP.
        png_colour = png_colour_from_info(image.info) if image.format == "PNG" else None
        exif = image.info.get("exif") or None
        if exif is None and image.format == "TIFF":
            # TIFF keeps EXIF tags in its own IFD: read them through Pillow's Exif view.
            exif = _tiff_exif(image.getexif())
        if isinstance(exif, bytes) and not exif.startswith(EXIF_PREFIX):
            exif = EXIF_PREFIX + exif  # WebP stores it bare; keep one convention
        orientation = exif_orientation(exif)
        try:
            special = read_tiff_special(path, max_pixels) if image.format == "TIFF" else None
            frames: int = getattr(image, "n_frames", 1)
            if special is None and frames > 1 and image.format != "MPO":
                notes.append(f"only the first of {frames} frames is enhanced")
            if special is not None:
                pixels, tiff_notes = special
                notes += tiff_notes
            elif _is_16_bit(image, path) and not image.mode.startswith("I;16"):
                pixels = _decode_16_bit(path, tiff=image.format == "TIFF", notes=notes)
                if (
                    image.format == "PNG"
                    and pixels.ndim == 3
                    and _png_depth_and_colour_type(path)[1] == _PNG_GREY_ALPHA
                ):
                    pixels = pixels[:, :, [0, 3]]  # OpenCV expands grey + alpha to BGRA
            else:
                source = image
                image, icc_profile = _to_supported_mode(image, path, icc_profile, notes)
                pixels = _pixel_array(image)
                if pixels.dtype.byteorder == ">":  # I;16B
                    pixels = pixels.astype(np.uint16)
                key = source.info.get("transparency")
                if source.mode.startswith("I;16") and isinstance(key, int):
                    # A colour key, as OpenCV turns 16-bit RGB ones into alpha; Pillow
                    # would do it only at 8 bits.
                    alpha = np.where(pixels == key, 0, 65535).astype(np.uint16)
                    pixels = np.dstack((pixels, alpha))
                if source.format == "TIFF":
                    tags = getattr(source, "tag_v2", {})
                    if 0x0112 not in tags:
                        # Recent Pillow turns TIFFs upright while loading them (and drops
                        # the tag to say so); older versions do not.
                        orientation = 1
                    if source.mode.startswith("I;16"):
                        # Pillow inverts MINISWHITE grey at 8 bits only
                        pixels = to_min_is_black(pixels, tags.get(262, 1))
                    extra = tags.get(277, 1) - len(source.getbands())
                    if extra > 0:  # Pillow ignores the samples beyond those of its mode
                        notes.append(extra_channels_note(extra, source.mode))
        except PhotoError:
            raise
        except FloatRangeError as err:
            raise PhotoError(path, str(err)) from None
        except MemoryError:
            raise PhotoError(path, "not enough memory to decode the image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise PhotoError(path, f"corrupt or truncated image ({_describe(err)})") from None

    lossless = format_name == "webp" and _webp_is_lossless(path)
    photo = Photo(pixels, format_name, icc_profile, exif, notes, xmp, dpi, lossless)
    return _upright_photo(path, photo, orientation, png_colour)


def _webp_is_lossless(path: Path) -> bool:
    """Whether a WebP file's (first) image is VP8L, lossless, rather than lossy VP8.

    Pillow does not say. The RIFF chunks do: ``VP8L`` or ``VP8 `` at the top level (after
    ``VP8X`` and metadata chunks in the extended format), or inside the first ``ANMF``
    frame of an animation, after its 16-byte frame header.
    """
    with open(path, "rb") as stream:
        if stream.read(12)[8:] != b"WEBP":
            return False
        while len(header := stream.read(8)) == 8:
            kind, size = header[:4], int.from_bytes(header[4:], "little")
            if kind in (b"VP8L", b"VP8 "):
                return kind == b"VP8L"
            if kind == b"ANMF":
                stream.seek(16, os.SEEK_CUR)  # into the frame: its chunks follow
                continue
            stream.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even sizes
    return False


def _upright_photo(
    path: Path, photo: Photo, orientation: int, png_colour: PngColour | None = None
) -> Photo:
    """``photo`` turned upright, its ICC profile checked against its pixels, notes logged.

    Args:
        path: the file read (for the log).
        photo: decoded pixels and the file's metadata, as stored.
        orientation: the EXIF orientation the pixels are stored in (1-8).
        png_colour: a PNG's sRGB / gAMA / cHRM chunks: where no usable ICC profile is
            embedded (an ``iCCP`` overrides them), they become the photo's profile
            (:mod:`rave.io.png_colour`), so every output format keeps the colours.
    """
    pixels = photo.pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    expected_space = "GRAY" if pixels.ndim == 2 or pixels.shape[2] == 2 else "RGB"
    space = icc_colour_space(photo.icc_profile)
    if photo.icc_profile is not None and space is None:
        photo.notes.append("an unreadable ICC profile was dropped (not an ICC profile header)")
        photo.icc_profile = None
    elif photo.icc_profile is not None and space != expected_space:
        photo.notes.append(
            f"{printable(space)} ICC profile dropped: it does not describe {expected_space} pixels"
        )
        photo.icc_profile = None
    if photo.icc_profile is None and png_colour is not None:
        photo.icc_profile = png_colour_profile(png_colour, grey=expected_space == "GRAY")
        if photo.icc_profile is None:
            described = png_colour.describe().removeprefix("PNG ")
            photo.notes.append(
                f"PNG colour chunks dropped ({described}): they describe no colour space"
            )
    if orientation != 1:
        pixels = apply_orientation(pixels, orientation)
        if photo.xmp is not None:
            photo.xmp = reset_xmp_orientation(photo.xmp)
    if photo.exif is not None:
        photo.exif = reset_exif_orientation(photo.exif)
        # Turned upright, a 6000 x 4000 camera picture is 4000 x 6000: the EXIF says so.
        photo.exif = set_exif_pixel_dimensions(photo.exif, pixels.shape[1], pixels.shape[0])
    if photo.xmp is not None:
        photo.xmp = set_xmp_pixel_dimensions(photo.xmp, pixels.shape[1], pixels.shape[0])
    photo.pixels = pixels
    for note in photo.notes:
        logger.info("%s: %s", printable(path), printable(note))
    return photo


# Rows copied out of Pillow at a time by _pixel_array: 4.6 MB for a 6000-pixel-wide RGB photo.
_COPY_BAND_ROWS = 256


def _pixel_array(image: Image.Image) -> np.ndarray:
    """The decoded image as a new, writeable numpy array, copied in bands of rows.

    ``np.asarray(image)`` goes through ``Image.tobytes``, which holds Pillow's image, the
    encoded chunks and their joined copy at once (three times the pixels: 216 MB for a 24 MP
    JPEG) and gives a read-only array, which the engine cannot enhance in place. Band by
    band, Pillow's image and the array are the only full-size copies.

    Args:
        image: a loaded or lazily decoded Pillow image of any mode numpy can take.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array of the image's sample type (as ``np.asarray``).
    """
    image.load()
    width, height = image.size
    first = np.asarray(image.crop((0, 0, width, min(height, _COPY_BAND_ROWS))))
    pixels = np.empty((height, *first.shape[1:]), dtype=first.dtype)
    pixels[: len(first)] = first
    for top in range(len(first), height, _COPY_BAND_ROWS):
        bottom = min(height, top + _COPY_BAND_ROWS)
        pixels[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
    return pixels


@contextlib.contextmanager
def _truncated_images_refused() -> Iterator[None]:
    # Pillow fills a truncated image with grey when this global is on (some libraries turn
    # it on for everyone); a photo with missing data must be an error, never an output.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _check_jpeg_scan(path: Path) -> None:
    """Refuse a JPEG whose compressed data ends before the picture its header declares.

    libjpeg fills the missing part with grey and says so only in a warning, which Pillow
    discards: a 205 KB file claiming 4000x3000 decodes "successfully" into 12 MP of grey
    (and one claiming 192 MP takes minutes and 2 GB). OpenCV's libjpeg prints that warning;
    decoding at 1/8 scale in grey still reads every compressed block, at a fraction of a
    full decode's time and memory, so a lying file is refused before the real decode.
    """
    import cv2

    with captured_messages() as messages:
        data = np.fromfile(path, dtype=np.uint8)
        cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION)
        del data
    for message in messages:
        if is_premature_end(message):
            raise PhotoError(
                path,
                "truncated or corrupt JPEG: the compressed data ends before the picture its "
                f"header declares ({message})",
            )


def _check_tiff_data(path: Path, page_index: int = 0) -> None:
    """Refuse a TIFF page whose pixel data lies past the end of the file or is too short.

    Pillow's own TIFF decoder fills rows that a strip does not hold with black: a header
    claiming 800 rows over 16 rows of data reads as an 800-row photo. The strip (or tile)
    offsets and byte counts tell: data beyond the end of the file means a truncated file;
    uncompressed data shorter than the declared size means a lying header.
    """
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tiff:
            page = cast(tifffile.TiffPage, tiff.pages[page_index])  # a frame only with useframes
            offsets, counts = page.dataoffsets, page.databytecounts
            uncompressed = page.compression == tifffile.COMPRESSION.NONE
            declared = page.size * page.dtype.itemsize if page.dtype is not None else 0
            bits = page.bitspersample
    except Exception:  # not a TIFF tifffile can parse: Pillow decides and reports
        return
    if any(offset + count > size for offset, count in zip(offsets, counts, strict=False)):
        raise PhotoError(path, "truncated TIFF: its pixel data reaches past the end of the file")
    if uncompressed and bits >= 8 and sum(counts) < declared:
        raise PhotoError(
            path,
            f"corrupt TIFF: {sum(counts)} bytes of pixel data for the {declared} bytes its "
            "header declares",
        )


def read_photo(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode a photo upright, at its bit depth, keeping its ICC profile and EXIF.

    Args:
        path: the image file (JPEG, PNG, TIFF, WebP, BMP, or anything else Pillow reads).
        max_pixels: refuse images with more pixels than this, judged from the header
            before any pixel is decoded (decompression bombs).

    Returns:
        A :class:`Photo`; ``pixels`` is ``uint16`` for 16-bit PNG/TIFF and camera RAW,
        ``float32`` (in [0, 1]) for float TIFF, else ``uint8``. For a TIFF whose first page
        is a preview, the largest image; HEIF through pillow-heif, RAW through rawpy.
        Messages the decoders printed or warned (libpng, libjpeg, OpenCV, Pillow) are in
        ``notes``, escaped, instead of on the terminal.

    Raises:
        PhotoError: missing, empty, not an image, corrupt or truncated (including data
            that ends before the pixels its header declares, and any decoder warning about
            a premature end), too large, non-finite samples, or an unsupported sample
            format. Whatever a decoder raises becomes a PhotoError; the message is one
            line naming the file.
    """
    path = Path(path)
    _check_path(path)
    with _truncated_images_refused(), captured_messages() as messages:
        try:
            with open(path, "rb") as stream:
                kind = image_kind(stream.read(12))
            if kind == "JPEG":
                _check_jpeg_scan(path)
            elif kind == "TIFF":
                _check_tiff_data(path)
            photo = _decode_photo(path, max_pixels=max_pixels)
        except PhotoError:
            raise
        except MemoryError:
            raise PhotoError(path, "not enough memory to decode the image") from None
        except PermissionError:
            raise PhotoError(path, "permission denied") from None
        except Exception as err:  # decoders fail in many ways (TypeError, KeyError...)
            raise PhotoError(
                path, f"corrupt or unreadable image ({type(err).__name__}: {_describe(err)})"
            ) from None
    for message in messages:
        if is_premature_end(message):
            raise PhotoError(path, f"truncated or corrupt image data ({message})")
        photo.notes.append(f"decoder message: {printable(message)}")
        logger.info("%s: decoder message: %s", printable(path), printable(message))
    if photo.pixels.dtype.kind == "f" and not np.isfinite(photo.pixels).all():
        raise PhotoError(path, "holds non-finite samples (NaN or infinity)")
    return photo


def _xmp_and_dpi(image: Image.Image) -> tuple[bytes | None, tuple[float, float] | None]:
    """The XMP packet and the resolution in dots per inch, where the file stores them."""
    xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp")
    if not xmp and image.format == "TIFF":
        xmp = getattr(image, "tag_v2", {}).get(700)
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    dpi = image.info.get("dpi")
    if image.format == "JPEG" and image.info.get("jfif_unit") not in (1, 2):
        dpi = None  # JFIF density 1:1 without a unit is an aspect ratio, not a resolution
    tags = getattr(image, "tag_v2", {}) if image.format == "TIFF" else {}
    if image.format == "TIFF" and not (282 in tags and 283 in tags):
        dpi = None  # Pillow's stand-in (1, 1) for absent resolution tags: 1 dpi is not it
    if dpi is not None:
        dpi = (float(dpi[0]), float(dpi[1]))
        if min(dpi) <= 0:
            dpi = None
    return (bytes(xmp) if xmp else None), dpi


def _has_tiff_signature(path: Path) -> bool:
    """Whether the file starts as a TIFF or BigTIFF does."""
    with open(path, "rb") as stream:
        return stream.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _read_tiff_pillow_cannot_open(path: Path, max_pixels: int) -> Photo | None:
    """Float RGB TIFFs and other layouts only tifffile reads, or None."""
    try:
        special = read_tiff_special(path, max_pixels, always=True)
    except FloatRangeError as err:
        raise PhotoError(path, str(err)) from None
    except ValueError as err:
        raise PhotoError(path, _describe(err)) from None
    if special is None:
        return None
    pixels, notes = special
    try:
        icc_profile, exif, xmp, dpi = _tiff_metadata_from_tags(path)
    except Exception as err:  # malformed tags: the pixels are still the photo
        notes.append(f"metadata not carried over (unreadable TIFF tags: {_describe(err)})")
        icc_profile = exif = xmp = dpi = None
    photo = Photo(pixels, "tif", icc_profile, exif, notes, xmp, dpi)
    return _upright_photo(path, photo, exif_orientation(exif))


def _read_raw(path: Path, max_pixels: int) -> Photo:
    """A camera RAW file as a 16-bit sRGB photo, EXIF carried over where Pillow finds it."""
    try:
        pixels, notes = read_raw_pixels(path, max_pixels)
    except RawReadError as err:
        raise PhotoError(path, str(err)) from None
    exif = raw_exif(path)
    if exif is None:
        notes.append("EXIF not carried over (not readable from this RAW container)")
    else:
        if not exif.startswith(EXIF_PREFIX):
            exif = EXIF_PREFIX + exif
        exif = reset_exif_orientation(exif)  # LibRaw has already turned the pixels upright
        exif = set_exif_pixel_dimensions(exif, pixels.shape[1], pixels.shape[0])
    icc_profile = srgb_icc_profile()
    return Photo(pixels=pixels, format="tif", icc_profile=icc_profile, exif=exif, notes=notes)
