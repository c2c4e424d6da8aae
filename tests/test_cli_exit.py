"""The ``rave`` console script (``rave.cli.run``): ``rave enhance`` leaves without teardown.

Run in real subprocesses, as a user runs it: the outputs, the exit status and every line
printed must survive the fast exit, and only ``enhance`` may skip the interpreter's
teardown (an ``atexit`` handler shows whether it ran).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TEARDOWN = "TEARDOWN-RAN"


def _rave(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``run(args)`` in a fresh interpreter with an atexit handler that prints TEARDOWN."""
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print({TEARDOWN!r}, flush=True))\n"
        "from rave.cli import run\n"
        "sys.exit(run(sys.argv[1:]))\n"
    )
    env = dict(os.environ, RAVE_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _photo(path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = (rng.random((24, 32, 3)) ** 3 * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def test_enhance_writes_everything_and_skips_teardown(tmp_path: Path) -> None:
    _photo(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = _rave(["enhance", "a.png", "b.png", "-o", "out", "--device", "cpu"], tmp_path)
    # one photo failed: status 1, both lines printed, the good photo written and readable
    assert result.returncode == 1, result.stderr
    assert "b.png" in result.stdout + result.stderr
    assert "1 enhanced, 0 skipped, 1 failed" in result.stdout
    with Image.open(tmp_path / "out" / "a.png") as image:
        assert image.size == (32, 24)
    assert TEARDOWN not in result.stdout  # left with os._exit
    again = _rave(["enhance", "a.png", "-o", "out", "--device", "cpu"], tmp_path)
    assert again.returncode == 0 and "1 skipped" in again.stdout
    assert TEARDOWN not in again.stdout


@pytest.mark.parametrize("args", [["models"], ["--version"], ["enhance", "--help"]])
def test_other_commands_exit_normally(tmp_path: Path, args: list[str]) -> None:
    result = _rave(args, tmp_path)
    assert result.returncode == 0, result.stderr
    # `enhance --help` is enhance too: the fast exit applies, and its text must be complete
    if args[0] == "enhance":
        assert "--strength" in result.stdout and TEARDOWN not in result.stdout
    else:
        assert TEARDOWN in result.stdout


def test_usage_errors_keep_their_status(tmp_path: Path) -> None:
    result = _rave(["enhance", "--tile", "nonsense", "x.png"], tmp_path)
    assert result.returncode == 2
    assert "tile" in result.stderr.lower()
