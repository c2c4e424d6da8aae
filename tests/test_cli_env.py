"""``rave env``: versions and the convolution backend actually chosen."""

from __future__ import annotations

import re

import torch
from click.testing import CliRunner

from rave import __version__
from rave.cli import main
from rave.inference import winograd


def _rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        name, _, value = re.split(r"(\s{2,})", line, maxsplit=1)
        rows[name] = value
    return rows


def test_reports_versions_and_backend(isolated_model_cache) -> None:
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["rave"] == __version__
    assert rows["torch"] == torch.__version__.split("+")[0]
    # the test suite forbids downloads (RAVE_OFFLINE), and rave env says so
    assert rows["model cache"] == f"{isolated_model_cache}  (RAVE_OFFLINE: no downloads)"
    expected = "winograd" if winograd.load_kernel() is not None else "channels_last"
    assert rows["CPU convolutions"] == expected
    assert rows["Winograd kernel"] == winograd.kernel_status()


def test_says_why_the_kernel_is_not_used(monkeypatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    winograd.load_kernel.cache_clear()
    try:
        result = CliRunner().invoke(main, ["env"])
    finally:
        winograd.load_kernel.cache_clear()
    rows = _rows(result.output)
    assert rows["CPU convolutions"] == "channels_last"
    assert "no C compiler" in rows["Winograd kernel"]


def test_no_build_checks_nothing(monkeypatch) -> None:
    result = CliRunner().invoke(main, ["env", "--no-build"])
    assert _rows(result.output)["CPU convolutions"] == "not checked (--no-build)"
    assert "Winograd kernel" not in _rows(result.output)


def test_bad_forced_backend_is_reported_not_raised(monkeypatch) -> None:
    monkeypatch.setenv("RAVE_CONV_BACKEND", "bogus")
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 0
    assert _rows(result.output)["CPU convolutions"].startswith("error: RAVE_CONV_BACKEND")
