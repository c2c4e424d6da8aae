"""The ``rave`` command line: one module per command, imported only when that command runs.

Keeping imports lazy makes ``rave --help`` and ``rave --version`` answer without importing
torch or OpenCLIP.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from rave import __version__

__all__ = ["main"]

# command name -> (module, attribute, one-line help shown by ``rave --help``)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "enhance": ("rave.cli.enhance", "enhance_command", "Enhance backlit photos."),
    "models": ("rave.cli.models", "models_command", "List the models rave knows by name."),
    "residual": ("rave.cli.residual", "residual_command", "Compute a RAVE residual vector."),
    "train": ("rave.cli.train", "train_command", "Train an enhancement network from a config."),
    "evaluate": ("rave.cli.evaluate", "evaluate_command", "Score enhanced images."),
    "interpret": ("rave.cli.interpret", "interpret_command", "Explain a guidance direction."),
    "shift": ("rave.cli.shift", "shift_command", "Remove bias directions from a residual vector."),
    "serve": ("rave.cli.serve", "serve_command", "Enhance photos from a web page."),
    "env": ("rave.cli.env", "env_command", "Show versions, devices and the conv backend."),
    "export": ("rave.cli.export", "export_command", "Export a model to ONNX."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _module_exists(COMMANDS[name][0])]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not _module_exists(COMMANDS[cmd_name][0]):
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(module_name: str) -> bool:
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rave")
def main() -> None:
    """rave: backlit photo enhancement guided by image-text embeddings (RAVE, ECCV 2024)."""
