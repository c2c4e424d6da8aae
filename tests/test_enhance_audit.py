"""``rave enhance`` as a photographer uses it: re-runs of shell globs, interruptions before
the first photo, TIFF resolution, links beside their targets (an audit's findings)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from rave.cli import main


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["enhance", *args, "--model", "default", "--device", "cpu"])


def _photo(path: str | Path, seed: int = 0, size: tuple[int, int] = (24, 16), **save) -> None:
    width, height = size
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(10, 120, (height, width, 3)).astype(np.uint8)).save(path, **save)


def _lines(result: Result, prefix: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(prefix)]


def test_rerun_of_a_shell_glob_naming_the_output_folder_skips_everything(work: Path) -> None:
    # `rave enhance *` twice: the second time the shell also names ./enhanced.
    _photo("a.png", 1)
    _photo("b.png", 2)
    first = _run("a.png", "b.png")
    assert first.exit_code == 0, first.output
    second = _run("a.png", "b.png", "enhanced")
    assert second.exit_code == 0, second.output
    assert "0 enhanced, 2 skipped, 0 failed" in second.stdout
    assert _lines(second, "error:") == []
    assert sorted(os.listdir("enhanced")) == [".rave-results.json", "a.png", "b.png"]


def test_a_pattern_matching_the_output_folder_skips_it_too(work: Path) -> None:
    _photo("a.png", 1)
    assert _run("a.png").exit_code == 0
    again = _run("*")  # the pattern as rave expands it (quoted in the shell)
    assert again.exit_code == 0, again.output
    assert "0 enhanced, 1 skipped, 0 failed" in again.stdout


def test_the_output_folder_as_the_input_still_works_with_a_suffix(work: Path) -> None:
    _photo("a.png", 1)
    result = _run(".", "-o", ".", "--suffix", "_e")  # as --beside
    assert result.exit_code == 0, result.output
    again = _run(".", "-o", ".", "--suffix", "_e")
    assert again.exit_code == 0, again.output
    assert "0 enhanced, 1 skipped, 0 failed" in again.stdout
    assert sorted(os.listdir(".")) == [".rave-results.json", "a.png", "a_e.png"]


def test_the_output_folder_as_the_input_in_place_when_asked(work: Path) -> None:
    os.mkdir("photos")
    _photo("photos/a.png", 1)
    before = Path("photos/a.png").read_bytes()
    result = _run("photos", "-o", "photos", "--suffix", "", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "1 enhanced, 0 skipped, 0 failed" in result.stdout
    assert Path("photos/a.png").read_bytes() != before


def test_a_folder_inside_the_output_folder_is_still_an_input(work: Path) -> None:
    # -o . with the photos in ./photos: the input is inside the output folder, not it.
    os.mkdir("photos")
    _photo("photos/a.png", 1)
    result = _run("photos", "-o", ".")
    assert result.exit_code == 0, result.output
    assert "1 enhanced, 0 skipped, 0 failed" in result.stdout
    assert os.path.isfile("a.png")


def test_ctrl_c_while_the_model_loads_says_nothing_was_written(work: Path, monkeypatch) -> None:
    import rave.cli.enhance

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rave.cli.enhance, "_load_enhancer", interrupted)
    _photo("a.png")
    result = _run("a.png")
    assert result.exit_code == 130, result.output  # click alone: "Aborted!" and 1
    assert result.stderr.splitlines() == [
        "interrupted before any photo was enhanced: nothing was written"
    ]
    assert not os.path.exists("enhanced")


def test_sigterm_before_the_first_photo_says_nothing_was_written(work: Path, monkeypatch) -> None:
    import rave.cli.enhance

    class Killed(Exception):
        pass

    def stand_in(signal_number, frame):  # without rave's handler: the test fails, not dies
        raise Killed

    real_collect = rave.cli.enhance._collect

    def collect_then_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_collect(*args, **kwargs)

    monkeypatch.setattr(rave.cli.enhance, "_collect", collect_then_sigterm)
    _photo("a.png")
    previous = signal.signal(signal.SIGTERM, stand_in)
    try:
        result = _run("a.png")
        assert signal.getsignal(signal.SIGTERM) is stand_in  # rave's handler removed again
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 143, result.output
    assert _lines(result, "interrupted") == [
        "interrupted before any photo was enhanced: nothing was written"
    ]
    assert not os.path.exists("enhanced")


def _resolution_tags(path: str) -> dict[str, object]:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        return {
            tag.name: tag.value
            for tag in page.tags.values()
            if tag.name in ("XResolution", "YResolution", "ResolutionUnit")
        }


def test_tiff_without_resolution_does_not_become_1_dpi(work: Path) -> None:
    # Pillow reports dpi (1, 1) for a TIFF without resolution tags; it is no resolution.
    _photo("plain.tif")
    _photo("sharp.tif", dpi=(300, 300))
    assert _resolution_tags("plain.tif") == {}
    result = _run("plain.tif", "sharp.tif")
    assert result.exit_code == 0, result.output
    assert _resolution_tags("enhanced/plain.tif") == {}
    assert _resolution_tags("enhanced/sharp.tif")["XResolution"] == (300, 1)
    as_jpeg = _run("plain.tif", "-o", "jpg", "--format", "jpg")
    assert as_jpeg.exit_code == 0, as_jpeg.output
    with Image.open("jpg/plain.jpg") as jpeg:
        assert jpeg.info.get("jfif_unit") == 0  # no unit: an aspect ratio, not 1 dpi


def test_a_link_beside_its_target_gives_the_file_its_own_name(work: Path) -> None:
    os.mkdir("photos")
    _photo("photos/real.png")
    os.symlink("real.png", "photos/another.png")  # sorts first
    result = _run("photos")
    assert result.exit_code == 0, result.output
    assert "1 enhanced, 0 skipped, 0 failed" in result.stdout
    assert sorted(os.listdir("enhanced")) == [".rave-results.json", "real.png"]


def test_a_file_in_the_way_of_the_output_folder_is_named(work: Path) -> None:
    os.makedirs("photos/sub")
    _photo("photos/a.png")
    _photo("photos/sub/b.png")
    os.mkdir("out")
    Path("out/sub").write_text("notes")
    result = _run("photos", "-r", "-o", "out")
    assert result.exit_code == 2, result.output
    assert _lines(result, "error:") == [
        "error: output folder out/sub cannot be written (out/sub is a file, not a folder): "
        "nothing was enhanced"  # was "(File exists)"
    ]
    deeper = _run("photos/a.png", "-o", "out/sub/deeper")
    assert deeper.exit_code == 2, deeper.output
    assert "(out/sub is a file, not a folder)" in deeper.stderr
    os.symlink("nowhere", "dangling")
    broken = _run("photos/a.png", "-o", "dangling")
    assert broken.exit_code == 2, broken.output
    assert "(dangling is a broken link to nowhere)" in broken.stderr


def _grey_icc(gamma: float = 1.8) -> bytes:
    """A minimal ICC v2 GRAY display profile (D50 white, one gamma curve)."""
    import struct

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    white = s15(0.9642) + s15(1.0) + s15(0.8249)
    text = b"Grey test\0"
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(82)),
        (b"wtpt", b"XYZ " + bytes(4) + white),
        (b"kTRC", b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)),
        (b"cprt", b"text" + bytes(4) + b"none" + bytes(4)),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (
        struct.pack(">I", offset + len(data))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrGRAYXYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + white
        + bytes(48)
    )
    assert len(header) == 128
    return header + table + data


@pytest.mark.parametrize(
    ("alpha", "fmt", "mode"),
    [(False, "webp", "RGB"), (True, "webp", "RGBA"), (True, "heic", "RGBA")],
)
def test_grey_written_as_rgb_gets_an_rgb_profile(
    work: Path, alpha: bool, fmt: str, mode: str
) -> None:
    # WebP has no grey (HEIC no grey + alpha): the pixels become RGB, and a GRAY profile
    # cannot describe them. The tones go through the profile to sRGB instead.
    from rave.io.heif import register_heif
    from rave.io.metadata import icc_colour_space

    if fmt == "heic" and not register_heif():
        pytest.skip("no pillow-heif")
    grey = np.full((16, 24), 100, np.uint8)
    pixels = np.dstack((grey, np.full_like(grey, 200))) if alpha else grey
    Image.fromarray(pixels, "LA" if alpha else "L").save("grey.png", icc_profile=_grey_icc())
    result = _run("grey.png", "--format", fmt, "--strength", "0")
    assert result.exit_code == 0, result.output
    with Image.open(f"enhanced/grey.{fmt}") as written:
        assert written.mode == mode
        assert icc_colour_space(written.info.get("icc_profile")) == "RGB"
        red, green, blue = written.getpixel((8, 8))[:3]
    assert max(red, green, blue) - min(red, green, blue) <= 3  # still grey
    assert 110 < red < 130  # 100 under gamma 1.8 is 119 in sRGB (lossy, hence the margin)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_like_a_photo_in_a_folder_gets_its_line(work: Path) -> None:
    os.mkdir("photos")
    _photo("photos/a.png")
    os.mkfifo("photos/b.jpg")  # was left out of the scan without a word
    result = _run("photos")
    assert result.exit_code == 1, result.output
    assert _lines(result, "error:") == ["error: photos/b.jpg: not a regular file"]
    assert "1 enhanced, 0 skipped, 1 failed" in result.stdout


def test_links_to_folders_are_said_to_be_skipped_with_or_without_r(work: Path) -> None:
    os.makedirs("photos/real")
    os.mkdir("elsewhere")
    _photo("photos/a.png")
    _photo("photos/real/b.png", 2)
    _photo("elsewhere/c.png", 3)
    os.symlink("../elsewhere", "photos/linked")
    flat = _run("photos", "-o", "flat")
    assert flat.exit_code == 0, flat.output
    assert _lines(flat, "note: photos: skipped") == [  # was: 2 sub-folder(s), use -r
        "note: photos: skipped 1 sub-folder(s) (use -r to include them)",
        "note: photos: skipped 1 link(s) to folders (links are not followed; name the "
        "folder itself to enhance its photos)",
    ]
    deep = _run("photos", "-r", "-o", "deep")
    assert deep.exit_code == 0, deep.output
    assert "2 enhanced, 0 skipped, 0 failed" in deep.stdout
    assert _lines(deep, "note: photos: skipped") == [  # was: nothing said
        "note: photos: skipped 1 link(s) to folders (links are not followed; name the "
        "folder itself to enhance its photos)"
    ]


def test_orientation_in_xmp_is_reset_with_the_exif_one(work: Path) -> None:
    # A camera/Lightroom file says "rotate 90" in EXIF and XMP. rave turns the pixels
    # upright and resets the EXIF; a stale XMP value made a 16-bit TIFF (whose writer keeps
    # no EXIF orientation) turn again in Pillow, ExifTool-based tools and photo managers.
    from PIL import ImageOps, PngImagePlugin

    exif = Image.Exif()
    exif[0x0112] = 6
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>'
    )
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp)
    grey = (np.arange(16 * 24).reshape(16, 24) * 100).astype(np.uint16)
    Image.fromarray(grey).save("turned.png", exif=exif, pnginfo=info)
    result = _run("turned.png", "--format", "tif")
    assert result.exit_code == 0, result.output
    with Image.open("enhanced/turned.tif") as written:
        assert written.size == (16, 24)  # upright: 24 wide, stored turned
        assert ImageOps.exif_transpose(written).size == (16, 24)  # and not turned again
        kept = written.tag_v2[700]
    assert b'tiff:Orientation="1"' in kept
    assert b'xmp:Rating="4"' in kept  # the rest of the packet is the photo's


def test_a_result_name_too_long_is_refused_before_the_photo_is_computed(work: Path) -> None:
    import rave.cli.enhance

    _photo("a.png")
    result = _run("a.png", "--suffix", "x" * 252)  # a + 252 + .png = 257 bytes
    assert result.exit_code == 1, result.output
    limit = os.pathconf(".", "PC_NAME_MAX")
    assert _lines(result, "error:") == [
        f"error: a.png: output file name a{'x' * 39}... is too long (257 bytes, the file "
        f"system allows {limit}): use a shorter --suffix or file name"
    ]  # was "[Errno 36] File name too long: '.../.rave-...part' -> ..."
    assert not os.path.exists("enhanced") or os.listdir("enhanced") == []
    assert rave.cli.enhance._name_too_long(Path("enhanced") / ("y" * 200 + ".png")) is None


def test_exif_too_large_for_jpeg_is_a_note_on_the_photo(work: Path) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    exif[0x9286] = b"ASCII\0\0\0" + b"x" * 70_000  # a 70 KB user comment; JPEG holds 64 KB
    _photo("big.png", exif=exif.tobytes())
    quiet = _run("big.png", "--format", "jpg", "-q")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""  # was a bare "EXIF block too large for jpg..." despite -q
    told = _run("big.png", "--format", "jpg", "-o", "told")
    assert told.exit_code == 0, told.output
    assert _lines(told, "note:") == [
        "note: big.png: EXIF (68 KB) not written: too large for JPEG (EXIF data is too long)"
    ]
    with Image.open("told/big.jpg") as written:
        assert written.size == (24, 16)


def test_the_interrupted_line_counts_the_skipped_photos(work: Path, monkeypatch) -> None:
    import rave.io.write
    from rave.io.provenance import MANIFEST_NAME

    monkeypatch.setenv("RAVE_OVERLAP", "0")  # one photo after another: exact counts
    for seed, name in enumerate(("a.png", "b.png", "c.png")):
        _photo(name, seed)
    assert _run("a.png").exit_code == 0
    real_write = rave.io.write.atomic_write

    def ctrl_c_on_the_first_photo(path, write, **options):
        if Path(path).name != MANIFEST_NAME:
            raise KeyboardInterrupt
        return real_write(path, write, **options)

    monkeypatch.setattr(rave.io.write, "atomic_write", ctrl_c_on_the_first_photo)
    result = _run("a.png", "b.png", "c.png")
    assert result.exit_code == 130, result.output
    assert _lines(result, "interrupted:") == [  # was "0 enhanced, 0 failed, 2 left" of 3
        "interrupted: 0 enhanced, 1 skipped, 0 failed, 2 left; run the same command again "
        "to finish (results written so far are kept and skipped)"
    ]


def test_results_of_an_earlier_run_beside_their_photos_are_not_new_photos(work: Path) -> None:
    os.mkdir("photos")
    _photo("photos/a.png", 1)
    first = _run("photos", "--beside", "--format", "jpg")
    assert first.exit_code == 0, first.output
    # Later, the default format: a_enhanced.jpg was enhanced into a_enhanced_enhanced.jpg.
    second = _run("photos", "--beside")
    assert second.exit_code == 0, second.output
    assert "1 enhanced, 0 skipped, 0 failed" in second.stdout
    assert sorted(os.listdir("photos")) == [
        ".rave-results.json",
        "a.png",
        "a_enhanced.jpg",
        "a_enhanced.png",
    ]
    assert _lines(second, "error:") == []
    # A result named alone, without its photo, is still enhanced on request.
    alone = _run("photos/a_enhanced.jpg", "-o", "again")
    assert alone.exit_code == 0, alone.output
    assert sorted(os.listdir("again")) == [".rave-results.json", "a_enhanced.jpg"]


class _KilledSilently(Exception):
    """Stands for SIGTERM's default action (the process dies without a word)."""


@pytest.mark.parametrize(("signal_number", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_while_rave_starts_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signal_number: int,
    status: int,
) -> None:
    """The console script imports PyTorch (seconds) before click runs: Ctrl-C there printed a
    traceback and SIGTERM ended the process without a word."""
    import rave.inference.memory as memory
    from rave.cli import run

    def interrupted() -> None:
        if signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
        time.sleep(1)

    def default_action(number: int, frame: object) -> None:
        raise _KilledSilently

    monkeypatch.setattr(memory, "share_one_heap", interrupted)
    previous = signal.signal(signal.SIGTERM, default_action)
    try:
        with pytest.raises(SystemExit) as stop:
            run(["enhance", "photo.jpg"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stop.value.code == status
    assert capsys.readouterr().err == "rave enhance: interrupted while starting: nothing was done\n"


def _exif_with_thumbnail(orientation: int) -> bytes:
    """A little-endian EXIF block: IFD0 holds the orientation, IFD1 a JPEG thumbnail."""
    import io
    import struct

    thumbnail = io.BytesIO()
    Image.new("RGB", (8, 6), (30, 20, 10)).save(thumbnail, "JPEG")
    thumb = thumbnail.getvalue()
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    ifd1_at = 8 + len(ifd0) + 4
    thumb_at = ifd1_at + 2 + 2 * 12 + 4
    ifd1 = struct.pack("<H", 2)
    ifd1 += struct.pack("<HHII", 0x0201, 4, 1, thumb_at) + struct.pack(
        "<HHII", 0x0202, 4, 1, len(thumb)
    )
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd0 + struct.pack("<I", ifd1_at) + ifd1
    tiff += struct.pack("<I", 0) + thumb
    return b"Exif\x00\x00" + tiff


def _thumbnail_tags(exif: bytes) -> dict:
    """IFD1 (the thumbnail's directory) as Pillow reads it."""
    from PIL import ExifTags

    parsed = Image.Exif()
    parsed.load(exif)
    return dict(parsed.get_ifd(ExifTags.IFD.IFD1))


def test_the_originals_exif_thumbnail_is_not_kept_beside_the_enhanced_photo(
    tmp_path: Path,
) -> None:
    """The camera's thumbnail shows the dark original (and, once the orientation is reset to
    1, turned on its side): viewers that show embedded thumbnails showed it for the result.
    Before, the EXIF block was copied with its IFD1."""
    import rave

    exif = _exif_with_thumbnail(orientation=6)
    assert 0x0201 in _thumbnail_tags(exif)  # the reference reader sees the thumbnail
    photo = tmp_path / "in" / "p.jpg"
    photo.parent.mkdir()
    Image.new("RGB", (24, 16), (60, 40, 20)).save(photo, exif=exif)
    result = CliRunner().invoke(main, ["enhance", str(photo), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "p.jpg") as out:
        kept = out.info["exif"]
        assert out.getexif()[0x0112] == 1 and out.size == (16, 24)  # turned upright
    assert _thumbnail_tags(kept) == {}

    with Image.open(photo) as image:
        enhanced = rave.enhance(image)
    assert _thumbnail_tags(enhanced.info["exif"]) == {}
    parsed = Image.Exif()
    parsed.load(enhanced.info["exif"])
    assert parsed[0x0112] == 6  # the rest of the block is read as before (pixels not turned)
