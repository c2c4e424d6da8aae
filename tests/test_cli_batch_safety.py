"""``rave enhance`` under failure: full disks, hostile names, odd files, signals, rave bugs.

Every test runs a real batch with the authors' checkpoint (skipped without ../shared) and
checks what reaches the user (one line per problem, exit status) and what is left on disk.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import struct
import subprocess
import sys
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


def _listdir(folder: str) -> list[str]:
    """Names in ``folder``, sorted, without rave's record of what made each result (a
    temporary ``.part`` file left behind would still show)."""
    from rave.io.provenance import MANIFEST_NAME

    return sorted(name for name in os.listdir(folder) if name != MANIFEST_NAME)


def _run(checkpoint: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["enhance", *args, "--model", str(checkpoint), "--device", "cpu"]
    )


def _photo(path: str | Path, seed: int = 0, size: tuple[int, int] = (40, 30)) -> bytes:
    """A dim noisy photo saved at ``path`` (format from the suffix); returns its bytes."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = rng.integers(10, 120, (height, width, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return Path(path).read_bytes()


def _lines(result: Result, prefix: str = "error:") -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(prefix)]


def _two_page_tiff_without_width(path: Path) -> None:
    """Page 1 a valid 8x8 image, page 2 without its ImageWidth tag (Pillow: TypeError)."""
    buffer = io.BytesIO()
    page = Image.fromarray(np.full((8, 8, 3), 100, np.uint8))
    page.save(buffer, "TIFF", save_all=True, append_images=[page])
    data = bytearray(buffer.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * count)[0]
    assert struct.unpack_from("<H", data, second + 2)[0] == 256  # ImageWidth comes first
    struct.pack_into("<H", data, second + 2, 255)  # now an unrelated tag (SubfileType)
    path.write_bytes(bytes(data))


def test_malformed_tiff_is_one_photo_error_and_batch_goes_on(work: Path, checkpoint: Path) -> None:
    _photo("a.png", 1)
    _two_page_tiff_without_width(work / "b.tif")
    _photo("c.png", 2)
    result = _run(checkpoint, "a.png", "b.tif", "c.png")
    assert result.exit_code == 1, result.output
    assert _lines(result) == [
        "error: b.tif: corrupt or unreadable image (TypeError: Missing dimensions)"
    ]
    assert "2 enhanced, 0 skipped, 1 failed" in result.stdout
    assert _listdir("enhanced") == ["a.png", "c.png"]


def test_library_exception_while_enhancing_is_that_photos_error(
    work: Path, checkpoint: Path, monkeypatch
) -> None:
    import rave.api

    real = rave.api.enhance_array
    calls = []

    def flaky(net, pixels, **options):
        calls.append(1)
        if len(calls) == 1:
            raise TypeError("a library failed on this photo")  # raised outside rave's code
        return real(net, pixels, **options)

    monkeypatch.setattr(rave.api, "enhance_array", flaky)
    _photo("a.png", 1)
    _photo("b.png", 2)
    result = _run(checkpoint, "a.png", "b.png")
    assert result.exit_code == 1, result.output
    assert _lines(result) == ["error: a.png: TypeError: a library failed on this photo"]
    assert _listdir("enhanced") == ["b.png"]


@pytest.mark.parametrize("debug", [False, True])
def test_bug_in_rave_stops_the_batch(
    work: Path, checkpoint: Path, monkeypatch, debug: bool
) -> None:
    import rave.inference

    # rave's own code then calls None: a TypeError raised in rave.cli.enhance, i.e. a bug.
    monkeypatch.setattr(rave.inference, "is_memory_bound", None)
    _photo("a.png", 1)
    _photo("b.png", 2)
    result = _run(checkpoint, "a.png", "b.png", *(["--debug"] if debug else []))
    assert result.exit_code == 3, result.output
    errors = _lines(result)
    assert len(errors) == 1 and errors[0].startswith("error: a.png: internal error (a bug in rave")
    assert ("Traceback (most recent call last)" in result.stderr) == debug
    assert "--debug shows the traceback" in errors[0]
    if debug:  # each traceback line on its own line
        assert any(line.startswith("  File ") for line in result.stderr.splitlines())
    assert not os.path.exists("enhanced/b.png")


def test_names_and_messages_cannot_reach_the_terminal_raw(work: Path, checkpoint: Path) -> None:
    hostile = "evil\x1b[31mRED\x1b[0m\x1b]0;pwned\x07\nerror: forged.jpg"
    Path(hostile + ".jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = _run(checkpoint, ".")
    assert "\x1b" not in result.output and "\x07" not in result.output
    errors = _lines(result)
    assert len(errors) == 1  # the newline did not forge a second error line
    assert "evil\\x1b[31mRED\\x1b[0m\\x1b]0;pwned\\x07\\nerror: forged.jpg" in errors[0]


def test_symlink_loop_named_as_such(work: Path, checkpoint: Path) -> None:
    os.symlink("loop.jpg", "loop.jpg")
    result = _run(checkpoint, "loop.jpg")
    assert result.exit_code == 1
    assert _lines(result) == [
        "error: loop.jpg: symbolic link loop (the link points back to itself)"
    ]


def test_sizes_are_width_by_height(work: Path, checkpoint: Path) -> None:
    _photo("thin.png", size=(100, 1))
    result = _run(checkpoint, "thin.png")
    assert result.exit_code == 1
    (line,) = _lines(result)
    assert "100x1 pixels (width x height) is too small" in line
    # in a photographer's words, not the engine's (reflection padding)
    assert line.endswith("needs at least 2x2 pixels") and "padding" not in line


# --- writing ---------------------------------------------------------------------------


def test_in_place_replacement_never_loses_the_original(
    work: Path, checkpoint: Path, monkeypatch, short_disk: list[int]
) -> None:
    original = _photo("photo.jpg", 3, size=(240, 200))
    import rave.io.atomic

    monkeypatch.setattr(rave.io.atomic, "_PROBE_BYTES", 1)  # the probe fits, the photo not
    short_disk[0] = 50_000  # the disk takes this much more, then ENOSPC
    result = _run(
        checkpoint, "photo.jpg", "--beside", "--suffix", "", "--overwrite", "--quality", "100"
    )
    assert result.exit_code == 1, result.output
    assert "No space left on device" in _lines(result)[0]
    assert Path("photo.jpg").read_bytes() == original
    assert _listdir(".") == ["photo.jpg"]


def test_write_probe_stops_before_any_photo_is_computed(
    work: Path, checkpoint: Path, monkeypatch
) -> None:
    import rave.api

    def read_only(descriptor: int, data) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def must_not_run(*args, **kwargs):
        raise AssertionError("a photo was enhanced before the output folder was checked")

    for name in ("a.png", "b.png", "c.png"):
        _photo(name)
    monkeypatch.setattr(os, "write", read_only)
    monkeypatch.setattr(rave.api, "enhance_array", must_not_run)
    result = _run(checkpoint, "a.png", "b.png", "c.png", "-o", "out")
    assert result.exit_code == 2, result.output
    assert _lines(result) == [
        "error: output folder out cannot be written (Read-only file system): nothing was enhanced"
    ]
    assert _listdir("out") == []


def test_full_disk_stops_the_batch_with_one_line_per_photo(
    work: Path, checkpoint: Path, monkeypatch, short_disk: list[int]
) -> None:
    import rave.io.atomic

    monkeypatch.setattr(rave.io.atomic, "_PROBE_BYTES", 1)
    for index, name in enumerate(("a.png", "b.png", "c.png")):
        _photo(name, index, size=(200, 160))
    short_disk[0] = 20_000  # the disk takes this much more, then ENOSPC
    result = _run(checkpoint, "a.png", "b.png", "c.png")
    assert result.exit_code == 1
    errors = _lines(result)
    assert errors[0] == "error: a.png: [Errno 28] No space left on device"
    assert (
        errors[1] == "error: stopping: the output cannot take more files; 2 photo(s) not attempted"
    )
    assert "0 enhanced, 0 skipped, 1 failed, 2 not attempted" in result.stdout
    assert _listdir("enhanced") == []


def test_sigterm_cleans_up_and_says_what_is_left(work: Path, checkpoint: Path, monkeypatch) -> None:
    import rave.io.write

    # One photo after another, so that "1 enhanced, 2 left" is exact (with overlapping, a
    # photo finished by a worker but not yet reported is kept and skipped on the re-run,
    # and not counted: see test_pipeline.py for what an early stop does to workers).
    monkeypatch.setenv("RAVE_OVERLAP", "0")
    for name in ("a.png", "b.png", "c.png"):
        _photo(name)
    real_write = rave.io.write.atomic_write
    calls = []

    def terminated_while_writing(path, content, **options):
        from rave.io.provenance import MANIFEST_NAME

        if Path(path).name != MANIFEST_NAME:  # count photos, not records of them
            calls.append(path)
        if len(calls) == 2:

            def half_then_sigterm(stream):
                stream.write(b"\x89PNG half")
                os.kill(os.getpid(), signal.SIGTERM)

            return real_write(path, half_then_sigterm, **options)
        return real_write(path, content, **options)

    monkeypatch.setattr(rave.io.write, "atomic_write", terminated_while_writing)
    result = _run(checkpoint, "a.png", "b.png", "c.png")
    assert result.exit_code == 143, result.output
    assert _lines(result, "interrupted:") == [
        "interrupted: 1 enhanced, 0 failed, 2 left; run the same command again to finish "
        "(results written so far are kept and skipped)"
    ]
    assert _listdir("enhanced") == ["a.png"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed afterwards


def test_leftover_of_a_killed_run_is_removed_by_the_next(work: Path, checkpoint: Path) -> None:
    killed = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    os.mkdir("enhanced")
    leftover = Path("enhanced") / f".rave-{int(killed.stdout)}-Zq81xk2a.part"
    leftover.write_bytes(b"half a photo")
    _photo("a.png")
    result = _run(checkpoint, "a.png")
    assert result.exit_code == 0, result.output
    assert _listdir("enhanced") == ["a.png"]


@pytest.fixture
def read_only_tmpfs(mount_tmpfs) -> Path:
    return mount_tmpfs("ro", "ro,size=1m")


def test_read_only_output_folder_found_by_probe(
    work: Path, checkpoint: Path, read_only_tmpfs: Path
) -> None:
    _photo("a.png")
    result = _run(checkpoint, "a.png", "-o", str(read_only_tmpfs))
    assert result.exit_code == 2
    assert _lines(result) == [
        f"error: output folder {read_only_tmpfs} cannot be written (Read-only file system): "
        "nothing was enhanced"
    ]
