"""Photo files of less common layouts and their metadata: float and MINISWHITE TIFF, colour-key
and grey + alpha transparency, extra channels, lossless WebP, and the notes and errors the
reader and writer give for them.

References are independent of rave.io: the pixels written by tifffile, OpenCV or Pillow,
transformed with numpy (``np.rot90`` for orientation 6, ``65535 - v`` for MINISWHITE), and
metadata read back by tifffile or Pillow.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from rave.io import read_photo, write_photo

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
