"""``rave train CONFIG.yaml [--resume [PATH]] [--set KEY=VALUE ...]``.

Multi-GPU / multi-node: launch the same command under torchrun, e.g.
``torchrun --nproc_per_node=4 --no-python rave train CONFIG.yaml``.

Exit status: 0 when the run is done (or was already complete), 1 when it fails while
working (an encoder that cannot be loaded, a dead network, a checkpoint that cannot be
written: a full disk), 2 for what the command line,
the config or the resume checkpoint get wrong (an output_dir that cannot be written
included), 130 on Ctrl-C and 143 on SIGTERM (both save ``last.pt`` first).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from rave.cli._options import UsageProblem, check_output_folder, quiet_option

__all__ = ["train_command"]


@click.command(
    "train",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Keys and defaults: see configs/rave_paper.yaml and rave.training.config.TrainConfig.",
)
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--resume",
    is_flag=False,
    flag_value="last",
    default=None,
    metavar="[PATH]",
    help=(
        "Continue a run: from OUTPUT_DIR/last.pt, or from the checkpoint PATH "
        "(without PATH, put --resume after CONFIG_FILE)."
    ),
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key (value parsed as YAML); repeatable.",
)
@click.option(
    "--device",
    default=None,
    help="Where to train: auto, cpu, cuda, cuda:N or mps [default: the config's 'device', auto].",
)
@quiet_option()
def train_command(
    config_file: Path | None,
    resume: str | None,
    overrides: tuple[str, ...],
    device: str | None,
    quiet: bool,
) -> None:
    """Train an enhancement network from the YAML config CONFIG_FILE."""
    from rave.training.config import ConfigError, load_config

    if config_file is None and resume is not None and resume.lower().endswith((".yaml", ".yml")):
        # "rave train --resume run.yaml": --resume took the config as its checkpoint, and a
        # YAML file is no checkpoint; read it as "rave train run.yaml --resume"
        config_file, resume = Path(resume), "last"
    if config_file is None:
        raise click.UsageError("Missing argument 'CONFIG_FILE'.")
    if device is not None:
        overrides = (*overrides, f"device={device}")
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 and not quiet else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(config_file, overrides)
    except ConfigError as err:
        raise UsageProblem(str(err)) from None
    if config.device != "auto":  # torch.device("nosuch") would raise a bare RuntimeError
        from rave.devices import DeviceError, resolve_device

        try:
            resolve_device(config.device)
        except DeviceError as err:
            raise UsageProblem(f"device: {err}") from None
    _check_relative_folders(config, config_file)
    # before the data and the encoders are loaded, not at the first file the run writes
    check_output_folder(Path(config.output_dir), "output_dir")

    from rave.cli import route_library_logging
    from rave.cli._batch import Interrupted, interrupt_on_sigterm
    from rave.network import CheckpointError
    from rave.training.loop import CheckpointWriteError, DeadNetworkError, EncoderError, train

    try:
        # SIGTERM (a job scheduler, docker stop, timeout) saves last.pt as Ctrl-C does
        with route_library_logging(), interrupt_on_sigterm():  # and OpenCLIP's log lines
            result = train(config, resume=resume, progress=not quiet)
    except KeyboardInterrupt as err:
        if rank == 0:
            click.echo(_interrupted_line(Path(config.output_dir), resume), err=True)
        raise SystemExit(err.exit_status if isinstance(err, Interrupted) else 130) from None
    # ConfigError and CheckpointError are ValueErrors: the usage errors come first
    except (ConfigError, CheckpointError, FileExistsError) as err:
        raise UsageProblem(str(err)) from None
    except (DeadNetworkError, EncoderError, CheckpointWriteError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # a file of the run that cannot be read or written (a full disk)
        from rave.errors import describe_failure

        raise click.ClickException(describe_failure(err)) from None
    if rank == 0 and result.already_complete:
        click.echo(
            f"{config.output_dir}: the run is already complete ({result.iterations} "
            f"iterations done, the config asks for {config.iterations}): nothing was "
            "trained or written; --set iterations=N trains further",
            err=True,
        )
    elif rank == 0:
        click.echo(f"done: {result.iterations} iterations", err=True)
        click.echo(_best_line(result.best_info), err=True)
        click.echo(f"best checkpoint: {result.best_checkpoint}")
        click.echo(f"last checkpoint: {result.last_checkpoint}")


def _interrupted_line(run_dir: Path, resume: str | None) -> str:
    """What an interrupted run left to resume: ``last.pt``, or nothing (Ctrl-C while the
    data, the encoders or the method's setup, such as RAVE's residual or CLIP-LIT's prompt
    initialisation, were being prepared, before the first iteration)."""
    last = run_dir / "last.pt"
    if last.is_file():
        return f"interrupted; resume with --resume ({last})"
    if resume is not None:
        return f"interrupted before the first iteration; resume again with --resume {resume}"
    return (
        "interrupted before the first iteration: no checkpoint was saved; run the same "
        "command again to start the run afresh"
    )


def _best_line(info: dict[str, object]) -> str:
    """Which network ``best.pt`` holds and why (``best_info`` of :class:`TrainResult`)."""
    if info.get("stage") in ("guided", "reconstruction"):
        score, stage = info.get("score"), str(info["stage"])
        what = "luma PSNR to the input (dB)" if stage == "reconstruction" else "loss"
        where = f"round {info.get('round')}" if stage == "guided" else "reconstruction stage"
        number = f"{score:.6g}" if isinstance(score, float) else str(score)
        return (
            f"best.pt: the network after iteration {info.get('iteration')} ({where}): "
            f"best moving average of the {what}, {number}"
        )
    return "best.pt: no best was chosen (no score compared yet): it holds the last network"


def _check_relative_folders(config: object, config_file: Path) -> None:
    """A relative data folder is read from the current folder, not the config's: one that
    is missing there but exists beside the config file is a usage error that says so (it
    was "no such folder" naming only the relative path)."""
    for key in ("backlit_dir", "well_lit_dir"):
        folder = str(getattr(config, key))
        if not folder or Path(folder).is_absolute() or Path(folder).exists():
            continue
        beside = config_file.parent / folder
        if beside.is_dir():
            raise UsageProblem(
                f"{key} {folder}: no such folder in the current folder {Path.cwd()}; "
                f"relative paths are read from the current folder, not from the config's: "
                f"use {beside.resolve()} or run rave train from {config_file.parent.resolve()}"
            )
