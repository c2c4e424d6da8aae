"""A seeded corpus of malformed, odd and hostile image files for the fuzz tests.

Every case is built from small valid files (JPEG baseline and progressive, PNG 8/16-bit,
palette and grey + alpha, TIFF in several layouts, WebP lossy and lossless, BMP, GIF and,
when pillow-heif is installed, HEIC) by the mutations real damaged files show:

- truncation at evenly spread cut points (and a few random ones);
- bit flips in the first 64 bytes (headers);
- lying dimensions: a header claiming more pixels than the data holds (JPEG SOF, PNG IHDR
  with a valid CRC, TIFF ImageWidth/ImageLength);
- odd layouts: multi-page TIFF with a broken second page, planar, tiled, float32 and
  1-bit TIFF, 1xN and Nx1 images;
- huge ICC profiles and EXIF blocks, zero-length chunks and segments.

Claimed sizes stay at a few megapixels, so that each case decodes in bounded memory.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

__all__ = ["build_corpus"]


def _pixels(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    ramp = np.linspace(20, 200, width)[None, :, None] * np.linspace(0.5, 1.0, height)[:, None, None]
    noise = rng.normal(0, 12, (height, width, channels))
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def _pillow(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _tiff(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _insert_after_png_header(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]


def _jpeg_with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    segment = struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def _heic(rgb: np.ndarray) -> bytes | None:
    try:
        import pillow_heif
    except ImportError:
        return None
    try:
        buffer = io.BytesIO()
        pillow_heif.from_pillow(Image.fromarray(rgb)).save(buffer, quality=80)
    except Exception:  # no HEVC encoder in this build
        return None
    return buffer.getvalue()


def _valid_files(rng: np.random.Generator) -> dict[str, bytes]:
    """Small valid files of every kind the corpus mutates, by name."""
    rgb = _pixels(rng, 16, 24)
    rgb16 = rgb.astype(np.uint16) * 257
    grey_alpha = np.dstack([rgb[:, :, 0], rgb[:, :, 1]])
    files = {
        "base.jpg": _pillow(Image.fromarray(rgb), "JPEG", quality=90),
        "progressive.jpg": _pillow(Image.fromarray(rgb), "JPEG", quality=90, progressive=True),
        "base.png": _pillow(Image.fromarray(rgb), "PNG"),
        "deep.png": _deep_png(rgb16),
        "palette.png": _pillow(Image.fromarray(rgb).quantize(16), "PNG"),
        "grey_alpha.png": _pillow(Image.fromarray(grey_alpha, "LA"), "PNG"),
        "base.tif": _pillow(Image.fromarray(rgb), "TIFF"),
        "deep.tif": _tiff(rgb16, photometric="rgb"),
        "lzw.tif": _pillow(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"),
        "planar.tif": _tiff(np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate"),
        "tiled.tif": _tiff(_pixels(rng, 32, 32), photometric="rgb", tile=(16, 16)),
        "float.tif": _tiff(rgb.astype(np.float32) / 255, photometric="rgb"),
        "bilevel.tif": _pillow(Image.fromarray(rgb[:, :, 0] > 100), "TIFF"),
        "multipage.tif": _tiff(np.stack([rgb, rgb[::-1]]), photometric="rgb"),
        "lossy.webp": _pillow(Image.fromarray(rgb), "WEBP", quality=80),
        "lossless.webp": _pillow(Image.fromarray(rgb), "WEBP", lossless=True),
        "base.bmp": _pillow(Image.fromarray(rgb), "BMP"),
        "base.gif": _pillow(Image.fromarray(rgb).quantize(32), "GIF"),
    }
    heic = _heic(rgb)
    if heic is not None:
        files["base.heic"] = heic
    return files


def _deep_png(rgb16: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb16[:, :, ::-1]))
    assert ok
    return encoded.tobytes()


def _lying_dimensions(name: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    factor_sizes = ((4, 4), (40, 40), (1, 200))
    if name.endswith(".jpg"):
        sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        height, width = struct.unpack_from(">HH", data, sof + 5)
        for fy, fx in factor_sizes:
            lie = bytearray(data)
            struct.pack_into(">HH", lie, sof + 5, min(height * fy, 65535), min(width * fx, 65535))
            yield f"lie{fy}x{fx}", bytes(lie)
    elif name.endswith(".png"):
        width, height = struct.unpack_from(">II", data, 16)
        for fy, fx in factor_sizes:
            ihdr = bytearray(data[12:29])
            struct.pack_into(">II", ihdr, 4, width * fx, height * fy)
            lie = data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
            yield f"lie{fy}x{fx}", lie
    elif name == "base.tif":
        for tag_value in (256, 257):  # ImageWidth, ImageLength (SHORT or LONG values)
            lie = bytearray(data)
            offset = struct.unpack_from("<I", lie, 4)[0]
            for index in range(struct.unpack_from("<H", lie, offset)[0]):
                entry = offset + 2 + 12 * index
                if struct.unpack_from("<H", lie, entry)[0] == tag_value:
                    kind = struct.unpack_from("<H", lie, entry + 2)[0]
                    value = struct.unpack_from("<H" if kind == 3 else "<I", lie, entry + 8)[0]
                    struct.pack_into("<H" if kind == 3 else "<I", lie, entry + 8, value * 50)
            yield f"lie_tag{tag_value}", bytes(lie)


def _special_cases(
    rng: np.random.Generator, files: dict[str, bytes]
) -> Iterator[tuple[str, bytes]]:
    rgb = _pixels(rng, 16, 24)
    for height, width in ((1, 64), (64, 1), (1, 1), (2, 2)):
        image = Image.fromarray(_pixels(rng, height, width))
        for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("WEBP", "webp")):
            yield f"size{width}x{height}.{suffix}", _pillow(image, fmt)
    huge_icc = b"\x00\x00\x00\x00" + bytes(rng.integers(0, 256, 3 << 20, dtype=np.uint8))
    yield "huge_icc.png", _pillow(Image.fromarray(rgb), "PNG", icc_profile=huge_icc)
    yield "huge_icc.jpg", _pillow(Image.fromarray(rgb), "JPEG", icc_profile=huge_icc[:300_000])
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription filling the APP1 segment
    yield "huge_exif.jpg", _pillow(Image.fromarray(rgb), "JPEG", exif=exif.tobytes())
    big_exif = Image.Exif()
    big_exif[0x010E] = "y" * 2_000_000
    yield "huge_exif.png", _pillow(Image.fromarray(rgb), "PNG", exif=big_exif.tobytes())
    yield "huge_exif.webp", _pillow(Image.fromarray(rgb), "WEBP", exif=big_exif.tobytes())
    escape_icc = _escape_icc()
    yield "escape_icc.jpg", _pillow(Image.fromarray(rgb), "JPEG", icc_profile=escape_icc)
    png = files["base.png"]
    yield "zero_idat.png", _insert_after_png_header(png, _png_chunk(b"IDAT", b""))
    yield "zero_private.png", _insert_after_png_header(png, _png_chunk(b"prIv", b""))
    yield "zero_iccp.png", _insert_after_png_header(png, _png_chunk(b"iCCP", b""))
    yield "zero_exif.png", _insert_after_png_header(png, _png_chunk(b"eXIf", b""))
    jpeg = files["base.jpg"]
    yield "zero_app1.jpg", _jpeg_with_segment(jpeg, 0xE1, b"")
    yield "zero_app2.jpg", _jpeg_with_segment(jpeg, 0xE2, b"")
    yield "zero_com.jpg", _jpeg_with_segment(jpeg, 0xFE, b"")
    yield "empty.jpg", b""
    yield "only_signature.png", png[:8]
    yield "only_soi.jpg", jpeg[:2]
    yield "broken_second_page.tif", _broken_second_page(files["base.tif"])
    yield "text_named.jpg", b"this is not an image\n"


def _escape_icc() -> bytes:
    """An sRGB profile whose description holds a screen-clearing escape sequence."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    marker = profile.find(b"sRGB", 128)
    return profile if marker < 0 else profile[:marker] + b"\x1b[2J" + profile[marker + 4 :]


def _broken_second_page(tiff: bytes) -> bytes:
    """Two copies of a one-page TIFF chained, the second without ImageWidth."""
    page = Image.open(io.BytesIO(tiff))
    buffer = io.BytesIO()
    page.save(buffer, "TIFF", save_all=True, append_images=[page.copy()])
    data = bytearray(buffer.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, first)[0]
    (second,) = struct.unpack_from("<I", data, first + 2 + 12 * entries)
    if second and struct.unpack_from("<H", data, second + 2)[0] == 256:
        struct.pack_into("<H", data, second + 2, 255)
    return bytes(data)


def _mutations(
    name: str, data: bytes, rng: np.random.Generator, cuts: int, flips: int
) -> Iterator[tuple[str, bytes]]:
    for index in range(1, cuts + 1):
        cut = len(data) * index // (cuts + 1)
        yield f"cut{cut}", data[:cut]
    for cut in rng.integers(1, len(data), size=max(1, cuts // 4)):
        yield f"cutr{cut}", data[: int(cut)]
    for _ in range(flips):
        flipped = bytearray(data)
        position = int(rng.integers(0, min(64, len(data))))
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        yield f"flip{position}", bytes(flipped)
    yield from _lying_dimensions(name, data)


def build_corpus(folder: Path, *, seed: int = 0, cuts: int = 8, flips: int = 4) -> list[Path]:
    """Write the corpus into ``folder``; returns the files (names unique, sorted).

    Args:
        folder: where to write (created).
        seed: the random generator's seed (pixels, random cuts and bit flips).
        cuts: evenly spread truncation points per valid file (plus a quarter as many
            random ones).
        flips: header bit-flip variants per valid file.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = _valid_files(rng)
    cases: dict[str, bytes] = {}
    add: Callable[[str, bytes], None] = cases.setdefault  # type: ignore[assignment]
    for name, data in files.items():
        stem, suffix = name.rsplit(".", 1)
        add(name, data)
        for label, mutated in _mutations(name, data, rng, cuts, flips):
            add(f"{stem}_{label}.{suffix}", mutated)
    for name, data in _special_cases(rng, files):
        add(name, data)
    paths = []
    for name, data in sorted(cases.items()):
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths
