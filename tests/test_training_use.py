"""Defects found by using ``rave train`` on small folders of one's own, as a researcher would
(each test failed before its fix). tests/test_training_audit.py holds an earlier round."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from _cli_errors import one_error_line
from rave.network import load_checkpoint_file
from rave.training.config import ConfigError, load_config
from rave.training.methods import list_methods, register_method
from rave.training.methods.rave import RaveMethod
from test_training import make_folders, tiny_config, tiny_factory
from test_training_audit import _config_file


@pytest.fixture()
def folders(tmp_path: Path) -> Path:
    return make_folders(tmp_path)


@pytest.fixture()
def tiny_encoders(monkeypatch) -> None:
    import rave.training.loop as loop

    monkeypatch.setattr(loop, "_default_encoder_factory", tiny_factory)


def _train(*args: str):
    from rave.cli import main

    return CliRunner().invoke(main, ["train", *args])


# --------------------------------------------------------------------------- interruptions
def test_ctrl_c_before_the_first_iteration_does_not_promise_a_resume(
    folders: Path, tiny_encoders, monkeypatch
) -> None:
    """Ctrl-C while RAVE's residual (or CLIP-LIT's prompts) were being prepared said
    "resume with --resume (run/last.pt)", and that --resume then failed: no checkpoint
    is saved before the first iteration."""
    import rave.guidance.residual as residual

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(residual, "compute_residual", interrupted)
    result = _train(str(_config_file(folders)))
    assert result.exit_code == 130, result.output
    assert "interrupted before the first iteration: no checkpoint was saved" in result.output
    assert "resume with --resume" not in result.output
    assert not (folders / "run" / "last.pt").exists()


class _InterruptAtStep4(RaveMethod):
    name = "ctrl-c-at-4-rave"

    def guided_loss(self, enhanced, inputs, *, step, light=None):
        if step == 4:
            raise KeyboardInterrupt
        return super().guided_loss(enhanced, inputs, step=step, light=light)


@pytest.mark.parametrize("interrupt", [False, True])
def test_a_loss_plot_that_fails_does_not_end_the_run_or_hide_ctrl_c(
    folders: Path, tiny_encoders, monkeypatch, caplog, interrupt: bool
) -> None:
    """A Ctrl-C that cut matplotlib's first import short left it half-initialised: the
    loss plot drawn after the interruption raised KeyError ('PolyCollection:kwdoc'), a
    traceback with exit status 1 instead of 130 and no "resume" line. A plotting failure
    other than OSError during the run ended it without saving ``last.pt``."""
    import rave.training.loop as loop

    if "ctrl-c-at-4-rave" not in list_methods():
        register_method("ctrl-c-at-4-rave", _InterruptAtStep4)

    def broken_plot(*args, **kwargs):
        raise KeyError("PolyCollection:kwdoc")

    monkeypatch.setattr(loop, "save_loss_plot", broken_plot)
    method = "ctrl-c-at-4-rave" if interrupt else "rave"
    result = _train(str(_config_file(folders, method=method, sample_every=2)))
    assert "Traceback" not in result.output
    assert result.exit_code == (130 if interrupt else 0), result.output
    assert ("resume with --resume" in result.output) == interrupt
    assert "no loss plot (KeyError" in caplog.text
    assert load_checkpoint_file(folders / "run" / "last.pt")["iteration"] == (4 if interrupt else 6)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(
    folders: Path, tiny_encoders, monkeypatch
) -> None:
    """ENOSPC while writing ``last.pt`` was a traceback; it is one line saying what
    ``last.pt`` still holds (the atomic write leaves the previous checkpoint whole)."""
    import rave.training.artifacts as artifacts

    real_write = artifacts.atomic_write_bytes
    writes: list[str] = []

    def fills_up(path, data):
        if Path(path).name == "last.pt":
            writes.append(str(path))
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(artifacts, "atomic_write_bytes", fills_up)
    result = _train(str(_config_file(folders, checkpoint_every=2)))
    line = one_error_line(result, 1)
    last = folders / "run" / "last.pt"
    assert line == (
        f"Error: iteration 4: cannot write {last} ({os.strerror(errno.ENOSPC)}); "
        f"{last} holds iteration 2"
    )
    assert load_checkpoint_file(last)["iteration"] == 2


# --------------------------------------------------------------------------- the config
def test_a_mistyped_key_gets_the_close_key_and_its_line(tmp_path: Path) -> None:
    """An unknown key listed all 54 valid keys, without the one meant or its line."""
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-3\nbatch_sise: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: unknown config key(s) 'batch_sise' (line 2; did you mean 'batch_size'?)"
    )
    with pytest.raises(ConfigError, match=r"'Lr' \(did you mean 'lr'\?\)$"):
        load_config(None, ["Lr=1"])
    with pytest.raises(ConfigError, match=r"'xyz'; valid keys: amp, augment, "):
        load_config(None, ["xyz=1"])
    with pytest.raises(ConfigError, match=r"'residual_wieght' \(did you mean 'residual_weight'"):
        from rave.training.loop import _check_method

        _check_method(load_config(None, ["method_options.residual_wieght=2"]))
    path.write_text("lr: 1.0e-3\nbatch_size: two\n")
    with pytest.raises(ConfigError, match=r"batch_size: expected an integer, got 'two' \(line 2\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # the mistake is on line 2; PyYAML finds it on line 3
        ("lr: 1\nbatch_size 2\ncrop_size: 3\n", "while scanning a simple key at line 2, column 1"),
        ("lr: 1\nzoom_range: [1\ncrop_size: 3\n", "while parsing a flow sequence at line 2"),
        ("lr:1\n", "got the text 'lr:1' (a key needs a space after its colon: 'lr: ...')"),
        ("- lr: 1\n", "got a list (keys are written 'key: value', without a leading '- ')"),
    ],
)
def test_yaml_mistakes_name_the_line_they_are_on(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert words in str(caught.value)


@pytest.mark.parametrize("value", ["(0.8, 1.2)", "0.8,1.2", "[0.8, 1.2]"])
def test_tuple_keys_take_a_tuple_or_comma_list_from_set(value: str) -> None:
    """``--set zoom_range=(0.8,1.2)`` (as Python writes a tuple) was "expected a list"."""
    assert load_config(None, [f"zoom_range={value}"]).zoom_range == (0.8, 1.2)
    with pytest.raises(ConfigError, match=r"expected a list such as \[0.8, 1.2\], got 'wide'"):
        load_config(None, ["zoom_range=wide"])


def test_a_home_relative_path_is_expanded(tmp_path: Path, monkeypatch) -> None:
    """``backlit_dir: ~/photos`` failed with "no such folder": no shell expands a config."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(None, ["backlit_dir=~/photos", "output_dir=~/runs/a"])
    assert (config.backlit_dir, config.output_dir) == (
        str(tmp_path / "photos"),
        str(tmp_path / "runs" / "a"),
    )


def test_a_data_folder_beside_the_config_but_not_here_says_where_paths_are_read(
    folders: Path, tiny_encoders, monkeypatch
) -> None:
    config = folders / "c.yaml"
    config.write_text("backlit_dir: backlit\nwell_lit_dir: well\noutput_dir: run\n")
    elsewhere = folders / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    line = one_error_line(_train(str(config)), 2)
    assert "backlit_dir backlit: no such folder in the current folder" in line
    assert f"use {(folders / 'backlit').resolve()}" in line
    assert not (elsewhere / "run").exists()


# --------------------------------------------------------------------------- resuming
def test_resume_with_a_changed_config_says_old_and_new_values(folders: Path, caplog) -> None:
    """The warning named the changed keys only; which values, it did not say."""
    from rave.training.loop import train

    train(tiny_config(folders, iterations=4), encoder_factory=tiny_factory)
    changed = tiny_config(folders, iterations=5, lr=0.002, crop_size=24)
    train(changed, resume="last", encoder_factory=tiny_factory)
    assert "(crop_size 16 -> 24, lr 0.001 -> 0.002)" in caplog.text


def test_resume_before_the_config_file_is_understood(folders: Path, tiny_encoders) -> None:
    """``rave train --resume run.yaml`` took the YAML file as the checkpoint and said
    "Missing argument 'CONFIG_FILE'"."""
    config = str(_config_file(folders, iterations=4))
    assert _train(config).exit_code == 0
    result = _train("--resume", config, "--set", "iterations=5")
    assert result.exit_code == 0, result.output
    assert load_checkpoint_file(folders / "run" / "last.pt")["iteration"] == 5
    assert "Missing argument 'CONFIG_FILE'" in _train("--resume").output


def test_the_end_of_a_run_says_which_network_best_pt_holds(folders: Path, tiny_encoders) -> None:
    """best.pt's choice was recorded only inside the file (best_info)."""
    result = _train(str(_config_file(folders)))
    assert result.exit_code == 0, result.output
    info = load_checkpoint_file(folders / "run" / "best.pt")["best_info"]
    where = f"round {info['round']}" if info["stage"] == "guided" else "reconstruction stage"
    assert f"best.pt: the network after iteration {info['iteration']} ({where})" in result.output


class _RoundEndCounter(RaveMethod):
    """RAVE whose round-end hook counts (in its checkpointed state) and, when asked, is
    interrupted by Ctrl-C after half its work, as a CLIP-LIT prompt refinement can be."""

    name = "round-end-counter-rave"
    interrupt_next = False

    def __init__(self, context) -> None:
        super().__init__(context)
        self.rounds_ended = 0

    def end_of_round(self, round_index, best_enhancer) -> None:
        self.rounds_ended += 1
        if type(self).interrupt_next:
            type(self).interrupt_next = False
            raise KeyboardInterrupt

    def state_dict(self):
        return {**super().state_dict(), "rounds_ended": self.rounds_ended}

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.rounds_ended = int(state.get("rounds_ended", 0))


@pytest.mark.slow  # three short runs
def test_ctrl_c_during_a_rounds_end_is_finished_on_resume(tmp_path: Path) -> None:
    """Ctrl-C in the method's round-end hook (CLIP-LIT refines its prompts there, for
    minutes) saved last.pt at ``iteration == round_end`` with half the hook's work; the
    resumed run then never ended a round again (no refinement, the round number stuck) and
    metrics.csv lacked the interrupted iteration. Resumed, it now matches an uninterrupted
    run in its rounds, the hook's count and the metrics rows."""
    from rave.training.loop import train
    from test_training import read_metrics

    if "round-end-counter-rave" not in list_methods():
        register_method("round-end-counter-rave", _RoundEndCounter)
    runs = {}
    for name, interrupt in (("whole", False), ("interrupted", True)):
        root = make_folders(tmp_path / name)
        config = tiny_config(root, method="round-end-counter-rave", iterations=9)
        _RoundEndCounter.interrupt_next = interrupt
        if interrupt:
            with pytest.raises(KeyboardInterrupt):
                train(config, encoder_factory=tiny_factory)
            last = load_checkpoint_file(root / "run" / "last.pt")
            assert last["iteration"] == last["run"]["round_end"] == 5  # the first round's end
            assert last["method"]["rounds_ended"] == 0  # not half of it
            train(config, resume="last", encoder_factory=tiny_factory)
        else:
            train(config, encoder_factory=tiny_factory)
        runs[name] = (load_checkpoint_file(root / "run" / "last.pt"), read_metrics(root / "run"))
    (whole, whole_rows), (resumed, resumed_rows) = runs["whole"], runs["interrupted"]
    assert resumed["method"]["rounds_ended"] == whole["method"]["rounds_ended"] == 3
    assert resumed["run"]["round"] == whole["run"]["round"]
    assert resumed["run"]["round_end"] == whole["run"]["round_end"]
    assert [int(r["iteration"]) for r in resumed_rows] == list(range(9))
    assert [(r["stage"], r["round"]) for r in resumed_rows] == [
        (r["stage"], r["round"]) for r in whole_rows
    ]


@pytest.mark.slow  # a CLIP-LIT-Latent run with the tiny CLIP
def test_a_fresh_prompt_run_does_not_keep_an_interrupted_runs_prompt_rows(
    folders: Path, tmp_path: Path
) -> None:
    """Ctrl-C during CLIP-LIT's prompt initialisation leaves prompt_metrics.csv (and no
    checkpoint); the fresh run that follows appended its rows to those, so the file held
    iterations 1, 2, 3, 1, 2, ... Resumed runs keep the rows up to their checkpoint."""
    import torch

    from _tiny_clip import register_tiny_clip
    from rave.encoders import create_encoder
    from rave.training.loop import train

    name = register_tiny_clip(tmp_path / "clip_cfg")

    def factory(encoder: str, device: torch.device):
        torch.manual_seed(0)
        return create_encoder(encoder, device=device)

    options = {"prompt_init_iterations": 3, "refine_iterations": 2, "prompt_image_size": 32,
               "prompt_extend_iterations": 0}  # fmt: skip
    config = tiny_config(
        folders, method="clip-lit-latent", guidance_encoder=name, identity_encoder=name,
        identity_layer_weights=(1.0, 1.0), method_options=options, max_reinits=0,
        iterations=5, round_iterations=2,
    )  # fmt: skip
    run = folders / "run"
    run.mkdir()
    leftover = "iteration,stage,round,loss,accuracy\n1,init,0,99,nan\n2,init,0,99,nan\n"
    (run / "prompt_metrics.csv").write_text(leftover)
    train(config, encoder_factory=factory)
    rows = (run / "prompt_metrics.csv").read_text().splitlines()[1:]
    assert not [row for row in rows if ",99," in row]
    iterations = [int(row.split(",")[0]) for row in rows if row.split(",")[3] != "nan"]
    assert iterations == list(range(1, len(iterations) + 1))
    before = len(rows)

    train(dataclasses.replace(config, iterations=7), resume="last", encoder_factory=factory)
    after = (run / "prompt_metrics.csv").read_text().splitlines()[1:]
    assert after[:before] == rows and len(after) > before


def test_the_progress_bar_names_the_stage_and_round(folders: Path, tiny_encoders) -> None:
    """The bar showed the loss terms only: the stage or round of a run, nowhere."""
    result = _train(str(_config_file(folders, round_iterations=2)))
    assert result.exit_code == 0, result.output
    bars = result.output.replace("\r", "\n").splitlines()
    for where in ("reconstruction: ", "round 1: ", "round 2: "):
        assert any(line.startswith(where) for line in bars), where
    quiet = _train(str(_config_file(folders, round_iterations=2)), "--quiet", "--resume",
                   "--set", "iterations=8")  # fmt: skip
    assert quiet.exit_code == 0, quiet.output


@pytest.mark.parametrize("key", ["backlit", "well"])
def test_the_run_folder_cannot_be_a_data_folder(folders: Path, tiny_encoders, key: str) -> None:
    """``output_dir`` set to a data folder wrote loss_curves.png (and samples) among the
    training images, where the next run read the plot as a photo."""
    before = sorted(p.name for p in (folders / key).iterdir())
    result = _train(str(_config_file(folders, output_dir=folders / key)))
    assert "would become training images" in one_error_line(result, 2)
    assert sorted(p.name for p in (folders / key).iterdir()) == before
