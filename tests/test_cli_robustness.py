"""``rave enhance`` on hostile inputs and options: unreadable folders, FIFOs, odd numbers,
clashing names, a damaged results record, signals.

Each problem must give one line naming the file and the problem, and the rest of the batch
must go on. Tests run as root, where chmod 000 hides nothing: unreadable folders are
simulated by making ``os.scandir`` (under ``os.walk``) raise PermissionError.
"""

from __future__ import annotations

import os
from pathlib import Path

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
