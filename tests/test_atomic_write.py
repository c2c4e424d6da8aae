"""Verified atomic writes: a full disk, a short write or an interruption never loses a file.

The disk-full cases run twice: with ``os.write`` made to fail short (everywhere), and on a
real 2 MiB tmpfs when this process may mount one (root on Linux; skipped otherwise).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rave.io.atomic as atomic
from rave.io import atomic_write, file_mode, probe_folder, remove_stale_temporaries, write_photo

FORMATS = ["jpg", "png", "tif", "webp", "bmp"]


def _noise(height: int = 200, width: int = 240, dtype: type = np.uint8) -> np.ndarray:
    top = 255 if dtype == np.uint8 else 65535
    rng = np.random.default_rng(height * width)
    return rng.integers(0, top, (height, width, 3), endpoint=True).astype(dtype)


def _only(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("fmt", FORMATS)
def test_short_write_fails_and_keeps_previous_file(
    tmp_path: Path, short_disk: list[int], fmt: str
) -> None:
    target = tmp_path / f"photo.{fmt}"
    target.write_bytes(b"previous result")
    with pytest.raises(OSError) as caught:
        write_photo(target, _noise())
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous result"
    assert _only(tmp_path) == [target.name]


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_short_write_of_16_bit_photo_fails(tmp_path: Path, short_disk: list[int], fmt: str) -> None:
    target = tmp_path / f"photo.{fmt}"
    with pytest.raises(OSError) as caught:
        write_photo(target, _noise(dtype=np.uint16))
    assert caught.value.errno == errno.ENOSPC
    assert _only(tmp_path) == []


def test_write_that_fits_is_complete(tmp_path: Path, short_disk: list[int]) -> None:
    short_disk[0] = 10_000_000
    pixels = _noise()
    write_photo(tmp_path / "photo.png", pixels)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "photo.png")), pixels)


def test_verify_refusal_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def refuse(path: Path) -> None:
        assert path.read_bytes() == b"new"  # verify sees the complete temporary file
        raise OSError(errno.EIO, "does not read back")

    with pytest.raises(OSError, match="does not read back"):
        atomic_write(target, b"new", verify=refuse)
    assert target.read_bytes() == b"old"
    assert _only(tmp_path) == ["data.bin"]


def test_truncated_photo_file_is_refused_by_verification(tmp_path: Path, monkeypatch) -> None:
    """A writer that silently drops the end (as Pillow did on a full disk) is caught."""
    import rave.io.write as write_module

    real_save = Image.Image.save

    def lossy_save(self, stream, *args, **kwargs):
        real_save(self, stream, *args, **kwargs)
        stream.seek(-100, os.SEEK_END)
        stream.truncate()

    monkeypatch.setattr(Image.Image, "save", lossy_save)
    for fmt in ("jpg", "png", "webp", "bmp"):
        with pytest.raises(OSError, match=r"incomplete|read back"):
            write_module.write_photo(tmp_path / f"a.{fmt}", _noise())
    assert _only(tmp_path) == []


def test_mode_follows_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.bin", b"x")
        write_photo(tmp_path / "b.png", _noise(8, 8))
        assert file_mode() == 0o640
    finally:
        os.umask(previous)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "b.png").stat().st_mode & 0o777 == 0o640


def test_250_byte_name_can_be_written(tmp_path: Path) -> None:
    name = "p" * 246 + ".jpg"  # 250 bytes; the longest a file system allows is 255
    write_photo(tmp_path / name, _noise(16, 16))
    assert _only(tmp_path) == [name]


def test_no_temporary_file_outside_the_output_folder(tmp_path: Path, monkeypatch) -> None:
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    seen: list[list[str]] = []
    real_replace = os.replace

    def watching_replace(source, destination):
        seen.append(os.listdir(scratch))
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", watching_replace)
    write_photo(tmp_path / "out" / "a.png", _noise(dtype=np.uint16))
    assert seen == [[]]
    assert _only(tmp_path / "out") == ["a.png"]


def test_stale_temporaries_of_dead_processes_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".rave-{dead_pid}-abcdefgh.part"
    stale_png = tmp_path / f".rave-{dead_pid}-abcdefgh.png"
    live = tmp_path / f".rave-{os.getppid()}-abcdefgh.part"  # our parent is alive
    old_live = tmp_path / f".rave-{os.getppid()}-ijklmnop.part"
    foreign = [tmp_path / ".photo.jpg.part", tmp_path / f".rave-{dead_pid}-x.part"]
    for path in (stale, stale_png, live, old_live, *foreign):
        path.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old_live, (two_days_ago, two_days_ago))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale, stale_png, old_live])
    assert _only(tmp_path) == sorted(p.name for p in (live, *foreign))


def test_next_write_in_folder_cleans_leftovers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "_cleaned_folders", set())
    killed = subprocess.run(
        [sys.executable, "-c", "import os, sys; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    leftover = tmp_path / f".rave-{int(killed.stdout)}-a1b2c3d4.part"
    leftover.write_bytes(b"half a photo")
    write_photo(tmp_path / "a.png", _noise(8, 8))
    assert _only(tmp_path) == ["a.png"]


def test_probe_finds_unwritable_folder(tmp_path: Path, monkeypatch) -> None:
    probe_folder(tmp_path / "new" / "folder")  # created, left empty
    assert _only(tmp_path / "new" / "folder") == []

    def read_only(descriptor: int, data) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "write", read_only)
    with pytest.raises(OSError) as caught:
        probe_folder(tmp_path)
    assert caught.value.errno == errno.EROFS
    assert _only(tmp_path) == ["new"]


# --- a real full file system -----------------------------------------------------------


@pytest.fixture
def small_tmpfs(mount_tmpfs) -> Path:
    """A 2 MiB tmpfs with 100 KiB left, or skip where this process cannot mount one."""
    folder = mount_tmpfs("small", "size=2m")
    (folder / "fill").write_bytes(bytes(2048 * 1024 - 100 * 1024))
    return folder


@pytest.mark.parametrize("fmt", FORMATS)
def test_full_tmpfs_write_fails_and_keeps_previous_file(small_tmpfs: Path, fmt: str) -> None:
    # Noise over the 100 KiB left (110-140 kB); before the fix the JPEG, TIFF and BMP came
    # out as 102,400 bytes and were renamed into place.
    side = 320 if fmt == "webp" else 210
    target = small_tmpfs / f"photo.{fmt}"
    target.write_bytes(b"previous")
    with pytest.raises(OSError) as caught:
        write_photo(target, _noise(side, side))
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"previous"
    assert _only(small_tmpfs) == ["fill", target.name]


def test_full_tmpfs_16_bit_png_says_no_space(small_tmpfs: Path) -> None:
    with pytest.raises(OSError) as caught:
        write_photo(small_tmpfs / "photo.png", _noise(210, 210, np.uint16))
    assert caught.value.errno == errno.ENOSPC
    assert "No space left on device" in str(caught.value)
    assert _only(small_tmpfs) == ["fill"]


def test_checkpoints_and_residual_files_follow_umask(tmp_path: Path) -> None:
    """Before, checkpoints, reports and residual vectors were created 0600 whatever the umask."""
    import torch

    from rave.guidance.residual import ResidualVector, load_residual, save_residual
    from rave.training.artifacts import save_checkpoint

    unit = torch.nn.functional.normalize(torch.ones(4), dim=0)
    residual = ResidualVector(
        residual=unit, threshold=0.5, mean_well_lit=unit, mean_backlit=unit, encoder="test",
        num_backlit=1, num_well_lit=1, num_skipped=0, files_sha256="0" * 64,
        created="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    previous = os.umask(0o022)
    try:
        save_checkpoint({"weights": torch.zeros(2)}, tmp_path / "run" / "last.pt")
        save_residual(residual, tmp_path / "rv.pt")
    finally:
        os.umask(previous)
    for path in (tmp_path / "run" / "last.pt", tmp_path / "rv.pt"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["weights"].shape == (2,)
    assert torch.equal(load_residual(tmp_path / "rv.pt").residual, unit)
