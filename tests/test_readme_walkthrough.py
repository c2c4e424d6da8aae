"""What a new user walking through the README found: each test pins one fix."""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image


class _CtrlCOnImport(importlib.abc.MetaPathFinder):
    """Raises KeyboardInterrupt when ``name`` is imported: Ctrl-C while Python loads it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == self.name:
            raise KeyboardInterrupt


def test_ctrl_c_while_the_console_script_imports_its_helpers_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: Ctrl-C exits 130 with one line. ``rave enhance`` interrupted in its first
    half second (importing rave.cli._batch, which loads NumPy and Pillow) printed a
    KeyboardInterrupt traceback instead."""
    from rave.cli import run

    monkeypatch.delitem(sys.modules, "rave.cli._batch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_CtrlCOnImport("rave.cli._batch"), *sys.meta_path])
    try:
        with pytest.raises(SystemExit) as stop:
            run(["enhance", "photo.jpg"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while rave starts escaped as a traceback")
    assert stop.value.code == 130
    assert capsys.readouterr().err == "rave enhance: interrupted while starting: nothing was done\n"


def test_a_format_pillow_reads_but_rave_does_not_write_gets_its_note() -> None:
    """README: formats rave does not write come out as PNG "with a note". A named .ico (read
    by Pillow, outside the folder-scan list) was written as PNG without one."""
    from rave.io.formats import default_output_note

    assert default_output_note(".ico") == "ICO input written as PNG (rave does not write ICO)"
    assert default_output_note(".PCX") == "PCX input written as PNG (rave does not write PCX)"
    assert default_output_note(".gif") == "GIF input written as PNG (rave does not write GIF)"
    assert default_output_note(".jpg") is None  # written as itself
    assert default_output_note(".part") is None  # no format of that name
    assert default_output_note("") is None


def test_rave_enhance_names_the_png_it_writes_for_an_ico(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rave.cli import main

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 24), (40, 60, 80)).save("icon.ico", sizes=[(32, 24)])
    result = CliRunner().invoke(main, ["enhance", "icon.ico", "-o", "out", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "icon.png").is_file()
    assert "note: icon.ico: ICO input written as PNG (rave does not write ICO)" in result.output
