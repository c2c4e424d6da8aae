"""``rave enhance`` on hostile inputs and options: unreadable folders, FIFOs, odd numbers,
clashing names, a damaged results record, signals.

Each problem must give one line naming the file and the problem, and the rest of the batch
must go on. Tests run as root, where chmod 000 hides nothing: unreadable folders are
simulated by making ``os.scandir`` (under ``os.walk``) raise PermissionError.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from rave.cli import main
from rave.io.provenance import MANIFEST_NAME


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(checkpoint: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["enhance", *args, "--model", str(checkpoint), "--device", "cpu"]
    )


def _photo(path: str | Path, seed: int = 0, fmt: str | None = None) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(10, 120, (30, 40, 3)).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


def _lines(result: Result, prefix: str = "error:") -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(prefix)]


def _results(folder: str | Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name != MANIFEST_NAME)


# --- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-pixels", "inf"], "not a pixel count"),
        (["--max-pixels", "1e400"], "not a pixel count"),
        (["--max-pixels", "-inf"], "not a pixel count"),
        (["--max-pixels", "nan"], "not a pixel count"),
        (["--strength", "nan"], "not a finite number"),
        (["--strength", "NaN"], "not a finite number"),
        (["--strength", "inf"], "--strength"),
        (["-o", ""], "must not be empty"),
    ],
)
def test_non_finite_numbers_and_empty_output_are_usage_errors(
    work: Path, args: list[str], message: str
) -> None:
    _photo("a.png")
    result = CliRunner().invoke(main, ["enhance", "a.png", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not os.path.exists("enhanced")
    assert os.listdir(".") == ["a.png"]  # nothing written beside the input either


# --- folders that cannot be read ---------------------------------------------------------


@pytest.fixture
def deny(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """``deny(folder)``: listing ``folder`` or looking at anything inside it fails with
    EACCES, as chmod 000 does for anyone but root (the tests run as root)."""
    denied: set[str] = set()
    real_scandir, real_listdir, real_lstat = os.scandir, os.listdir, os.lstat

    def refused(path: Any, inside: bool) -> bool:
        if not isinstance(path, (str, os.PathLike)):
            return False  # a file descriptor
        full = os.path.abspath(os.fspath(path))
        folder = os.path.dirname(full) if inside else full
        return folder in denied

    def error(path: Any) -> PermissionError:
        return PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def scandir(path: Any = ".") -> Any:
        if refused(path, inside=False):
            raise error(path)
        return real_scandir(path)

    def listdir(path: Any = ".") -> Any:
        if refused(path, inside=False):
            raise error(path)
        return real_listdir(path)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if refused(path, inside=True):
            raise error(path)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "lstat", lstat)
    return lambda folder: denied.add(os.path.abspath(folder))


def test_unreadable_folder_is_one_error_and_the_batch_goes_on(
    work: Path, checkpoint: Path, deny: Callable[[str], None]
) -> None:
    _photo("ok/a.png")
    _photo("secret/b.png", 1)
    deny("secret")
    result = _run(checkpoint, "ok", "secret", "-o", "out")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert _lines(result) == [
        "error: secret: folder cannot be read (permission denied); its photos were not enhanced"
    ]
    assert "1 enhanced, 0 skipped, 1 failed" in result.stdout
    assert _results("out") == ["a.png"]


def test_unreadable_folder_with_r_says_it_cannot_be_read(
    work: Path, checkpoint: Path, deny: Callable[[str], None]
) -> None:
    _photo("secret/b.png")
    deny("secret")
    result = _run(checkpoint, "secret", "-r", "-o", "out")
    assert result.exit_code == 1, result.output
    assert _lines(result) == [
        "error: secret: folder cannot be read (permission denied); its photos were not enhanced"
    ]
    assert "no images found" not in result.output


def test_unreadable_sub_folders_with_r_are_reported_and_counted(
    work: Path, checkpoint: Path, deny: Callable[[str], None]
) -> None:
    _photo("trip/a.png")
    _photo("trip/day1/b.png", 1)
    _photo("trip/day2/c.png", 2)
    _photo("trip/day2/deeper/d.png", 3)
    deny("trip/day2")
    result = _run(checkpoint, "trip", "-r", "-o", "out")
    assert result.exit_code == 1, result.output
    assert _lines(result) == [
        "error: trip/day2: folder cannot be read (permission denied); its photos were not enhanced"
    ]
    assert "2 enhanced, 0 skipped, 1 failed" in result.stdout
    assert sorted(str(p.relative_to("out")) for p in Path("out").rglob("*.png")) == [
        "a.png",
        "day1/b.png",
    ]


def test_unreadable_folder_for_real(work: Path, checkpoint: Path) -> None:
    _photo("ok/a.png")
    _photo("secret/b.png", 1)
    os.chmod("secret", 0)
    try:
        if os.access("secret", os.R_OK):
            pytest.skip("this user reads folders whatever their mode (root)")
        result = _run(checkpoint, "ok", "secret", "-o", "out")
    finally:
        os.chmod("secret", 0o755)
    assert result.exit_code == 1, result.output
    assert _lines(result) == [
        "error: secret: folder cannot be read (permission denied); its photos were not enhanced"
    ]
    assert _results("out") == ["a.png"]


def test_file_in_folder_that_cannot_be_entered_is_permission_denied(
    work: Path, checkpoint: Path, deny: Callable[[str], None]
) -> None:
    _photo("locked/a.png")
    _photo("b.png", 1)
    deny("locked")
    result = _run(checkpoint, "locked/a.png", "b.png", "-o", "out")
    assert result.exit_code == 1, result.output
    assert _lines(result) == ["error: locked/a.png: permission denied"]
    assert _results("out") == ["b.png"]


def test_file_that_cannot_be_opened_is_permission_denied(
    work: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _photo("secret.png")
    _photo("b.png", 1)
    real_open = os.open

    def no_access(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:  # as chmod 000
        if os.path.basename(os.fspath(path)) == "secret.png":
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_access)
    result = _run(checkpoint, "secret.png", "b.png", "-o", "out")
    assert result.exit_code == 1, result.output
    assert _lines(result) == ["error: secret.png: permission denied"]
    assert _results("out") == ["b.png"]


def test_sub_folders_left_out_without_r_are_counted_in_a_note(work: Path, checkpoint: Path) -> None:
    _photo("trip/a.png")
    _photo("trip/day1/b.png", 1)
    _photo("trip/day2/c.png", 2)
    (work / "trip" / ".thumbnails").mkdir()  # hidden: -r would not include it either
    result = _run(checkpoint, "trip", "-o", "out")
    assert result.exit_code == 0, result.output
    assert _lines(result, "note: trip") == [
        "note: trip: skipped 2 sub-folder(s) (use -r to include them)"
    ]
    only_folders = _run(checkpoint, "trip/day1/..", "-o", "out2", "-r")
    assert _lines(only_folders, "note:") == []  # -r: nothing left out

    (work / "empty" / "sub").mkdir(parents=True)
    result = _run(checkpoint, "empty", "-o", "out3")
    assert _lines(result) == [
        "error: empty: no images found in this folder (use -r to include its 1 sub-folder(s))"
    ]


# --- files that are not regular files ------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_and_device_fail_fast_and_the_batch_goes_on(work: Path, checkpoint: Path) -> None:
    os.mkfifo("fifo.jpg")
    (work / "folder").mkdir()
    os.symlink("/dev/zero", "folder/zero.png")
    _photo("folder/ok.png")
    code = "import sys\nfrom rave.cli import run\nsys.exit(run(sys.argv[1:]))\n"
    args = ["enhance", "fifo.jpg", "folder", "-o", "out", "--model", str(checkpoint)]
    env = dict(os.environ, RAVE_OFFLINE="1", OMP_NUM_THREADS="1")
    # A regression blocks on the FIFO (or reads /dev/zero forever): the timeout fails it.
    result = subprocess.run(
        [sys.executable, "-c", code, *args, "--device", "cpu", "-q"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: fifo.jpg: not a regular file",
        "error: folder/zero.png: not a regular file",
    ]
    assert "1 enhanced, 0 skipped, 2 failed" in result.stdout
    assert _results("out") == ["ok.png"]


def _returns_within(
    seconds: float, action: Callable[[], object]
) -> tuple[bool, BaseException | None]:
    """Run ``action`` in a daemon thread: (whether it returned in time, what it raised)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
        except BaseException as err:  # handed to the test
            outcome.append(err)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(outcome), outcome[0] if outcome else None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_source_sha256_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    from rave.io.provenance import source_sha256

    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    try:
        for path in (fifo, zero):
            returned, raised = _returns_within(10, lambda path=path: source_sha256(path))
            assert returned, f"source_sha256({path.name}) did not return"
            assert isinstance(raised, OSError) and raised.strerror == "not a regular file"
    finally:
        # Unblock a reader stuck in open() (a regression) so the thread can end.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    with pytest.raises(IsADirectoryError):
        source_sha256(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"abc")
    assert source_sha256(tmp_path / "a.bin") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# --- result names ------------------------------------------------------------------------


def test_same_stem_names_differing_in_case_get_two_results_and_rerun_skips(
    work: Path, checkpoint: Path
) -> None:
    _photo("c/a.jpg", 1, "JPEG")
    _photo("c/a.JPG", 2, "JPEG")
    first = _run(checkpoint, "c", "-o", "out", "--format", "png")
    assert first.exit_code == 0, first.output
    assert "2 enhanced, 0 skipped, 0 failed" in first.stdout
    # Name order decides the number: "a.JPG" sorts before "a.jpg".
    assert _results("out") == ["a_jpg.png", "a_jpg_2.png"]
    again = _run(checkpoint, "c", "-o", "out", "--format", "png")
    assert again.exit_code == 0, again.output
    assert "0 enhanced, 2 skipped, 0 failed" in again.stdout
    alone = _run(checkpoint, "c/a.jpg", "-o", "out", "--format", "png")
    assert "0 enhanced, 1 skipped" in alone.stdout  # the folder, not the batch, names it


def _planned_names(inputs: list[str], fmt: str | None, suffix: str = "") -> dict[str, str]:
    from rave.cli.enhance import _collect, _plan

    jobs, errors, _ = _collect(tuple(inputs), False, Path("out"))
    assert errors == []
    jobs = _plan(jobs, output_dir=Path("out"), suffix=suffix, format=fmt, in_place_allowed=False)
    assert [job.error for job in jobs] == [None] * len(jobs)
    return {str(job.source): str(job.target) for job in jobs}


@pytest.mark.parametrize("fmt", [None, "png", "jpg", "tif"])
def test_result_names_are_distinct_and_stable_for_any_inputs(work: Path, fmt: str | None) -> None:
    names = ["a.jpg", "a.JPG", "a.Jpg", "a.png", "a_jpg.jpg", "a_jpg_2.png", "x.jxl", "x.psd"]
    names += ["x.JXL", "IMG.CR2", "IMG.jpg", "IMG.tif", "b.tif", "B.TIF"]
    (work / "in").mkdir()
    for name in names:
        (work / "in" / name).write_bytes(b"not decoded while planning")
    inputs = ["in", "in/x.jxl", "in/x.psd", "in/x.JXL"]  # not image suffixes: named one by one
    planned = _planned_names(inputs, fmt)
    assert len(planned) == len(names)
    targets = [target.casefold() for target in planned.values()]
    assert len(set(targets)) == len(targets), planned  # distinct, even ignoring case
    assert _planned_names(inputs, fmt) == planned  # the same on every run
    assert _planned_names(list(reversed(inputs)), fmt)["in/a.JPG"] == planned["in/a.JPG"]


def test_formats_rave_cannot_read_still_get_their_own_names(work: Path) -> None:
    for name in ("x.jxl", "x.psd"):
        Path(name).write_bytes(b"not decoded while planning")
    assert _planned_names(["x.jxl", "x.psd"], None) == {
        "x.jxl": "out/x.png",
        "x.psd": "out/x_psd.png",
    }


# --- the results record ------------------------------------------------------------------


def test_corrupt_results_record_is_reported_refused_and_kept(work: Path, checkpoint: Path) -> None:
    _photo("a.png")
    _photo("b.png", 1)
    assert _run(checkpoint, "a.png", "-o", "out").exit_code == 0
    damaged = b'{"version": 1, "results": {"a.png": '
    Path("out", MANIFEST_NAME).write_bytes(damaged)
    result = _run(checkpoint, "a.png", "b.png", "-o", "out", "-q")
    assert result.exit_code == 1, result.output
    warnings = _lines(result, "warning:")
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith(
        f"warning: out/{MANIFEST_NAME}: unreadable (not valid JSON at line 1, column 37); "
    )
    assert "--overwrite" in warnings[0]
    assert warnings[1] == (
        f"warning: the unreadable record was renamed to out/{MANIFEST_NAME}.bak; a new record "
        "was started"
    )
    [error] = _lines(result)
    assert error.startswith("error: a.png: not enhanced: out/a.png exists and rave cannot tell")
    assert f"the record out/{MANIFEST_NAME} is unreadable" in error
    assert "--overwrite replaces it" in error
    assert "1 enhanced, 0 skipped, 1 failed" in result.stdout
    # Nothing lost: the damaged record is kept byte for byte, the new one is valid.
    assert Path("out", f"{MANIFEST_NAME}.bak").read_bytes() == damaged
    assert set(json.loads(Path("out", MANIFEST_NAME).read_text())["results"]) == {"b.png"}

    again = _run(checkpoint, "a.png", "b.png", "-o", "out")
    assert "0 enhanced, 1 skipped, 1 failed" in again.stdout
    assert f"kept in out/{MANIFEST_NAME}.bak" in _lines(again)[0]
    assert _lines(again, "warning:") == []
    Path("out", MANIFEST_NAME).write_bytes(b"[" * 100_000)  # damaged a second time
    forced = _run(checkpoint, "a.png", "-o", "out", "--overwrite")
    assert forced.exit_code == 0, forced.output
    assert Path("out", f"{MANIFEST_NAME}.bak").read_bytes() == damaged  # not replaced
    assert Path("out", f"{MANIFEST_NAME}.bak2").read_bytes() == b"[" * 100_000


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not text",
        b"[" * 100_000,
        b'"a string"',
        b'{"version": 1, "results": []}',
        b"RECORD WITH A LIST FOR ITS RECIPE",
    ],
)
def test_results_record_of_any_content_never_crashes(
    work: Path, checkpoint: Path, content: bytes
) -> None:
    _photo("a.png")
    assert _run(checkpoint, "a.png", "-o", "out").exit_code == 0
    if content.startswith(b"RECORD"):  # the real record, but one field of the wrong type
        manifest = json.loads(Path("out", MANIFEST_NAME).read_text())
        manifest["results"]["a.png"]["recipe"] = [1]
        content = json.dumps(manifest).encode()
    Path("out", MANIFEST_NAME).write_bytes(content)
    result = _run(checkpoint, "a.png", "-o", "out")
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "internal error" not in result.output


# --- signals -------------------------------------------------------------------------------


def test_sigterm_summary_counts_every_result_written(
    work: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rave.io.write

    names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    for seed, name in enumerate(names):
        _photo(name, seed)
    real_write = rave.io.write.atomic_write

    def sigterm_after_writing_b(path: Any, content: Any, **options: Any) -> Any:
        written = real_write(path, content, **options)
        if Path(path).name == "b.png":
            # b's worker goes on to record b while the main thread, waiting to report a
            # photo, takes the signal: b is on disk but was never reported.
            os.kill(os.getpid(), signal.SIGTERM)
        return written

    monkeypatch.setattr(rave.io.write, "atomic_write", sigterm_after_writing_b)
    result = _run(checkpoint, *names, "-o", "out")  # overlapped (the default)
    assert result.exit_code == 143, result.output
    [summary] = _lines(result, "interrupted:")
    on_disk = _results("out")
    assert "b.png" in on_disk
    recorded = json.loads(Path("out", MANIFEST_NAME).read_text())["results"]
    assert sorted(name for name, entry in recorded.items() if entry["output"]) == on_disk
    left = len(names) - len(on_disk)
    assert summary.startswith(f"interrupted: {len(on_disk)} enhanced, 0 failed, {left} left;")
    monkeypatch.setattr(rave.io.write, "atomic_write", real_write)
    rerun = _run(checkpoint, *names, "-o", "out")
    assert f"{left} enhanced, {len(on_disk)} skipped, 0 failed" in rerun.stdout
