"""Photo files of less common layouts and their metadata: float and MINISWHITE TIFF, colour-key
and grey + alpha transparency, extra channels, lossless WebP, and the notes and errors the
reader and writer give for them.

References are independent of rave.io: the pixels written by tifffile, OpenCV or Pillow,
transformed with numpy (``np.rot90`` for orientation 6, ``65535 - v`` for MINISWHITE), and
metadata read back by tifffile or Pillow.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from rave.io import PhotoError, read_photo, write_photo

H, W = 12, 20  # non-square so that a transposition shows in the shape


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif_dict(exif: bytes | None) -> dict:
    parsed = Image.Exif()
    if exif:
        parsed.load(exif)
    return dict(parsed)


# --- float RGB TIFF: metadata read through tifffile (Pillow cannot open the file) ----------


def test_float_rgb_tiff_is_turned_upright_and_keeps_its_metadata(
    tmp_path: Path, srgb_icc: bytes
) -> None:
    rng = np.random.default_rng(1)
    stored = rng.random((H, W, 3), dtype=np.float32)
    path = tmp_path / "float.tif"
    tifffile.imwrite(
        path,
        stored,
        photometric="rgb",
        iccprofile=srgb_icc,
        resolution=(300, 300),
        resolutionunit="INCH",
        extratags=[(274, "H", 1, 6, True), (271, "s", 0, "TestMake", True)],
    )
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(path)  # the layout this test is about: Pillow cannot open it

    photo = read_photo(path)

    np.testing.assert_array_equal(photo.pixels, np.rot90(stored, k=-1))  # 90 deg clockwise
    assert photo.icc_profile == srgb_icc
    assert photo.dpi == (300.0, 300.0)
    tags = _exif_dict(photo.exif)
    assert tags[271] == "TestMake"
    assert tags[274] == 1
    assert photo.notes == []

    out = tmp_path / "out.tif"
    write_photo(out, photo.pixels, icc_profile=photo.icc_profile, exif=photo.exif, dpi=photo.dpi)
    with tifffile.TiffFile(out) as tiff:
        page = tiff.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        np.testing.assert_array_equal(page.asarray(), np.rot90(stored, k=-1))
        assert page.tags[34675].value == srgb_icc
        assert page.tags[271].value == "TestMake"
        assert page.tags[282].value == (300, 1)
        assert 274 not in page.tags or page.tags[274].value == 1


def test_float_rgb_tiff_resolution_in_centimetres_is_converted_to_dpi(tmp_path: Path) -> None:
    path = tmp_path / "float_cm.tif"
    pixels = np.full((H, W, 3), 0.5, np.float32)
    tifffile.imwrite(
        path, pixels, photometric="rgb", resolution=(100, 50), resolutionunit="CENTIMETER"
    )
    photo = read_photo(path)
    assert photo.dpi == pytest.approx((254.0, 127.0))


# --- tifffile's own shape description is not the photo's ---------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tifffile_shape_description_is_not_carried_into_a_rotated_output(
    tmp_path: Path, dtype: type
) -> None:
    path = tmp_path / "shaped.tif"
    stored = (np.arange(H * W * 3).reshape(H, W, 3) % 200).astype(dtype)
    if dtype == np.float32:
        stored /= 200
    # tifffile writes '{"shape": [12, 20, 3]}' as the ImageDescription by default.
    tifffile.imwrite(path, stored, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    with tifffile.TiffFile(path) as tiff:
        assert '"shape"' in tiff.pages[0].description  # type: ignore[union-attr]

    photo = read_photo(path)
    assert photo.pixels.shape == (W, H, 3)
    assert 270 not in _exif_dict(photo.exif)
    out = tmp_path / "out.tif"
    write_photo(out, photo.pixels, exif=photo.exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tifffile warns when a shape description lies
        with tifffile.TiffFile(out) as tiff:
            assert tiff.asarray().shape == (W, H, 3)
            assert '"shape": [12, 20' not in tiff.pages[0].description  # type: ignore[union-attr]


def test_photo_description_of_a_tiff_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "described.tif"
    pixels = np.zeros((H, W, 3), np.uint16)
    tifffile.imwrite(path, pixels, photometric="rgb", description="Sunset at the pier")
    photo = read_photo(path)
    assert _exif_dict(photo.exif)[270] == "Sunset at the pier"


# --- MINISWHITE: 0 is white, so the reader inverts what it decodes -----------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_min_is_white_tiff_is_read_as_a_positive(
    tmp_path: Path, dtype: type, alpha: bool, byteorder: str
) -> None:
    rng = np.random.default_rng(2)
    if dtype == np.float32:
        stored = rng.random((H, W, 2), dtype=np.float32)
        white = np.float32(1)
    else:
        white = np.iinfo(dtype).max
        stored = rng.integers(0, int(white) + 1, (H, W, 2), dtype=dtype)
    stored = stored if alpha else stored[:, :, 0]
    path = tmp_path / "scan.tif"
    options = {"extrasamples": ["unassalpha"]} if alpha else {}
    tifffile.imwrite(path, stored, photometric="miniswhite", byteorder=byteorder, **options)

    pixels = read_photo(path).pixels

    expected = stored.copy()
    grey = expected[:, :, 0] if alpha else expected
    grey[...] = white - grey
    assert pixels.dtype == dtype
    np.testing.assert_array_equal(pixels, expected)


# --- extra channels ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize(
    ("photometric", "extrasamples", "kept", "note"),
    [
        ("rgb", ["unspecified", "unspecified"], 3, "2 extra channels dropped (kept: RGB)"),
        ("rgb", ["unassalpha", "unspecified"], 4, "1 extra channel dropped (kept: RGB and alpha)"),
        ("minisblack", ["unassalpha", "unspecified"], 2, "1 extra channel dropped (kept: grey and"),
    ],
    ids=["rgb+2", "rgba+1", "grey-alpha+1"],
)
def test_extra_channels_are_dropped_with_a_note(
    tmp_path: Path, dtype: type, photometric: str, extrasamples: list, kept: int, note: str
) -> None:
    channels = (3 if photometric == "rgb" else 1) + len(extrasamples)
    stored = (np.arange(H * W * channels).reshape(H, W, channels) % 251).astype(dtype)
    if dtype == np.float32:
        stored /= 251
    path = tmp_path / "extra.tif"
    tifffile.imwrite(
        path, stored, photometric=photometric, extrasamples=extrasamples, planarconfig="contig"
    )

    photo = read_photo(path)

    np.testing.assert_array_equal(photo.pixels, stored[:, :, :kept])
    assert len([n for n in photo.notes if n.startswith(note)]) == 1, photo.notes


# --- transparency: colour keys and grey + alpha --------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_trns(png: bytes, trns: bytes) -> bytes:
    """``png`` with a tRNS chunk right after IHDR (8-byte signature, 25-byte IHDR chunk)."""
    return png[:33] + _png_chunk(b"tRNS", trns) + png[33:]


def _png_16_grey_alpha(grey_alpha: np.ndarray) -> bytes:
    """A 16-bit grey + alpha PNG, unfiltered, written here with zlib (OpenCV cannot)."""
    height, width = grey_alpha.shape[:2]
    rows = grey_alpha.astype(">u2").reshape(height, width * 2).view(np.uint8)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()  # filter type 0
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _keyed(depth: int, channels: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Random samples and a colour key that some of the pixels (a 3x4 block) have."""
    rng = np.random.default_rng(depth + channels)
    dtype = np.uint8 if depth == 8 else np.uint16
    samples = rng.integers(1, 2**depth - 1, (H, W, channels), dtype=dtype)
    key = tuple(int(v) for v in rng.integers(1, 2**depth - 1, channels))
    samples[2:5, 3:7] = key
    return samples, key


@pytest.mark.parametrize(("depth", "channels"), [(8, 3), (8, 1), (16, 3), (16, 1)])
def test_png_colour_key_is_kept_as_alpha(tmp_path: Path, depth: int, channels: int) -> None:
    samples, key = _keyed(depth, channels)
    path = tmp_path / "keyed.png"
    if depth == 8:
        image = Image.fromarray(samples if channels == 3 else samples[:, :, 0])
        image.save(path, transparency=key if channels == 3 else key[0])
    else:
        bgr = samples[:, :, ::-1] if channels == 3 else samples[:, :, 0]
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
        assert ok
        trns = struct.pack(f">{channels}H", *key)
        path.write_bytes(_png_with_trns(encoded.tobytes(), trns))

    photo = read_photo(path)

    opaque = 2**depth - 1
    alpha = np.where((samples == key).all(axis=2), 0, opaque).astype(samples.dtype)
    expected = np.dstack([samples if channels == 3 else samples[:, :, 0], alpha])
    assert photo.pixels.dtype == samples.dtype
    np.testing.assert_array_equal(photo.pixels, expected)
    assert (photo.pixels[..., -1] == 0).sum() >= 12  # the keyed block at least

    out = tmp_path / "out.png"
    write_photo(out, photo.pixels)
    if depth == 8:
        assert Image.open(out).mode == ("RGBA" if channels == 3 else "LA")
    np.testing.assert_array_equal(read_photo(out).pixels, expected)


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_grey_alpha_stays_grey_alpha(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 65536, (H, W, 2), dtype=np.uint16)
    path = tmp_path / f"la16.{suffix}"
    if suffix == "png":
        path.write_bytes(_png_16_grey_alpha(stored))
    else:
        tifffile.imwrite(path, stored, photometric="minisblack", extrasamples=["unassalpha"])

    photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16
    np.testing.assert_array_equal(photo.pixels, stored)

    out = tmp_path / f"out.{suffix}"
    assert write_photo(out, photo.pixels, dpi=(300.0, 300.0)) == []
    if suffix == "png":
        header = out.read_bytes()[:26]
        assert (header[24], header[25]) == (16, 4)  # 16 bits, grey + alpha
        decoded = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)  # OpenCV expands it to BGRA
        np.testing.assert_array_equal(decoded[:, :, [0, 3]], stored)
        np.testing.assert_array_equal(decoded[:, :, 1], stored[:, :, 0])
        assert Image.open(out).info["dpi"] == pytest.approx((300, 300), abs=0.01)
    else:
        with tifffile.TiffFile(out) as tiff:
            page = tiff.pages[0]
            assert isinstance(page, tifffile.TiffPage)
            assert page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
            assert tuple(page.extrasamples) == (tifffile.EXTRASAMPLE.UNASSALPHA,)
            np.testing.assert_array_equal(page.asarray(), stored)
    np.testing.assert_array_equal(read_photo(out).pixels, stored)


def test_16_bit_grey_alpha_png_of_many_bands_and_odd_width(tmp_path: Path) -> None:
    """The encoder filters and deflates band by band: rows across band edges must survive."""
    rng = np.random.default_rng(6)
    stored = rng.integers(0, 65536, (700, 3, 2), dtype=np.uint16)
    stored[:, :, 0] = np.arange(700)[:, None] * 90  # smooth, as photos are
    write_photo(tmp_path / "tall.png", stored)
    decoded = cv2.imread(str(tmp_path / "tall.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded[:, :, [0, 3]], stored)


# --- notes and errors: say what happened, in rave's terms ----------------------------------


@pytest.mark.parametrize(
    ("fmt", "note", "scale"),
    [
        ("jpg", "float samples written as 8-bit: JPG holds only 8 bits", 255),
        ("webp", "float samples written as 8-bit: WEBP holds only 8 bits", 255),
        ("png", "float samples written as 16-bit: PNG holds no floats", 65535),
    ],
)
def test_float_samples_written_as_integers_say_so(
    tmp_path: Path, fmt: str, note: str, scale: int
) -> None:
    ramp = np.linspace(0.05, 0.95, W, dtype=np.float32)
    pixels = np.stack([np.tile(ramp, (H, 1))] * 3, axis=2) * np.float32([1.0, 0.8, 0.6])
    out = tmp_path / f"out.{fmt}"
    assert write_photo(out, pixels) == [note]
    decoded = read_photo(out).pixels
    assert decoded.dtype == (np.uint8 if scale == 255 else np.uint16)
    expected = np.round(pixels.astype(np.float64) * scale)
    tolerance = 0 if fmt == "png" else 8  # JPEG and WebP are lossy (WebP: 4:2:0 chroma)
    assert np.abs(decoded.astype(np.float64) - expected).max() <= tolerance


def test_16_bit_cmyk_tiff_is_refused_as_unsupported_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cmyk16.tif"
    tifffile.imwrite(path, np.zeros((H, W, 4), np.uint16), photometric="separated")
    with pytest.raises(PhotoError, match=r"cmyk16\.tif: 16-bit CMYK TIFF is not supported") as err:
        read_photo(path)
    assert "corrupt" not in str(err.value)


@pytest.mark.parametrize(
    ("suffix", "profile"),
    [("jpg", b"not a profile at all" * 10), ("png", b"abc")],
    ids=["garbage", "three-bytes"],
)
def test_unreadable_icc_profile_is_dropped_with_a_plain_note(
    tmp_path: Path, suffix: str, profile: bytes
) -> None:
    path = tmp_path / f"icc.{suffix}"
    Image.new("RGB", (W, H), (10, 20, 30)).save(path, icc_profile=profile)
    assert Image.open(path).info["icc_profile"] == profile  # the file holds it
    photo = read_photo(path)
    assert photo.icc_profile is None
    assert photo.notes == ["an unreadable ICC profile was dropped (not an ICC profile header)"]


def test_icc_profile_of_another_colour_space_is_named_when_dropped(
    tmp_path: Path, srgb_icc: bytes
) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (W, H), 40).save(path, icc_profile=srgb_icc)
    photo = read_photo(path)
    assert photo.icc_profile is None
    assert photo.notes == ["RGB ICC profile dropped: it does not describe GRAY pixels"]


def _png_header_claiming(path: Path, width: int, height: int) -> None:
    """A tiny grey PNG whose IHDR claims ``width`` x ``height`` pixels."""
    raw = zlib.compress(b"\x00" * 9 * 8)  # 8 rows of 8 grey pixels, filter 0
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", raw)
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("width", "height", "max_pixels", "expected"),
    [
        # past twice Pillow's own guard, which fires before rave reads the header
        (100_000, 100_000, None, "the image is 10000.0 MP, over the limit of 200.0 MP"),
        (20_000, 20_000, None, "20000x20000 is 400.0 MP, over the limit of 200.0 MP"),
        (64, 48, 100, "64x48 is 3,072 pixels, over the limit of 100 pixels"),
        (1020, 1000, 1_000_000, "1020x1000 is 1,020,000 pixels, over the limit of 1,000,000"),
    ],
    ids=["pillow-guard", "header", "small-limit", "rounding"],
)
def test_pixel_limit_message_is_rave_own_and_names_the_option(
    tmp_path: Path, width: int, height: int, max_pixels: int | None, expected: str
) -> None:
    path = tmp_path / "big.png"
    _png_header_claiming(path, width, height)
    options = {} if max_pixels is None else {"max_pixels": max_pixels}
    with pytest.raises(PhotoError) as caught:
        read_photo(path, **options)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "--max-pixels" in message and "max_pixels=" in message
    assert "400000000" not in message and " 0.0 MP" not in message


def test_16_bit_tiff_exif_note_only_when_something_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "plain16.tif"
    tifffile.imwrite(path, np.zeros((H, W, 3), np.uint16), photometric="rgb")
    photo = read_photo(path)
    assert _exif_dict(photo.exif).get(305) == "tifffile.py"  # Software only
    assert write_photo(tmp_path / "out.tif", photo.pixels, exif=photo.exif) == []

    camera = Image.Exif()
    camera[0x010F] = "TestCam"
    camera[0x8769] = {0x829D: 2.8}  # f-number, in the EXIF sub-IFD
    notes = write_photo(tmp_path / "camera.tif", photo.pixels, exif=camera.tobytes())
    assert len(notes) == 1 and "cannot embed the EXIF sub-IFD" in notes[0], notes
    with tifffile.TiffFile(tmp_path / "camera.tif") as tiff:
        assert tiff.pages[0].tags[271].value == "TestCam"  # type: ignore[union-attr]


# --- Pillow's warnings become notes, never lines on the terminal ---------------------------

_DAMAGED_EXIF = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f"  # IFD0 offset far past the end


@pytest.mark.parametrize(
    ("fmt", "dtype"), [("jpg", np.uint8), ("tif", np.uint8), ("tif", np.uint16)]
)
def test_damaged_exif_gives_notes_not_warnings(tmp_path: Path, fmt: str, dtype: type) -> None:
    path = tmp_path / "damaged.jpg"
    Image.new("RGB", (W, H), (90, 60, 30)).save(path, exif=_DAMAGED_EXIF)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escapes fails the test
        photo = read_photo(path)
        pixels = photo.pixels.astype(dtype) * (257 if dtype == np.uint16 else 1)
        notes = write_photo(tmp_path / f"out.{fmt}", pixels, exif=photo.exif)
    assert any("Corrupt EXIF data" in note for note in photo.notes), photo.notes
    if fmt == "tif":
        assert any(n.startswith("EXIF damaged") and "Corrupt EXIF" in n for n in notes), notes
    assert read_photo(tmp_path / f"out.{fmt}").pixels.shape == (H, W, 3)


# --- WebP: lossless stays lossless ---------------------------------------------------------


def _webp_image_chunk(path: Path) -> bytes:
    """The fourcc of the file's first image chunk, found by scanning for it."""
    data = path.read_bytes()
    found = {kind: data.find(kind, 12) for kind in (b"VP8L", b"VP8 ")}
    present = {kind: at for kind, at in found.items() if at >= 0}
    return min(present, key=lambda kind: present[kind])


@pytest.mark.parametrize(
    "options",
    [{}, {"exif": b"Exif\x00\x00" + Image.Exif().tobytes()[6:]}, {"save_all": True}],
    ids=["simple", "extended", "animated"],
)
@pytest.mark.parametrize("lossless", [True, False])
def test_lossless_webp_stays_lossless(tmp_path: Path, lossless: bool, options: dict) -> None:
    rng = np.random.default_rng(8)
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    rgba[:4, :4, 3] = 0  # transparent pixels keep their colour in a lossless file
    image = Image.fromarray(rgba)
    extra = {"append_images": [Image.fromarray(rgba[::-1].copy())]} if "save_all" in options else {}
    path = tmp_path / "in.webp"
    image.save(path, lossless=lossless, exact=True, quality=90, **options, **extra)
    assert _webp_image_chunk(path) == (b"VP8L" if lossless else b"VP8 ")

    photo = read_photo(path)
    assert photo.lossless is lossless

    out = tmp_path / "out.webp"
    write_photo(out, photo.pixels, lossless=photo.lossless, quality=90)
    assert _webp_image_chunk(out) == (b"VP8L" if lossless else b"VP8 ")
    if lossless:
        np.testing.assert_array_equal(read_photo(out).pixels, photo.pixels)
        if "save_all" not in options:  # an animation's frames come composited on black
            np.testing.assert_array_equal(photo.pixels, rgba)


def test_lossless_flag_is_ignored_by_other_formats(tmp_path: Path) -> None:
    write_photo(tmp_path / "out.jpg", np.zeros((H, W, 3), np.uint8), lossless=True)
    assert Image.open(tmp_path / "out.jpg").format == "JPEG"
