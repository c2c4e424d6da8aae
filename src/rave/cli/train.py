"""``rave train CONFIG.yaml [--resume [PATH]] [--set KEY=VALUE ...]``.

Multi-GPU / multi-node: launch the same command under torchrun, e.g.
``torchrun --nproc_per_node=4 --no-python rave train CONFIG.yaml``.

Exit status: 0 when the run is done (or was already complete), 1 when it fails while
working (an encoder that cannot be loaded, a dead network), 2 for what the command line,
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
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
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
    config_file: Path,
    resume: str | None,
    overrides: tuple[str, ...],
    device: str | None,
    quiet: bool,
) -> None:
    """Train an enhancement network from the YAML config CONFIG_FILE."""
    from rave.training.config import ConfigError, load_config

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
    # before the data and the encoders are loaded, not at the first file the run writes
    check_output_folder(Path(config.output_dir), "output_dir")

    from rave.cli import route_library_logging
    from rave.cli._batch import Interrupted, interrupt_on_sigterm
    from rave.network import CheckpointError
    from rave.training.loop import DeadNetworkError, EncoderError, train

    try:
        # SIGTERM (a job scheduler, docker stop, timeout) saves last.pt as Ctrl-C does
        with route_library_logging(), interrupt_on_sigterm():  # and OpenCLIP's log lines
            result = train(config, resume=resume, progress=not quiet)
    except KeyboardInterrupt as err:
        if rank == 0:
            click.echo(f"interrupted; resume with --resume ({config.output_dir}/last.pt)", err=True)
        raise SystemExit(err.exit_status if isinstance(err, Interrupted) else 130) from None
    # ConfigError and CheckpointError are ValueErrors: the usage errors come first
    except (ConfigError, CheckpointError, FileExistsError) as err:
        raise UsageProblem(str(err)) from None
    except (DeadNetworkError, EncoderError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if rank == 0 and result.already_complete:
        click.echo(
            f"{config.output_dir}: the run is already complete ({result.iterations} "
            f"iterations done, the config asks for {config.iterations}): nothing was "
            "trained or written; --set iterations=N trains further",
            err=True,
        )
    elif rank == 0:
        click.echo(f"done: {result.iterations} iterations", err=True)
        click.echo(f"best checkpoint: {result.best_checkpoint}")
        click.echo(f"last checkpoint: {result.last_checkpoint}")
