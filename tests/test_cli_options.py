"""One command line: the same option means the same in every ``rave`` command."""

from __future__ import annotations

import os
import re

import click
import pytest
import torch
from click.testing import CliRunner

from rave.cli import COMMANDS, main
from rave.cli._options import HiddenAliasOption


def _command(name: str) -> click.Command:
    command = main.get_command(click.Context(main), name)
    assert command is not None
    return command


def _option(command: click.Command, name: str) -> click.Option | None:
    for param in command.params:
        if isinstance(param, click.Option) and name in param.opts + param.secondary_opts:
            return param
    return None


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_option_has_help(name: str) -> None:
    missing = [
        param.opts[-1]
        for param in _command(name).params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("name", "old"),
    [("enhance", "--output-dir"), ("evaluate", "--out"), ("residual", None), ("shift", None)],
)
def test_output_is_dash_o_output_old_spelling_hidden(name: str, old: str | None) -> None:
    option = _option(_command(name), "--output")
    assert option is not None and "-o" in option.opts
    help_text = CliRunner().invoke(main, [name, "--help"]).output
    assert "-o, --output" in help_text
    if old is not None:
        assert isinstance(option, HiddenAliasOption) and old in option.opts
        assert re.search(re.escape(old) + r"\b(?!-)", help_text) is None


@pytest.mark.parametrize("name", ["enhance", "residual", "shift", "interpret", "evaluate", "serve"])
def test_device_defaults_to_auto(name: str) -> None:
    option = _option(_command(name), "--device")
    assert option is not None and option.default == "auto"


@pytest.mark.parametrize("name", ["enhance", "residual", "shift", "interpret", "evaluate", "train"])
def test_quiet_is_dash_q_everywhere(name: str) -> None:
    option = _option(_command(name), "--quiet")
    assert option is not None and "-q" in option.opts


@pytest.mark.parametrize("name", ["residual", "shift", "evaluate", "enhance"])
def test_overwrite_option_everywhere_output_is_written(name: str) -> None:
    assert _option(_command(name), "--overwrite") is not None


def test_device_gpu_lists_only_real_choices(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["enhance", "x.png", "--device", "gpu"])
    assert result.exit_code == 2
    assert "unknown device 'gpu'; choose one of: auto, cpu" in result.output
    assert "cuda" not in result.output.split("choose one of:")[1].split("\n")[0]


def test_set_reads_exponent_floats() -> None:
    from rave.training.config import TrainConfig, apply_overrides

    config = apply_overrides(TrainConfig(), ["lr=1e-4"])
    assert config.lr == pytest.approx(1e-4) and isinstance(config.lr, float)


def test_offline_forbids_hub_downloads_for_every_command(monkeypatch) -> None:
    monkeypatch.setenv("RAVE_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert CliRunner().invoke(main, ["models"]).exit_code == 0
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # huggingface_hub fails at once
