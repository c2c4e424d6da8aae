"""Defects found by using ``rave train`` as a user would (each test failed before its fix)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner

from _cli_errors import one_error_line
from rave.network import load_checkpoint_file
from rave.training.methods import list_methods, register_method
from rave.training.methods.rave import RaveMethod
from test_training import make_folders, tiny_factory


def _config_file(root: Path, **extra: object) -> Path:
    """A tiny run's YAML config (the test_training encoders, 16 px crops, 6 iterations)."""
    values: dict[str, object] = {
        "backlit_dir": root / "backlit",
        "well_lit_dir": root / "well",
        "output_dir": root / "run",
        "guidance_encoder": "tiny-guide",
        "identity_encoder": "tiny-id",
        "crop_size": 16,
        "batch_size": 2,
        "iterations": 6,
        "reconstruction_iterations": 3,
        "round_iterations": 2,
        "best_window": 2,
        "lr": 0.001,
        "checkpoint_every": 0,
        "sample_every": 0,
        "log_every": 1,
        "device": "cpu",
        "tensorboard": False,
        "reinit_below_psnr": -1.0,
        **extra,
    }
    path = root / "config.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in values.items()))
    return path


@pytest.fixture()
def folders(tmp_path: Path) -> Path:
    return make_folders(tmp_path)


class _Terminated(Exception):
    """What SIGTERM raises in this test when rave train does not handle it itself."""


class _SigtermAtStep4(RaveMethod):
    name = "sigterm-rave"

    def guided_loss(self, enhanced, inputs, *, step, light=None):
        if step == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
        return super().guided_loss(enhanced, inputs, step=step, light=light)


def test_sigterm_saves_a_checkpoint_and_exits_143(folders: Path, monkeypatch) -> None:
    """A job scheduler, ``docker stop`` or ``timeout`` stop a run with SIGTERM: it must save
    ``last.pt`` as Ctrl-C does. Before, SIGTERM killed the process and the iterations since
    the last periodic checkpoint were lost."""
    import rave.training.loop as loop
    from rave.cli import main

    if "sigterm-rave" not in list_methods():
        register_method("sigterm-rave", _SigtermAtStep4)
    monkeypatch.setattr(loop, "_default_encoder_factory", tiny_factory)

    def unhandled(signal_number, frame):
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, unhandled)  # stands for the default: death
    try:
        result = CliRunner().invoke(
            main, ["train", str(_config_file(folders, method="sigterm-rave"))]
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not isinstance(result.exception, _Terminated), "SIGTERM was not handled"
    assert result.exit_code == 143, result.output
    assert "resume with --resume" in result.output
    assert load_checkpoint_file(folders / "run" / "last.pt")["iteration"] == 4

    resumed = CliRunner().invoke(main, ["train", str(_config_file(folders)), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint_file(folders / "run" / "last.pt")["iteration"] == 6


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"method": "nosuch"}, "method: unknown training method 'nosuch'"),
        ({"method_options": "{residual_power: -1}"}, "residual_power must be > 0"),
    ],
)
def test_method_mistakes_are_usage_errors_found_before_any_work(
    folders: Path, monkeypatch, extra: dict[str, object], words: str
) -> None:
    """An unknown method or a refused method option is a config error (exit 2, one line),
    found before the data are decoded and the encoders loaded, and leaving no run folder.
    Before, both exited 1 after that work."""
    import rave.training.loop as loop
    from rave.cli import main

    def no_encoder(name, device):
        raise AssertionError("an encoder was loaded before the config was checked")

    monkeypatch.setattr(loop, "_default_encoder_factory", no_encoder)
    result = CliRunner().invoke(main, ["train", str(_config_file(folders, **extra))])
    assert words in one_error_line(result, 2)
    assert not (folders / "run").exists()


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_output_dir_that_cannot_be_a_folder_is_one_usage_line(
    folders: Path, monkeypatch, where: str
) -> None:
    """Before, a file in the way reached the user as ``[Errno 17] File exists: ...`` (and a
    path under a file as exit status 1), after the data and encoders were loaded."""
    import rave.training.loop as loop
    from rave.cli import main

    def no_encoder(name, device):
        raise AssertionError("an encoder was loaded before output_dir was checked")

    monkeypatch.setattr(loop, "_default_encoder_factory", no_encoder)
    blocker = folders / "blocker"
    blocker.write_text("not a folder")
    output = blocker if where == "file" else blocker / "run"
    result = CliRunner().invoke(main, ["train", str(_config_file(folders, output_dir=output))])
    line = one_error_line(result, 2)
    assert line.startswith(f"Error: output_dir {output}:") and "Errno" not in line


def test_no_restart_at_the_last_iteration_replaces_the_trained_network(
    folders: Path, caplog
) -> None:
    """A reconstruction stage that ends with the run and fails the PSNR floor used to be
    re-initialised anyway: last.pt and best.pt then held a random network no iteration
    trained (``rave enhance`` refused it as degenerate) and the run reported success."""
    import torch

    from rave.network import EnhancementNet
    from rave.training.loop import train
    from test_training import tiny_config

    config = tiny_config(folders, iterations=3, reinit_below_psnr=1e6, max_reinits=1)
    result = train(config, encoder_factory=tiny_factory)
    torch.manual_seed(config.seed + 7919)  # the first re-initialisation's weights
    fresh = EnhancementNet(padding_mode="zeros").state_dict()
    last = load_checkpoint_file(Path(config.output_dir) / "last.pt")
    assert last["run"]["reinits"] == 0
    assert any(not torch.equal(last["model"][k], fresh[k]) for k in fresh)
    assert "the run ends here: the network is kept" in caplog.text
    assert result.iterations == 3


def test_a_run_whose_restarts_leave_no_guided_iteration_says_so(folders: Path, caplog) -> None:
    """Re-initialisations move the guided stage later while ``iterations`` stays the total:
    a run can end without one guided iteration. It used to say only ``done``."""
    from rave.training.loop import train
    from test_training import read_metrics, tiny_config

    config = tiny_config(folders, iterations=5, reinit_below_psnr=1e6, max_reinits=1)
    train(config, encoder_factory=tiny_factory)
    assert {r["stage"] for r in read_metrics(Path(config.output_dir))} == {"reconstruction"}
    assert "the network was never guided" in caplog.text


def test_a_negative_seed_or_sample_count_is_a_config_error() -> None:
    """``seed: -1`` failed after the data and encoders were loaded (numpy's "expected
    non-negative integer", exit 1); ``num_samples: -1`` with a traceback."""
    from rave.training.config import ConfigError, TrainConfig

    for key in ("seed", "num_samples"):
        with pytest.raises(ConfigError, match=f"{key} must be >= 0, got -1"):
            TrainConfig(**{key: -1})


def test_num_samples_0_trains_without_a_sample_grid(folders: Path) -> None:
    """``num_samples: 0`` (no grid) crashed with torch.stack's "non-empty TensorList"."""
    from rave.training.loop import train
    from test_training import tiny_config

    config = tiny_config(folders, num_samples=0, sample_every=2, iterations=4)
    assert train(config, encoder_factory=tiny_factory).iterations == 4
    assert not (Path(config.output_dir) / "samples").exists()
    assert (Path(config.output_dir) / "loss_curves.png").is_file()


def test_paired_folders_without_a_shared_stem_are_a_usage_error(folders: Path, monkeypatch) -> None:
    """Like an empty folder, paired folders that share no file stem are the config's fault:
    exit 2 naming both folders (before: exit 1)."""
    import rave.training.loop as loop
    from rave.cli import main

    other = folders / "other"
    other.mkdir()
    (folders / "well" / "img00.png").rename(other / "unrelated.png")
    monkeypatch.setattr(loop, "_default_encoder_factory", tiny_factory)
    config = _config_file(folders, regime="paired", well_lit_dir=other)
    line = one_error_line(CliRunner().invoke(main, ["train", str(config)]), 2)
    assert f"well_lit_dir {other}" in line and "same stem" in line
    assert not (folders / "run").exists()


def test_resuming_with_another_method_is_refused_in_one_line(folders: Path) -> None:
    """A ``--resume`` whose config names another method used to hand the checkpoint's
    method state to the new method, which failed with a KeyError traceback ('prompts')."""
    from rave.network import CheckpointError
    from rave.training.loop import train
    from test_training import tiny_config

    train(tiny_config(folders, iterations=4), encoder_factory=tiny_factory)
    with pytest.raises(CheckpointError, match="a run of method 'rave', but the config says"):
        train(
            tiny_config(folders, method="clip-lit-latent"),
            resume="last",
            encoder_factory=tiny_factory,
        )


class _NanAtStep4(RaveMethod):
    name = "nan-at-step-4-rave"

    def guided_loss(self, enhanced, inputs, *, step, light=None):
        terms = super().guided_loss(enhanced, inputs, step=step, light=light)
        if step == 4:  # one batch whose loss (and so every gradient) is NaN
            terms["total"] = terms["total"] * float("nan")
        return terms


def test_one_non_finite_step_does_not_ruin_the_weights(folders: Path, caplog) -> None:
    """A single NaN gradient used to reach Adam: every weight was NaN from then on, and the
    run went on to write NaN checkpoints (which ``rave enhance`` refuses) to its end."""
    import torch

    from rave.training.loop import train
    from test_training import tiny_config

    if "nan-at-step-4-rave" not in list_methods():
        register_method("nan-at-step-4-rave", _NanAtStep4)
    result = train(tiny_config(folders, method="nan-at-step-4-rave"), encoder_factory=tiny_factory)
    for name in ("last.pt", "best.pt"):
        weights = load_checkpoint_file(folders / "run" / name)["model"]
        assert all(torch.isfinite(v).all() for v in weights.values()), name
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert "iteration 4: non-finite loss terms" in caplog.text and "step skipped" in caplog.text


class _RecordingContext(RaveMethod):
    name = "context-recording-rave"
    contexts: ClassVar[list] = []

    def __init__(self, context) -> None:
        super().__init__(context)
        self.contexts.append(context)


def test_paired_partners_stay_aligned_when_a_backlit_image_is_unreadable(
    folders: Path,
) -> None:
    """The paired regime promises methods ``well_lit_files`` in the order of their backlit
    partners; an unreadable backlit image was dropped from one list only, shifting every
    later pair by one."""
    from rave.training.loop import train
    from test_training import tiny_config

    if "context-recording-rave" not in list_methods():
        register_method("context-recording-rave", _RecordingContext)
    _RecordingContext.contexts.clear()
    (folders / "backlit" / "img01.png").write_bytes(b"not a png")
    config = tiny_config(folders, method="context-recording-rave", regime="paired", iterations=1)
    train(config, encoder_factory=tiny_factory)
    (context,) = _RecordingContext.contexts
    assert [p.stem for p in context.backlit_files] == ["img00", "img02", "img03", "img04"]
    assert [p.stem for p in context.well_lit_files] == [p.stem for p in context.backlit_files]


def test_a_key_given_twice_in_a_config_is_refused_in_one_line(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently: editing ``lr`` near the top of a
    config that sets it again below changed nothing, without a word."""
    from rave.training.config import ConfigError, load_config

    path = tmp_path / "twice.yaml"
    path.write_text("lr: 1.0e-4\nbatch_size: 4\nlr: 2.0e-4\n")
    with pytest.raises(ConfigError, match=r"key 'lr' given twice at line 3, column 1\)$"):
        load_config(path)
    with pytest.raises(ConfigError, match="key 'a' given twice"):
        load_config(None, ["method_options={a: 1, a: 2}"])
    path.write_text("lr: 1.0e-4\nmethod_options: {residual_weight: 2.0}\n")  # still fine
    assert load_config(path).method_options == {"residual_weight": 2.0}


def test_a_sample_grid_that_cannot_be_written_does_not_end_the_run(folders: Path, caplog) -> None:
    """Samples and the loss plot are for looking at; a failure to write one (here a file
    named ``samples`` in the run folder) ended the run with an OSError and without saving
    ``last.pt``, losing every iteration since the last checkpoint."""
    from rave.training.loop import train
    from test_training import tiny_config

    run = folders / "run"
    run.mkdir()
    (run / "samples").write_text("in the way")
    config = tiny_config(folders, sample_every=2)
    assert train(config, encoder_factory=tiny_factory).iterations == 6
    assert load_checkpoint_file(run / "last.pt")["iteration"] == 6
    assert "no sample grid or loss plot" in caplog.text


def test_a_folder_without_one_readable_image_names_its_config_key(
    folders: Path, monkeypatch
) -> None:
    """Like an empty folder (exit 2, naming the key); it was exit 1 with only "none of the
    6 image files could be read"."""
    import rave.training.loop as loop
    from rave.cli import main

    for path in (folders / "backlit").iterdir():
        path.write_bytes(b"not a png")
    monkeypatch.setattr(loop, "_default_encoder_factory", tiny_factory)
    line = one_error_line(CliRunner().invoke(main, ["train", str(_config_file(folders))]), 2)
    assert line.startswith(f"Error: backlit_dir {folders / 'backlit'}: none of the 6")


def test_prompt_methods_without_well_lit_dir_say_which_key_is_missing(folders: Path) -> None:
    """CLIP-LIT-Latent without ``well_lit_dir`` said "none of the 0 well-lit images is
    readable" (exit 1)."""
    from rave.training.config import ConfigError
    from rave.training.loop import train
    from test_training import tiny_config

    config = tiny_config(folders, method="clip-lit-latent", well_lit_dir="")
    with pytest.raises(ConfigError, match="clip-lit-latent: set well_lit_dir"):
        train(config, encoder_factory=tiny_factory)


def test_identity_layer_weights_of_the_wrong_length_are_refused_before_any_work(
    folders: Path, monkeypatch
) -> None:
    """One weight per feature map of the identity encoder (the tiny one gives 5): a wrong
    count is one usage line before RAVE's residual is computed. Before, it surfaced as a
    ValueError of the identity loss at the first iteration, after that work."""
    import rave.training.loop as loop
    from rave.cli import main

    def no_residual(self) -> None:
        raise AssertionError("the residual was computed before the config was checked")

    monkeypatch.setattr(loop, "_default_encoder_factory", tiny_factory)
    monkeypatch.setattr(RaveMethod, "setup", no_residual)
    config = _config_file(folders, identity_layer_weights="[1.0, 1.0, 1.0]")
    line = one_error_line(CliRunner().invoke(main, ["train", str(config)]), 2)
    assert "identity_layer_weights: 3 weight(s)" in line
    assert "tiny-id gives 5 feature maps: give 5" in line
    assert not (folders / "run" / "last.pt").exists()
