"""Photo files: orientation, bit depth, ICC/EXIF, modes, bad files, atomic writes.

References are independent of rave.io: Pillow's ``ImageOps.exif_transpose`` for
orientation, OpenCV and tifffile for 16-bit pixels, Pillow for metadata read-back.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageFile, ImageOps

import rave.io.read as read_module
from rave.io import PhotoError, read_photo, write_photo
from rave.io.metadata import (
    exif_orientation,
    insert_png_chunks,
    reset_exif_orientation,
)

H, W = 30, 40  # non-square so that a transposition shows in the shape


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    exif[0x0132] = "2024:05:01 12:00:00"  # DateTime
    exif[0x8769] = {0x9003: "2024:05:01 12:00:00", 0x829D: 2.8}  # Exif IFD: date, f-number
    return exif


def _rgb8(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _rgb16(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)


def _exif_tags(exif_bytes: bytes) -> tuple[dict, dict]:
    exif = Image.Exif()
    exif.load(exif_bytes)
    return dict(exif), dict(exif.get_ifd(0x8769))


# --- orientation -------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / "o.png"
    Image.fromarray(_rgb8()).save(path, exif=_exif(orientation))
    photo = read_photo(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(photo.pixels, expected)
    assert exif_orientation(photo.exif) == 1


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "I;16"])
def test_decoded_pixels_are_pillows_own_in_a_writeable_array(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copied out of Pillow in bands of rows (here 7, so that the last band is partial):
    the same pixels as np.asarray, but writeable, so that rave enhance works in place."""
    monkeypatch.setattr(read_module, "_COPY_BAND_ROWS", 7)
    source = _rgb16() if mode == "I;16" else _rgb8()
    image = Image.fromarray(source[:, :, 0]) if mode == "I;16" else Image.fromarray(source)
    path = tmp_path / ("p.png" if mode in ("I;16", "RGBA") else "p.jpg")
    image.convert(mode).save(path)
    photo = read_photo(path)
    np.testing.assert_array_equal(photo.pixels, np.asarray(Image.open(path)))
    assert photo.pixels.flags.writeable and photo.pixels.flags.c_contiguous


def test_orientation_6_on_jpeg_transposes_and_resets_tag(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    Image.fromarray(_rgb8()).save(path, exif=_exif(6), quality=95)
    photo = read_photo(path)
    decoded = np.asarray(Image.open(path))  # stored pixels, as the sensor saw them
    assert photo.pixels.shape == (W, H, 3)
    np.testing.assert_array_equal(photo.pixels, np.rot90(decoded, k=-1))  # 90 deg clockwise
    ifd0, exif_ifd = _exif_tags(photo.exif)
    assert ifd0[0x0112] == 1
    assert ifd0[0x010F] == "TestCam"
    assert exif_ifd[0x9003] == "2024:05:01 12:00:00"


def test_orientation_applied_to_16_bit_png(tmp_path: Path) -> None:
    pixels = _rgb16()
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    path = tmp_path / "o16.png"
    path.write_bytes(insert_png_chunks(encoded.tobytes(), exif=_exif(8).tobytes()))
    photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16
    np.testing.assert_array_equal(photo.pixels, np.rot90(pixels, k=1))  # counter-clockwise


def test_reset_exif_orientation_keeps_every_other_byte() -> None:
    original = _exif(6).tobytes()
    patched = reset_exif_orientation(original)
    assert len(patched) == len(original)
    assert sum(a != b for a, b in zip(original, patched, strict=True)) == 1
    ifd0, exif_ifd = _exif_tags(patched)
    assert ifd0[0x0112] == 1 and ifd0[0x010F] == "TestCam"
    assert exif_ifd[0x829D] == 2.8


def test_png_chunks_are_read_back_by_pillow(srgb_icc: bytes) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_rgb8()).save(buffer, format="PNG")
    patched = insert_png_chunks(buffer.getvalue(), icc_profile=srgb_icc, exif=_exif(3).tobytes())
    image = Image.open(io.BytesIO(patched))
    image.load()  # CRCs are checked while decoding
    assert image.info["icc_profile"] == srgb_icc
    assert image.getexif()[0x0112] == 3


# --- bit depth and metadata round trips -----------------------------------------------


@pytest.mark.parametrize("name", ["in16.png", "Été à Zürich 写真.png"])
def test_16_bit_png_read_exactly(tmp_path: Path, name: str) -> None:
    """Also under a non-ASCII name: OpenCV decodes 16-bit photos from their path."""
    pixels = _rgb16()
    path = tmp_path / name
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(encoded.tobytes())
    photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16 and photo.format == "png"
    np.testing.assert_array_equal(photo.pixels, pixels)


def test_truncated_16_bit_png_is_one_clear_error(tmp_path: Path) -> None:
    ok, encoded = cv2.imencode(".png", _rgb16())
    assert ok
    path = tmp_path / "cut16.png"
    path.write_bytes(encoded.tobytes()[: encoded.size // 2])
    with pytest.raises(PhotoError, match=r"cut16\.png.*corrupt or truncated"):
        read_photo(path)


def test_16_bit_tiff_read_exactly_with_icc(tmp_path: Path, srgb_icc: bytes) -> None:
    pixels = _rgb16(1)
    path = tmp_path / "in16.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", iccprofile=srgb_icc)
    photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16 and photo.format == "tif"
    np.testing.assert_array_equal(photo.pixels, pixels)
    assert photo.icc_profile == srgb_icc


@pytest.mark.parametrize(
    ("channels", "options"),
    [
        (3, {"compression": "zlib", "predictor": True}),
        (4, {"extrasamples": ("unassalpha",)}),
        (1, {}),
    ],
    ids=["deflate-predictor", "rgba", "grey"],
)
def test_16_bit_tiff_layouts_read_exactly(tmp_path: Path, channels: int, options: dict) -> None:
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65536, (13, 17, channels), dtype=np.uint16)
    if channels == 1:
        pixels = pixels[:, :, 0]
    path = tmp_path / "in16.tif"
    photometric = "minisblack" if channels == 1 else "rgb"
    tifffile.imwrite(path, pixels, photometric=photometric, **options)
    photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16
    np.testing.assert_array_equal(photo.pixels, pixels)
    # decoded by tifffile (one copy of the pixels), not OpenCV (the file and two copies)
    np.testing.assert_array_equal(read_module._decode_16_bit_tiff(path), pixels)


def test_16_bit_grey_png_read_exactly(tmp_path: Path) -> None:
    grey = _rgb16(2)[:, :, 0]
    path = tmp_path / "grey16.png"
    cv2.imwrite(str(path), grey)
    photo = read_photo(path)
    assert photo.pixels.dtype == np.uint16
    np.testing.assert_array_equal(photo.pixels, grey)


def test_write_16_bit_png_keeps_depth_icc_and_exif(tmp_path: Path, srgb_icc: bytes) -> None:
    pixels = _rgb16(3)
    path = tmp_path / "out16.png"
    exif = reset_exif_orientation(_exif(6).tobytes())
    write_photo(path, pixels, icc_profile=srgb_icc, exif=exif)
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), pixels)
    image = Image.open(path)
    assert image.info["icc_profile"] == srgb_icc
    assert image.getexif()[0x010F] == "TestCam"


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("writeable", [True, False])
def test_write_16_bit_png_leaves_the_callers_array_as_it_was(
    tmp_path: Path, channels: int, writeable: bool
) -> None:
    """The encoder swaps channels in place to save memory; the caller must not see it."""
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65536, (9, 11, channels), dtype=np.uint16)
    original = pixels.copy()
    pixels.flags.writeable = writeable
    write_photo(tmp_path / "a.png", pixels)
    np.testing.assert_array_equal(pixels, original)
    decoded = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded[:, :, [2, 1, 0, 3][:channels]], original)


def test_write_16_bit_tiff_keeps_depth_icc_and_camera_tags(tmp_path: Path, srgb_icc: bytes) -> None:
    pixels = _rgb16(4)
    path = tmp_path / "out16.tif"
    write_photo(path, pixels, icc_profile=srgb_icc, exif=_exif(1).tobytes())
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        np.testing.assert_array_equal(page.asarray(), pixels)
        assert page.tags[34675].value == srgb_icc
        assert page.tags[271].value == "TestCam"
        assert page.tags[306].value == "2024:05:01 12:00:00"
        # Deflate with horizontal differencing, as photo editors write 16-bit TIFF ...
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.predictor == tifffile.PREDICTOR.HORIZONTAL
    # ... which libtiff (through OpenCV) reads back exactly too.
    import cv2

    libtiff = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(libtiff[:, :, ::-1], pixels)


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tif"])
def test_write_8_bit_keeps_icc_and_exif(tmp_path: Path, fmt: str, srgb_icc: bytes) -> None:
    path = tmp_path / f"out.{fmt}"
    exif = reset_exif_orientation(_exif(6).tobytes())
    write_photo(path, _rgb8(), icc_profile=srgb_icc, exif=exif, quality=90)
    image = Image.open(path)
    assert image.info["icc_profile"] == srgb_icc
    exif_read = image.getexif()
    assert exif_read[0x010F] == "TestCam"
    assert exif_read.get(0x0112, 1) == 1
    assert exif_read.get_ifd(0x8769)[0x9003] == "2024:05:01 12:00:00"


def test_jpeg_quality_option_changes_file(tmp_path: Path) -> None:
    pixels = _rgb8()
    write_photo(tmp_path / "q50.jpg", pixels, quality=50)
    write_photo(tmp_path / "q95.jpg", pixels, quality=95)
    assert (tmp_path / "q50.jpg").stat().st_size < (tmp_path / "q95.jpg").stat().st_size
    q95 = np.asarray(Image.open(tmp_path / "q95.jpg"), dtype=float)
    assert np.abs(q95 - pixels).mean() < 12  # noise is hard for JPEG; still close


def test_lossless_8_bit_round_trip_of_every_layout(tmp_path: Path) -> None:
    rgb = _rgb8()
    for name, pixels in {
        "grey": rgb[:, :, 0],
        "grey_alpha": rgb[:, :, :2],
        "rgb": rgb,
        "rgba": np.dstack([rgb, rgb[:, :, :1]]),
    }.items():
        path = tmp_path / f"{name}.png"
        write_photo(path, pixels)
        np.testing.assert_array_equal(read_photo(path).pixels, pixels, err_msg=name)


def test_alpha_dropped_for_jpeg_with_note(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb8(), np.full((H, W, 1), 7, np.uint8)])
    notes = write_photo(tmp_path / "a.jpg", rgba)
    assert any("alpha" in note for note in notes)
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"


def test_palette_and_cmyk_converted_with_note(tmp_path: Path) -> None:
    rgb = Image.fromarray(_rgb8())
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    rgb.convert("CMYK").save(tmp_path / "c.jpg")
    palette = read_photo(tmp_path / "p.png")
    assert palette.pixels.shape == (H, W, 3)
    assert any("palette" in note for note in palette.notes)
    cmyk = read_photo(tmp_path / "c.jpg")
    assert cmyk.pixels.shape == (H, W, 3)
    assert any("CMYK" in note for note in cmyk.notes)


def test_cmyk_profile_not_attached_to_rgb_pixels(tmp_path: Path) -> None:
    fake_cmyk_profile = b"\x00" * 16 + b"CMYK" + b"\x00" * 108
    Image.fromarray(_rgb8()).convert("CMYK").save(tmp_path / "c.jpg", icc_profile=fake_cmyk_profile)
    photo = read_photo(tmp_path / "c.jpg")
    assert photo.icc_profile is None


# --- bad files ---------------------------------------------------------------------------


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width x height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr[4:]
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    path.write_bytes(bytes(data))


def _bad_files(folder: Path) -> dict[str, Path]:
    good = io.BytesIO()
    Image.fromarray(_rgb8()).save(good, format="JPEG")
    png = io.BytesIO()
    Image.fromarray(_rgb8()).save(png, format="PNG")
    files = {
        "empty": folder / "empty.jpg",
        "text": folder / "notes.jpg",
        "truncated_jpeg": folder / "cut.jpg",
        "truncated_png": folder / "cut.png",
        "directory": folder / "folder.jpg",
        "dangling": folder / "gone.png",
        "bomb": folder / "bomb.png",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a photo\n")
    files["truncated_jpeg"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    files["truncated_png"].write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    files["directory"].mkdir()
    os.symlink(folder / "does-not-exist.png", files["dangling"])
    _bomb_png(files["bomb"], 30_000, 30_000)
    return files


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("empty", "empty file"),
        ("text", "not an image"),
        ("truncated_jpeg", "truncated"),
        ("truncated_png", "truncated"),
        ("directory", "directory"),
        ("dangling", "broken symbolic link"),
        ("bomb", "decompression bomb"),
    ],
)
def test_bad_file_gives_one_line_naming_it(tmp_path: Path, kind: str, reason: str) -> None:
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(PhotoError) as caught:
        read_photo(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert reason in message


def test_pixel_limit_checked_before_decoding(tmp_path: Path, monkeypatch) -> None:
    Image.fromarray(_rgb8()).save(tmp_path / "small.png")

    def no_decoding(self):
        raise AssertionError("pixels decoded despite the limit")

    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(PhotoError, match=r"40x30 is 1,200 pixels, over the limit of 1,199 pixels"):
        read_photo(tmp_path / "small.png", max_pixels=H * W - 1)
    monkeypatch.setattr(ImageFile.ImageFile, "load", real_load)
    assert read_photo(tmp_path / "small.png", max_pixels=H * W).pixels.shape == (H, W, 3)


# --- atomic writes -----------------------------------------------------------------------


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half a photo")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_photo(target, _rgb8())
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_write_creates_folders_and_leaves_only_the_photo(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.jpg"
    write_photo(target, _rgb8())
    assert [p.name for p in target.parent.iterdir()] == ["out.jpg"]
    assert Image.open(target).format == "JPEG"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_pillow_guard_is_never_stricter_than_max_pixels(tmp_path: Path, monkeypatch) -> None:
    # Pillow refuses images over twice its own global limit; read_photo's limit decides.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "large.png"
    Image.new("RGB", (20, 20), (10, 20, 30)).save(path)  # 400 pixels > 2 x 100
    assert read_photo(path, max_pixels=1000).pixels.shape == (20, 20, 3)
    with pytest.raises(PhotoError, match=r"large\.png: .*over the"):
        read_photo(path, max_pixels=300)
