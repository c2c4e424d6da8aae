"""``rave enhance``: naming, formats, metadata, bad files in a batch, skip/overwrite rules.

Pixel references are the network applied directly to the whole float image
(``apply_light_map(x, net(x))``) and quantised here; files are read back with Pillow,
OpenCV and tifffile rather than with rave.io.
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
import torch
from click.testing import CliRunner, Result
from PIL import Image, ImageCms

from rave.cli import main
from rave.io.provenance import MANIFEST_NAME
from rave.network.enhancer import EnhancementNet, apply_light_map

H, W = 30, 40


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(checkpoint: Path | None, *args: str) -> Result:
    model = ["--model", str(checkpoint)] if checkpoint is not None else []
    return CliRunner().invoke(main, ["enhance", *args, *model, "--device", "cpu"])


def _dim(seed: int = 0, channels: int = 3) -> np.ndarray:
    """A dim photo in [0, 1]: smooth ramp plus noise, (H, W, channels) float64."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.05, 0.4, W)[None, :, None] * np.linspace(0.5, 1.0, H)[:, None, None]
    tint = np.array([1.0, 0.8, 0.6, 0.9])[:channels]
    return np.clip(ramp * tint + rng.normal(0, 0.02, (H, W, channels)), 0, 1)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255).astype(np.uint8)


def _u16(x: np.ndarray) -> np.ndarray:
    return np.round(x * 65535).astype(np.uint16)


@torch.no_grad()
def _reference(net: EnhancementNet, unit_rgb: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(unit_rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    return apply_light_map(x, net(x))[0].permute(1, 2, 0).numpy().astype(np.float64)


def _assert_quantised(result: np.ndarray, reference: np.ndarray, levels: int) -> None:
    difference = np.abs(result.astype(np.float64) - np.round(reference * levels))
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.01


def _listdir(folder: str | Path) -> list[str]:
    """A folder's entries, temporaries included, minus rave's record of what made each result."""
    return [name for name in os.listdir(folder) if name != MANIFEST_NAME]


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"
    exif[0x8769] = {0x9003: "2024:05:01 12:00:00"}
    return exif


# --- pixels, formats and metadata ---------------------------------------------------------


def test_png_result_matches_network_and_leaves_no_temporaries(
    work: Path, checkpoint: Path, net: EnhancementNet
) -> None:
    pixels = _u8(_dim())
    Image.fromarray(pixels).save("photo.png")
    result = _run(checkpoint, "photo.png")
    assert result.exit_code == 0, result.output
    assert "1 enhanced, 0 skipped, 0 failed" in result.stdout
    assert _listdir("enhanced") == ["photo.png"]
    out = np.asarray(Image.open("enhanced/photo.png"))
    _assert_quantised(out, _reference(net, pixels / 255), 255)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_in_16_bit_out(
    work: Path, checkpoint: Path, net: EnhancementNet, suffix: str
) -> None:
    pixels = _u16(_dim(1))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if suffix == ".png":
        cv2.imwrite(f"deep{suffix}", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    else:
        tifffile.imwrite(f"deep{suffix}", pixels, photometric="rgb", iccprofile=icc)
    result = _run(checkpoint, f"deep{suffix}")
    assert result.exit_code == 0, result.output
    out = cv2.cvtColor(
        cv2.imread(f"enhanced/deep{suffix}", cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB
    )
    assert out.dtype == np.uint16
    reference = _reference(net, pixels / 65535)
    _assert_quantised(out, reference, 65535)
    assert np.abs(out - np.round(reference * 255) * 257).max() > 50  # not via 8 bits
    if suffix == ".tif":
        with tifffile.TiffFile(f"enhanced/deep{suffix}") as tiff:
            assert tiff.pages[0].tags[34675].value == icc


def test_jpeg_upright_with_icc_and_exif(work: Path, checkpoint: Path, net: EnhancementNet) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_u8(_dim(2))).save("IMG_1.JPG", exif=_exif(6), icc_profile=icc, quality=98)
    result = _run(checkpoint, "IMG_1.JPG")
    assert result.exit_code == 0, result.output
    out = Image.open("enhanced/IMG_1.JPG")  # the input's own suffix is kept
    assert out.format == "JPEG" and out.size == (H, W)  # turned upright: portrait
    assert out.info["icc_profile"] == icc
    exif = out.getexif()
    assert exif.get(0x0112) == 1 and exif[0x010F] == "TestCam"
    assert exif.get_ifd(0x8769)[0x9003] == "2024:05:01 12:00:00"
    upright = np.rot90(np.asarray(Image.open("IMG_1.JPG")), k=-1) / 255
    expected = np.round(_reference(net, upright) * 255)
    assert np.abs(np.asarray(out, dtype=np.float64) - expected).mean() < 2  # JPEG noise only


def test_alpha_untouched_and_grey_stays_grey(work: Path, checkpoint: Path) -> None:
    rgba = _u8(_dim(3, channels=4))
    Image.fromarray(rgba).save("logo.png")
    Image.fromarray(_u8(_dim(4))[:, :, 0]).save("grey.png")
    result = _run(checkpoint, "logo.png", "grey.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open("enhanced/logo.png"))
    assert out.shape == (H, W, 4)
    np.testing.assert_array_equal(out[:, :, 3], rgba[:, :, 3])
    assert Image.open("enhanced/grey.png").mode == "L"


def test_palette_converted_with_note(work: Path, checkpoint: Path) -> None:
    Image.fromarray(_u8(_dim(5))).convert("P").save("gif-like.png")
    result = _run(checkpoint, "gif-like.png")
    assert result.exit_code == 0, result.output
    assert Image.open("enhanced/gif-like.png").mode == "RGB"
    assert "note: gif-like.png: palette image converted to RGB" in result.stderr


def test_format_option_and_alpha_to_jpeg(work: Path, checkpoint: Path) -> None:
    Image.fromarray(_u8(_dim(6, channels=4))).save("a.png")
    result = _run(checkpoint, "a.png", "--format", "jpg", "--quality", "80")
    assert result.exit_code == 0, result.output
    out = Image.open("enhanced/a.jpg")
    assert out.format == "JPEG" and out.mode == "RGB"
    assert "alpha channel dropped" in result.stderr


# --- bad files in a batch -------------------------------------------------------------


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims ``width x height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_bad_files_each_one_line_rest_of_batch_done(work: Path, checkpoint: Path) -> None:
    folder = work / "card"
    folder.mkdir()
    Image.fromarray(_u8(_dim(7))).save(folder / "good1.jpg")
    Image.fromarray(_u8(_dim(8))).save(folder / "good2.png")
    jpeg = (folder / "good1.jpg").read_bytes()
    bad = {
        "empty.jpg": "empty file",
        "notes.jpg": "not an image",
        "cut.jpg": "truncated",
        "folder.jpg": "directory",
        "gone.png": "broken symbolic link",
        "bomb.png": "decompression bomb",
        "small-limit.png": None,  # fine: only here to show the batch order does not matter
    }
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo")
    (folder / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "folder.jpg").mkdir()
    os.symlink(folder / "missing-target.png", folder / "gone.png")
    _bomb_png(folder / "bomb.png", 40_000, 40_000)
    Image.fromarray(_u8(_dim(9))).save(folder / "small-limit.png")
    os.symlink(work / "nowhere.jpg", work / "dangling.jpg")

    result = _run(checkpoint, "card", "dangling.jpg", "missing.jpg")
    assert result.exit_code == 1, result.output
    errors = _error_lines(result)
    for name, reason in bad.items():
        if reason is None:
            continue
        lines = [line for line in errors if f"card/{name}:" in line]
        assert len(lines) == 1, (name, errors)
        assert reason in lines[0]
    assert sum("dangling.jpg: broken symbolic link" in line for line in errors) == 1
    assert sum("missing.jpg: no such file" in line for line in errors) == 1
    assert len(errors) == 8
    assert sorted(_listdir("enhanced")) == ["good1.jpg", "good2.png", "small-limit.png"]
    assert "3 enhanced, 0 skipped, 8 failed" in result.stdout


def test_max_pixels_option(work: Path, checkpoint: Path) -> None:
    Image.fromarray(_u8(_dim(10))).save("photo.png")
    result = _run(checkpoint, "photo.png", "--max-pixels", "1k")
    assert result.exit_code == 1
    # Small limits in pixels, not "0.0 MP over the 0.0 MP limit".
    assert _error_lines(result) == [
        f"error: photo.png: {W}x{H} is {W * H:,} pixels, over the limit of 1,000 pixels "
        "(refused as a possible decompression bomb; if the file is trusted, raise the limit: "
        "--max-pixels on the command line, max_pixels= of rave.io.read_photo or "
        "Enhancer.enhance_file in Python)"
    ]


# --- naming, skipping and never overwriting inputs --------------------------------------


def test_result_rave_did_not_write_is_refused_unless_overwrite(
    work: Path, checkpoint: Path
) -> None:
    Image.fromarray(_u8(_dim(11))).save("a.png")
    Image.fromarray(_u8(_dim(12))).save("b.png")
    assert _run(checkpoint, "a.png").exit_code == 0
    (work / "enhanced" / "a.png").write_bytes(b"marker")  # changed after rave wrote it
    result = _run(checkpoint, "a.png", "b.png")
    assert result.exit_code == 1, result.output
    assert "1 enhanced, 0 skipped, 1 failed" in result.stdout
    assert _error_lines(result) == [
        f"error: a.png: not enhanced: {Path('enhanced/a.png')} exists and is not a result of "
        "this photo (it was changed after rave wrote it); --overwrite replaces it, or choose "
        "another -o folder or --suffix"
    ]
    assert (work / "enhanced" / "a.png").read_bytes() == b"marker"
    result = _run(checkpoint, "a.png", "b.png", "--overwrite")
    assert "2 enhanced, 0 skipped" in result.stdout
    assert Image.open("enhanced/a.png").size == (W, H)


def _other_model(net: EnhancementNet, path: Path) -> Path:
    """A checkpoint whose weights differ from ``net``'s (scaled last layer)."""
    state = {key: value.clone() for key, value in net.state_dict().items()}
    last = [key for key in state if key.endswith("weight")][-1]
    state[last] *= 1.5
    torch.save(state, path)
    return path


def test_results_reused_only_for_same_photo_model_and_options(
    work: Path, checkpoint: Path, net: EnhancementNet
) -> None:
    Image.fromarray(_u8(_dim(40))).save("a.jpg")
    assert _run(checkpoint, "a.jpg").exit_code == 0
    again = _run(checkpoint, "a.jpg")
    assert "0 enhanced, 1 skipped, 0 failed" in again.stdout, again.output

    other = _other_model(net, work / "other.pth")
    result = _run(other, "a.jpg")  # another model: made again, not skipped
    assert "1 enhanced, 0 skipped" in result.stdout, result.output
    assert "enhanced again (made with another model)" in result.stderr
    assert "0 enhanced, 1 skipped" in _run(other, "a.jpg").stdout

    result = _run(other, "a.jpg", "--quality", "70")  # JPEG quality changes the result
    assert "1 enhanced, 0 skipped" in result.stdout
    assert "made with another quality" in result.stderr

    Image.fromarray(_u8(_dim(41))).save("a.jpg")  # the photo itself was edited
    os.utime("a.jpg", ns=(1, 10**18))
    result = _run(other, "a.jpg", "--quality", "70")
    assert "1 enhanced, 0 skipped" in result.stdout
    assert "the photo changed since its result was made" in result.stderr


def test_same_name_from_another_card_is_refused_not_skipped(work: Path, checkpoint: Path) -> None:
    for card, seed in (("cardA", 42), ("cardB", 43)):
        (work / card).mkdir()
        Image.fromarray(_u8(_dim(seed))).save(work / card / "IMG_0001.JPG")
    assert _run(checkpoint, "cardA/IMG_0001.JPG", "-o", "out").exit_code == 0
    made_from_a = (work / "out" / "IMG_0001.JPG").read_bytes()
    result = _run(checkpoint, "cardB/IMG_0001.JPG", "-o", "out")
    assert result.exit_code == 1
    assert "0 enhanced, 0 skipped, 1 failed" in result.stdout
    [line] = _error_lines(result)
    assert line.startswith("error: cardB/IMG_0001.JPG: not enhanced: ")
    assert f"holds the result of another photo ({work / 'cardA' / 'IMG_0001.JPG'})" in line
    assert (work / "out" / "IMG_0001.JPG").read_bytes() == made_from_a
    # A copy of card A's photo elsewhere is the same photo: its result is reused.
    (work / "copy").mkdir()
    (work / "copy" / "IMG_0001.JPG").write_bytes((work / "cardA" / "IMG_0001.JPG").read_bytes())
    assert "0 enhanced, 1 skipped" in _run(checkpoint, "copy/IMG_0001.JPG", "-o", "out").stdout


@pytest.mark.parametrize("pair", [("avif", "jp2"), ("gif", "ppm")])
def test_same_stem_in_two_formats_gets_two_results(
    work: Path, checkpoint: Path, pair: tuple[str, str]
) -> None:
    first, second = pair
    Image.fromarray(_u8(_dim(44))).save(f"img.{first}")
    Image.fromarray(_u8(_dim(45))).save(f"img.{second}")
    one = _run(checkpoint, f"img.{first}")  # one at a time, as two separate runs
    two = _run(checkpoint, f"img.{second}")
    assert one.exit_code == two.exit_code == 0, one.output + two.output
    assert sorted(_listdir("enhanced")) == [f"img_{first}.png", f"img_{second}.png"]
    both = _run(checkpoint, f"img.{first}", f"img.{second}")
    assert "0 enhanced, 2 skipped" in both.stdout


def test_jpeg_keeps_its_name_beside_a_raw_of_the_same_stem(work: Path, checkpoint: Path) -> None:
    Image.fromarray(_u8(_dim(46))).save("IMG_7.JPG")
    Image.fromarray(_u8(_dim(47))).save("IMG_7.png")
    result = _run(checkpoint, ".", "--format", "jpg")
    assert result.exit_code == 0, result.output
    assert sorted(_listdir("enhanced")) == ["IMG_7.JPG", "IMG_7_png.jpg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nosuchmodel"], "--model nosuchmodel"),
        (["--device", "cuda:7"], "--device"),
        (["--tile", "3"], "too small"),
    ],
)
def test_options_checked_before_anything_is_skipped(
    work: Path, checkpoint: Path, args: list[str], message: str
) -> None:
    Image.fromarray(_u8(_dim(48))).save("a.png")
    assert _run(checkpoint, "a.png").exit_code == 0
    result = CliRunner().invoke(main, ["enhance", "a.png", "--model", str(checkpoint), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "skipped" not in result.output


def test_run_stopped_between_result_and_record_resumes(
    work: Path, checkpoint: Path, monkeypatch
) -> None:
    import rave.io.provenance

    Image.fromarray(_u8(_dim(49))).save("a.png")

    def stopped(target: Path) -> None:
        raise KeyboardInterrupt

    real = rave.io.provenance.finish_record
    monkeypatch.setattr(rave.io.provenance, "finish_record", stopped)
    assert _run(checkpoint, "a.png").exit_code == 130  # Ctrl-C
    assert _listdir("enhanced") == ["a.png"]
    monkeypatch.setattr(rave.io.provenance, "finish_record", real)
    result = _run(checkpoint, "a.png")
    assert "0 enhanced, 1 skipped, 0 failed" in result.stdout, result.output


@pytest.mark.parametrize(
    "target_args",
    [
        ["-o", "."],
        ["-o", "sub/.."],
        ["-o", "link-to-here"],
        ["--beside", "--suffix", ""],
        ["-o", ".", "--overwrite"],
        ["-o", "link-to-here", "--overwrite"],
        ["-o", ".", "--format", "png", "--overwrite"],  # b.jpg -> b.png, another input
    ],
)
def test_inputs_never_overwritten(work: Path, checkpoint: Path, target_args: list[str]) -> None:
    (work / "sub").mkdir()
    os.symlink(work, work / "link-to-here")
    Image.fromarray(_u8(_dim(13))).save("b.png")
    Image.fromarray(_u8(_dim(14))).save("b.jpg")
    before = {name: (work / name).read_bytes() for name in ("b.png", "b.jpg")}
    inputs = ["b.png"] if "--format" not in target_args else ["b.png", "b.jpg"]
    result = _run(checkpoint, *inputs, *target_args)
    assert {name: (work / name).read_bytes() for name in before} == before
    if "--overwrite" in target_args:
        assert result.exit_code == 1
        assert any("refusing to overwrite the input file" in line for line in _error_lines(result))


def test_in_place_only_when_explicitly_asked(work: Path, checkpoint: Path) -> None:
    Image.fromarray(_u8(_dim(15))).save("b.png")
    before = (work / "b.png").read_bytes()
    result = _run(checkpoint, "b.png", "--beside", "--suffix", "", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (work / "b.png").read_bytes() != before
    assert _listdir(work) == ["b.png"]


def test_beside_uses_suffix(work: Path, checkpoint: Path) -> None:
    Image.fromarray(_u8(_dim(16))).save("c.jpeg")
    result = _run(checkpoint, "c.jpeg", "--beside")
    assert result.exit_code == 0, result.output
    assert sorted(_listdir(work)) == ["c.jpeg", "c_enhanced.jpeg"]


def test_folders_keep_structure_and_globs_expand(work: Path, checkpoint: Path) -> None:
    for relative in ("trip/day1/a.png", "trip/day2/a.png", "trip/top.png"):
        (work / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_u8(_dim(17))).save(work / relative)
    (work / "trip" / "notes.txt").write_text("not a photo, not picked up")

    flat = _run(checkpoint, "trip", "-o", "flat")
    assert flat.exit_code == 0, flat.output
    flat_files = (work / "flat").rglob("*")
    assert sorted(str(p.relative_to(work / "flat")) for p in flat_files) == [
        MANIFEST_NAME,
        "top.png",
    ]
    deep = _run(checkpoint, "trip", "-r", "-o", "deep")
    assert deep.exit_code == 0, deep.output
    found = sorted(str(p.relative_to(work / "deep")) for p in (work / "deep").rglob("*.png"))
    assert found == ["day1/a.png", "day2/a.png", "top.png"]
    globbed = _run(checkpoint, "trip/day*/*.png", "-o", "globbed")
    assert globbed.exit_code == 1  # both a.png would land on globbed/a.png
    assert _listdir(work / "globbed") == ["a.png"]
    assert any("would also be written from" in line for line in _error_lines(globbed))


def test_results_folder_not_reprocessed(work: Path, checkpoint: Path) -> None:
    Image.fromarray(_u8(_dim(18))).save("a.png")
    assert _run(checkpoint, ".").exit_code == 0
    result = _run(checkpoint, ".", "-r")
    assert "0 enhanced, 1 skipped" in result.stdout
    assert sorted(_listdir("enhanced")) == ["a.png"]


# --- model errors ----------------------------------------------------------------------------


def test_missing_default_model_says_pass_model(work: Path, monkeypatch) -> None:
    import rave.api
    import rave.zoo

    rave.api.clear_model_cache()  # another test may have loaded the built-in model already
    monkeypatch.setattr(rave.zoo, "builtin_weights_path", lambda: None)
    Image.fromarray(_u8(_dim(19))).save("a.png")
    result = _run(None, "a.png")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--model" in lines[0]
    assert not os.path.exists("enhanced")


def test_unknown_model_is_one_line_exit_2(work: Path) -> None:
    Image.fromarray(_u8(_dim(20))).save("a.png")
    result = CliRunner().invoke(main, ["enhance", "a.png", "--model", "no-such-model"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model no-such-model:")


def test_beside_rerun_on_folder_does_not_enhance_results(work: Path, checkpoint: Path) -> None:
    (work / "shoot").mkdir()
    Image.fromarray(_u8(_dim(21))).save("shoot/a.jpg")
    assert _run(checkpoint, "shoot", "--beside").exit_code == 0
    again = _run(checkpoint, "shoot", "--beside", "--overwrite")
    assert again.exit_code == 0, again.output
    assert "1 enhanced, 0 skipped, 0 failed" in again.stdout
    assert sorted(_listdir("shoot")) == ["a.jpg", "a_enhanced.jpg"]


def test_16_bit_grey_stays_16_bit_grey(work: Path, checkpoint: Path, net: EnhancementNet) -> None:
    grey = _u16(_dim(22))[:, :, 1]
    cv2.imwrite("grey16.png", grey)
    result = _run(checkpoint, "grey16.png")
    assert result.exit_code == 0, result.output
    out = cv2.imread("enhanced/grey16.png", cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (H, W)
    reference = _reference(net, np.repeat(grey[:, :, None], 3, axis=2) / 65535)[:, :, 0]
    _assert_quantised(out, reference, 65535)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tile", "8"], "too small"),
        (["--tile", "big"], "not 'auto', 'none'"),
        (["--max-pixels", "lots"], "not a pixel count"),
        (["--quality", "101"], "101"),
        (["--beside", "-o", "out"], "exclude each other"),
        (["--suffix", "a/b"], "path separator"),
    ],
)
def test_bad_options_are_usage_errors(work: Path, args: list[str], message: str) -> None:
    Image.fromarray(_u8(_dim(23))).save("a.png")
    result = CliRunner().invoke(main, ["enhance", "a.png", *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not os.path.exists("enhanced")


def test_option_types_parse_units() -> None:
    from rave.cli._options import PixelCount, TileSize

    assert PixelCount().convert("200M", None, None) == 200_000_000
    assert PixelCount().convert("1.5k", None, None) == 1500
    assert PixelCount().convert("12345", None, None) == 12345
    assert TileSize().convert("auto", None, None) == "auto"
    assert TileSize().convert("none", None, None) is None
    assert TileSize().convert("512", None, None) == 512


def test_interrupted_batch_resumes(work: Path, checkpoint: Path, monkeypatch) -> None:
    import rave.io.write

    monkeypatch.setenv("RAVE_OVERLAP", "0")  # one after another: the counts below are exact
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(_u8(_dim(24))).save(name)
    real_write = rave.io.write.atomic_write
    calls = []

    def interrupted_write(path, write, **options):
        if Path(path).name != MANIFEST_NAME:  # count photos, not records of them
            calls.append(path)
        if len(calls) == 2:  # Ctrl-C while the second photo is being written

            def half_then_stop(stream):
                stream.write(b"\x89PNG half")
                raise KeyboardInterrupt

            return real_write(path, half_then_stop, **options)
        return real_write(path, write, **options)

    monkeypatch.setattr(rave.io.write, "atomic_write", interrupted_write)
    first = _run(checkpoint, "a.png", "b.png", "c.png")
    assert first.exit_code == 130, first.output
    summary = [line for line in first.stderr.splitlines() if line.startswith("interrupted:")]
    assert summary == [
        "interrupted: 1 enhanced, 0 failed, 2 left; run the same command again to finish "
        "(results written so far are kept and skipped)"
    ]
    assert _listdir("enhanced") == ["a.png"]  # no half-written b.png, no temporary file
    monkeypatch.setattr(rave.io.write, "atomic_write", real_write)
    second = _run(checkpoint, "a.png", "b.png", "c.png")
    assert second.exit_code == 0, second.output
    assert "2 enhanced, 1 skipped, 0 failed" in second.stdout
    assert sorted(_listdir("enhanced")) == ["a.png", "b.png", "c.png"]


def test_without_c_compiler_enhances_and_says_why_slower(
    work: Path, checkpoint: Path, net: EnhancementNet, monkeypatch
) -> None:
    from rave.inference import winograd

    monkeypatch.setenv("CC", "/nonexistent/cc")
    winograd.load_kernel.cache_clear()
    try:
        Image.fromarray(_u8(_dim(21))).save("a.png")
        result = _run(checkpoint, "a.png")
    finally:
        winograd.load_kernel.cache_clear()
    assert result.exit_code == 0, result.output
    assert "note: Winograd kernel not built: no C compiler found" in result.output
    enhanced = np.asarray(Image.open("enhanced/a.png"), dtype=np.float64) / 255
    expected = _reference(net, np.asarray(Image.open("a.png"), dtype=np.float64) / 255)
    assert np.abs(enhanced - expected).max() <= 1 / 255 + 1e-6
