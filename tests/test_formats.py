"""Camera formats and what a photographer keeps: HEIC, RAW (DNG), TIFF previews, float TIFF,
XMP and dpi, the one suffix set and folder lister.

DNGs are built here with tifffile (a TIFF with CFA tags) and decoded by LibRaw; results are
read back with Pillow, tifffile and pillow-heif, not with rave.io.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner, Result
from PIL import Image

from rave.cli import main
from rave.io import read_photo
from rave.io.formats import IMAGE_SUFFIXES, list_image_files

H, W = 32, 48
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
    b'22-rdf-syntax-ns#"><rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    b'xmp:Rating="4"/></rdf:RDF></x:xmpmeta>'
)


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(checkpoint: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["enhance", *args, "--model", str(checkpoint), "--device", "cpu"]
    )


def _dim(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.05, 0.4, W)[None, :, None] * np.linspace(0.5, 1.0, H)[:, None, None]
    return np.clip(ramp * np.array([1.0, 0.8, 0.6]) + rng.normal(0, 0.02, (H, W, 3)), 0, 1)


def _make_dng(path: Path, *, preview_first: bool = False, seed: int = 0) -> None:
    """A tiny Bayer (RGGB) DNG, 12-bit data in 16-bit samples, optionally behind a preview."""
    rng = np.random.default_rng(seed)
    cfa = (rng.random((H, W)) * 3000 + 500).astype(np.uint16)
    dng = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "rave test camera", True),  # UniqueCameraModel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 2, 1, 1, 1, 2), True),  # AsShotNeutral: camera white balance
        (271, "s", 0, "RaveCam", True),  # Make
    ]
    bayer = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50717, "I", 1, 4095, True),  # WhiteLevel
    ]
    with tifffile.TiffWriter(path) as tiff:
        if preview_first:
            preview = np.zeros((6, 8, 3), np.uint8)
            tiff.write(
                preview, photometric="rgb", subfiletype=1, subifds=1, extratags=dng, metadata=None
            )
            tiff.write(cfa, photometric=32803, extratags=bayer, metadata=None)
        else:
            tiff.write(cfa, photometric=32803, extratags=dng + bayer, metadata=None)


# --- RAW ----------------------------------------------------------------------------------


@pytest.mark.parametrize("preview_first", [False, True])
def test_dng_decoded_by_libraw_at_16_bit(work: Path, preview_first: bool) -> None:
    pytest.importorskip("rawpy")
    _make_dng(work / "a.dng", preview_first=preview_first)
    photo = read_photo(work / "a.dng")
    assert photo.pixels.shape == (H, W, 3)  # the photo, not the 8x6 preview
    assert photo.pixels.dtype == np.uint16
    # 12-bit sensor data spread over 16 bits: far more than 256 distinct levels
    assert len(np.unique(photo.pixels[..., 1])) > 1000
    # camera white balance (AsShotNeutral 0.5, 1, 0.5) doubles red and blue against green
    red, green, _ = photo.pixels.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert red > 1.3 * green


def test_dng_enhanced_to_16_bit_tiff_with_exif(work: Path, checkpoint: Path) -> None:
    pytest.importorskip("rawpy")
    _make_dng(work / "IMG_1.DNG")
    result = _run(checkpoint, "IMG_1.DNG")
    assert result.exit_code == 0, result.output
    out = work / "enhanced" / "IMG_1.tif"
    pixels = tifffile.imread(out)
    assert pixels.shape == (H, W, 3) and pixels.dtype == np.uint16
    assert len(np.unique(pixels[..., 1])) > 1000
    with tifffile.TiffFile(out) as tiff:
        assert tiff.pages[0].tags["Make"].value == "RaveCam"


def test_tiff_with_preview_first_enhances_the_full_image(work: Path, checkpoint: Path) -> None:
    photo = np.round(_dim(3) * 65535).astype(np.uint16)
    with tifffile.TiffWriter(work / "scan.tif") as tiff:
        tiff.write(np.zeros((6, 8, 3), np.uint8), photometric="rgb", subfiletype=1, subifds=1)
        tiff.write(photo, photometric="rgb")
    result = _run(checkpoint, "scan.tif")
    assert result.exit_code == 0, result.output
    assert "preview" in result.stderr
    out = tifffile.imread(work / "enhanced" / "scan.tif")
    assert out.shape == (H, W, 3) and out.dtype == np.uint16


# --- float TIFF ------------------------------------------------------------------------------


def test_float_tiff_read_and_written_as_float(work: Path, checkpoint: Path) -> None:
    tifffile.imwrite(work / "hdr.tif", _dim(4).astype(np.float32), photometric="rgb")
    result = _run(checkpoint, "hdr.tif")
    assert result.exit_code == 0, result.output
    out = tifffile.imread(work / "enhanced" / "hdr.tif")
    assert out.dtype == np.float32 and out.shape == (H, W, 3)
    assert out.min() >= 0 and out.max() <= 1
    assert out.mean() > _dim(4).mean()  # brightened


@pytest.mark.parametrize("name", ["upload", "misnamed.dat", "big.tif"])
def test_float_tiff_recognised_by_content_not_name(work: Path, name: str) -> None:
    """Uploads are stored without a suffix (rave serve): a float TIFF is a TIFF by its
    signature, BigTIFF included."""
    pixels = _dim(6).astype(np.float32)
    tifffile.imwrite(work / name, pixels, photometric="rgb", bigtiff=name == "big.tif")
    photo = read_photo(work / name)
    assert photo.format == "tif" and photo.pixels.dtype == np.float32
    np.testing.assert_array_equal(photo.pixels, pixels)


def test_scene_referred_float_tiff_gets_one_clear_line(work: Path, checkpoint: Path) -> None:
    tifffile.imwrite(work / "hdr.tif", (_dim(5) * 8).astype(np.float32), photometric="rgb")
    result = _run(checkpoint, "hdr.tif")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hdr.tif: float TIFF values span" in errors[0]
    assert "not an image file" not in result.output


# --- HEIC --------------------------------------------------------------------------------


def test_heic_read_upright_with_metadata_and_written_as_heic(work: Path, checkpoint: Path) -> None:
    pytest.importorskip("pillow_heif")
    from rave.io.heif import can_write_heif, register_heif

    register_heif()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    exif[0x010F] = "PhoneCam"
    Image.fromarray(np.round(_dim(6) * 255).astype(np.uint8)).save(
        work / "IMG_2.HEIC", quality=95, exif=exif.tobytes(), xmp=XMP
    )
    photo = read_photo(work / "IMG_2.HEIC")
    assert photo.pixels.shape == (W, H, 3)  # upright: the 90-degree turn applied once
    assert photo.xmp is not None and b'xmp:Rating="4"' in photo.xmp
    result = _run(checkpoint, "IMG_2.HEIC")
    assert result.exit_code == 0, result.output
    name = "IMG_2.HEIC" if can_write_heif() else "IMG_2.jpg"
    with Image.open(work / "enhanced" / name) as out:
        assert out.size == (H, W)
        assert out.getexif().get(0x010F) == "PhoneCam"
        assert out.getexif().get(0x0112, 1) == 1
        assert b'xmp:Rating="4"' in out.info["xmp"]


# --- XMP and dpi -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.jpg", "a.png", "a.tif", "a16.png", "a16.tif"])
def test_xmp_and_dpi_kept(work: Path, checkpoint: Path, name: str) -> None:
    from rave.io import write_photo

    scale = 65535 if "16" in name else 255
    pixels = np.round(_dim(7) * scale).astype(np.uint16 if "16" in name else np.uint8)
    write_photo(work / name, pixels, xmp=XMP, dpi=(300.0, 300.0))
    result = _run(checkpoint, name)
    assert result.exit_code == 0, result.output
    with Image.open(work / "enhanced" / name) as out:
        xmp = out.info.get("xmp") or out.info.get("XML:com.adobe.xmp") or out.tag_v2.get(700)
        assert xmp is not None and b'xmp:Rating="4"' in (
            xmp if isinstance(xmp, bytes) else xmp.encode()
        )
        assert out.info["dpi"] == pytest.approx((300, 300), abs=0.01)


# --- one suffix set, one lister ------------------------------------------------------------


def test_folder_scan_finds_every_supported_suffix_in_any_case(work: Path) -> None:
    for name in ("a.JPG", "b.Png", "c.HEIC", "d.dng", "e.CR3", "f.avif", ".hidden.jpg", "g.txt"):
        (work / name).write_bytes(b"x")
    names = [path.name for path in list_image_files(work)]
    assert names == ["a.JPG", "b.Png", "c.HEIC", "d.dng", "e.CR3", "f.avif"]
    assert {".heic", ".dng", ".nef", ".arw", ".raf", ".orf", ".rw2", ".cr2"} <= IMAGE_SUFFIXES


def test_every_folder_scan_uses_the_one_lister(work: Path) -> None:
    from rave.evaluation.runner import list_images as evaluation_list
    from rave.guidance.residual import list_image_files as residual_list
    from rave.training.data import list_images as training_list

    for name in ("a.JPG", "b.heic", "c.nef", "d.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(work / "d.png")
        (work / name).touch()
    expected = [path.name for path in list_image_files(work)]
    assert [p.name for p in training_list(work)] == expected
    assert [p.name for p in residual_list(work)] == expected
    assert [p.name for p in evaluation_list(work).values()] == expected


def test_folder_scan_reports_unreadable_and_left_out_folders(work: Path, monkeypatch) -> None:
    import os

    from rave.io.formats import scan_image_folder

    for relative in ("top.png", "trip/a.jpg", "trip/day/b.jpg", "locked/c.jpg", ".hid/d.jpg"):
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        (work / relative).write_bytes(b"x")
    (work / "out").mkdir()
    flat = scan_image_folder(work, exclude=work / "out")
    assert [p.name for p in flat.files] == ["top.png"]
    assert sorted(p.name for p in flat.left_out) == ["locked", "trip"]  # not hidden, not out
    assert flat.unreadable == []
    real_scandir = os.scandir

    def scandir(path):  # as if "locked" had mode 000 (tests run as root, who reads anyway)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    deep = scan_image_folder(work, recursive=True)
    assert [p.relative_to(work).as_posix() for p in deep.files] == [
        "top.png",
        "trip/a.jpg",
        "trip/day/b.jpg",
    ]
    assert [Path(err.filename).name for err in deep.unreadable] == ["locked"]
    assert deep.left_out == []
    assert list_image_files(work, recursive=True) == deep.files


def test_named_file_of_an_unsupported_format_says_which_package_reads_it(
    work: Path, checkpoint: Path
) -> None:
    (work / "scene.exr").write_bytes(b"v/1\x01not really")
    result = _run(checkpoint, "scene.exr")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "OpenEXR" in errors[0], errors


def test_missing_raw_reader_names_the_extra(work: Path, monkeypatch) -> None:
    import importlib.util

    from rave.io import PhotoError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rawpy" else real(name, *a)
    )
    _make_dng(work / "a.nef")
    with pytest.raises(
        PhotoError, match=r"a\.nef: camera RAW files need rawpy: .*rave-enhance\[raw\]"
    ):
        read_photo(work / "a.nef")


def test_heic_without_encoder_written_as_jpeg_with_a_note(
    work: Path, checkpoint: Path, monkeypatch
) -> None:
    pytest.importorskip("pillow_heif")
    import rave.io.heif
    import rave.io.read
    from rave.io.heif import register_heif

    register_heif()
    Image.fromarray(np.round(_dim(8) * 255).astype(np.uint8)).save(work / "IMG_3.heic")
    monkeypatch.setattr(rave.io.heif, "can_write_heif", lambda: False)  # decode-only libheif
    monkeypatch.setattr(rave.io.read, "can_write_heif", lambda: False)
    result = _run(checkpoint, "IMG_3.heic")
    assert result.exit_code == 0, result.output
    assert "HEIC input written as JPEG" in result.stderr
    with Image.open(work / "enhanced" / "IMG_3.jpg") as out:
        assert out.format == "JPEG" and out.size == (W, H)


def test_format_change_noted_only_when_rave_chose_the_format(work: Path, checkpoint: Path) -> None:
    Image.fromarray(np.round(_dim(9) * 255).astype(np.uint8)).save(work / "anim.gif")
    result = _run(checkpoint, "anim.gif")
    assert result.exit_code == 0, result.output
    assert "note: anim.gif: GIF input written as PNG (rave does not write GIF)" in result.stderr
    assert (work / "enhanced" / "anim.png").is_file()
    result = _run(checkpoint, "anim.gif", "--format", "jpg", "-o", "as_jpg")
    assert result.exit_code == 0, result.output
    assert "written as" not in result.stderr  # the user chose JPEG: nothing to explain
    assert (work / "as_jpg" / "anim.jpg").is_file()
    # The Python API writes what the output's suffix says, with no note about it either.
    import rave

    notes = rave.Enhancer(checkpoint).enhance_file(work / "anim.gif", work / "api.webp")
    assert not any("written as" in note for note in notes), notes


def test_default_output_note_names_the_change_for_formats_rave_does_not_write(
    monkeypatch,
) -> None:
    import rave.io.heif
    from rave.io.formats import default_output_note

    assert default_output_note(".GIF") == "GIF input written as PNG (rave does not write GIF)"
    assert default_output_note(".avif") == "AVIF input written as PNG (rave does not write AVIF)"
    for own_format in (".jpg", ".JPEG", ".png", ".tif", ".webp", ".bmp", ".dng", ""):
        assert default_output_note(own_format) is None, own_format
    monkeypatch.setattr(rave.io.heif, "can_write_heif", lambda: False)
    assert default_output_note(".heic") == "HEIC input written as JPEG (no HEVC encoder in libheif)"


def test_heic_recognised_by_content_without_its_suffix(work: Path) -> None:
    """rave serve keeps uploads as 'upload': a HEIC photo must be read from its bytes alone.

    In a fresh process, so that no earlier test has taught Pillow HEIF already."""
    import subprocess
    import sys

    pytest.importorskip("pillow_heif")
    from rave.io.heif import register_heif

    register_heif()
    Image.fromarray(np.round(_dim(10) * 255).astype(np.uint8)).save(work / "IMG_4.heic")
    (work / "IMG_4.heic").rename(work / "upload")
    code = (
        "from rave.io import read_photo; p = read_photo('upload'); print(p.format, p.pixels.shape)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("(")[0].strip() == "heic"
    assert f"({H}, {W}, 3)" in result.stdout
