"""Click options shared by the ``rave`` commands (``--model``, ``--device``, ``--tile``).

Nothing heavy is imported here, so that ``rave --help`` stays fast; torch is imported only
when a device is resolved.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

if TYPE_CHECKING:
    import torch

__all__ = [
    "FiniteFloatRange",
    "HiddenAliasOption",
    "OutputPath",
    "PixelCount",
    "TileSize",
    "UsageProblem",
    "check_output_file",
    "check_output_folder",
    "device_option",
    "max_pixels_option",
    "model_option",
    "output_option",
    "overwrite_option",
    "quiet_option",
    "resolve_device",
    "strength_option",
    "tile_option",
    "vocabulary_option",
    "write_failure",
]

F = TypeVar("F", bound=Callable[..., Any])


class TileSize(click.ParamType):
    """``auto``, ``none`` (whole image at once) or a tile size in pixels."""

    name = "auto|none|PIXELS"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str | None:
        from rave.devices import parse_tile

        try:
            return parse_tile(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


class PixelCount(click.ParamType):
    """A number of pixels, optionally with a K/M/G suffix (``200M`` = 200,000,000)."""

    name = "PIXELS"
    _UNITS: ClassVar[dict[str, float]] = {"k": 1e3, "m": 1e6, "mp": 1e6, "g": 1e9}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().replace("_", "")
        number, scale = text, 1.0
        for unit in sorted(self._UNITS, key=len, reverse=True):
            if text.endswith(unit):
                number, scale = text[: -len(unit)], self._UNITS[unit]
                break
        try:
            count = int(float(number) * scale)
        except (ValueError, OverflowError):  # OverflowError: inf, 1e400
            self.fail(f"{value!r} is not a pixel count such as 200000000 or 200M", param, ctx)
        if count <= 0:
            self.fail("the pixel limit must be positive", param, ctx)
        return count


class FiniteFloatRange(click.FloatRange):
    """A :class:`click.FloatRange` that also refuses ``nan`` and ``inf``.

    ``nan`` compares false with both bounds, so FloatRange lets it through.
    """

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class OutputPath(click.Path):
    """A :class:`click.Path` that refuses the empty string, and for a file ``-`` and folders.

    ``Path("")`` is ``.``: ``-o ""`` (an unset shell variable) would silently write into
    the current folder. ``-o -`` reads as "standard output" to a shell user, but would write
    a file named ``-``; a folder given for a file got click's "is a directory" only.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value == "":
            hint = " (use . for the current folder)" if self.dir_okay else ""
            self.fail(f"must not be empty{hint}", param, ctx)
        if not self.dir_okay and isinstance(value, str):
            from rave.io.printable import printable

            if value == "-":
                self.fail("standard output is not supported: name the file to write", param, ctx)
            if os.path.isdir(value):
                self.fail(
                    f"{printable(value)} is a folder: name the file to write in it", param, ctx
                )
        return super().convert(value, param, ctx)


class UsageProblem(click.ClickException):
    """A usage error said in one line: exit status 2, as click's own, without the usage text.

    For values that parse but cannot be used (an unknown model, an output that cannot be
    written, a config key): the usage synopsis would not help there.
    """

    exit_code = 2


def write_failure(path: Path, err: OSError) -> str:
    """One line for a failed write of ``path``, naming it rather than the temporary file."""
    from rave.errors import os_reason
    from rave.io.printable import printable

    return f"cannot write {printable(path)} ({os_reason(err)})"


def _folder_problem(folder: Path, *, parent: bool = False) -> str | None:
    """Why files cannot be written into ``folder`` (missing folders would be created), or
    None; ``parent``: ``folder`` is named as the parent of the output file.

    Nothing is created: a usage error found later must leave nothing behind.
    """
    from rave.errors import os_reason
    from rave.io import probe_folder
    from rave.io.printable import printable

    ancestor = folder
    while not ancestor.is_dir():
        if ancestor.exists() or ancestor.is_symlink():  # a file, or a dangling link
            if ancestor == folder and not parent:
                return "a file, not a folder"
            return f"parent {printable(ancestor)} is a file, not a folder"
        ancestor = ancestor.parent
    try:
        # The nearest existing folder is where the missing ones would be created.
        probe_folder(ancestor)
    except OSError as err:
        if ancestor == folder:
            where = printable(folder) if parent else "this folder"
            return f"cannot write in {where} ({os_reason(err)})"
        return f"cannot create folders in {printable(ancestor)} ({os_reason(err)})"
    return None


def check_output_folder(folder: Path, option: str) -> None:
    """Refuse, before any work, an output folder that files cannot be written into.

    Missing folders are not created here; they are created when the output is written,
    as ``rave enhance -o`` does.

    Raises:
        UsageProblem: one line naming ``option`` and ``folder``: a file on the path, or a
            folder that refuses files (read-only, permission denied, full, /proc).
    """
    from rave.io.printable import printable

    problem = _folder_problem(folder)
    if problem is not None:
        raise UsageProblem(f"{option} {printable(folder)}: {problem}")


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that could not be written.

    Missing parent folders are created when the file is written (atomically, by
    :func:`rave.io.atomic.atomic_write`), as ``rave enhance -o`` creates its folder.

    Raises:
        UsageProblem: one line naming ``option`` and ``path``.
    """
    from rave.io.printable import printable

    if path.is_dir():
        raise UsageProblem(f"{option} {printable(path)}: a folder, not a file")
    problem = _folder_problem(path.parent, parent=True)
    if problem is not None:
        raise UsageProblem(f"{option} {printable(path)}: {problem}")


class HiddenAliasOption(click.Option):
    """An option whose older spellings still work but are not shown in ``--help``."""

    def __init__(self, *args: Any, hidden_aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = frozenset(hidden_aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown = self.opts
        self.opts = [name for name in shown if name not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def output_option(
    help: str,
    *,
    folder: bool,
    required: bool = False,
    old_names: tuple[str, ...] = (),
    dest: str = "output",
) -> Callable[[F], F]:
    """``-o/--output``: where a command writes (a file or a folder), the same in every command.

    ``old_names`` (e.g. ``--output-dir``, ``--out``) keep working but are not shown.
    """
    return click.option(
        "-o",
        "--output",
        *old_names,
        dest,
        cls=HiddenAliasOption,
        hidden_aliases=old_names,
        required=required,
        default=None,
        type=OutputPath(file_okay=not folder, dir_okay=folder, path_type=Path),
        help=help,
    )


def overwrite_option(what: str = "OUTPUT") -> Callable[[F], F]:
    """``--overwrite``: replace existing output; without it, a command refuses to."""
    return click.option(
        "--overwrite", is_flag=True, help=f"Replace {what} if it exists (refused otherwise)."
    )


def quiet_option() -> Callable[[F], F]:
    """``-q/--quiet``: no progress bars and no notes; errors and results still shown.

    Also hides the progress bar of a model downloaded while the command runs.
    """

    def hide_downloads(ctx: click.Context, param: click.Parameter, quiet: bool) -> bool:
        if quiet:
            from rave.zoo.download import download_progress

            ctx.with_resource(download_progress(False))
        return quiet

    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        callback=hide_downloads,
        help="No progress bars and no notes (errors, warnings and results are still shown).",
    )


def model_option(default: str = "default") -> Callable[[F], F]:
    """``--model NAME|PATH``: a model name from ``rave models`` or a checkpoint file."""
    return click.option(
        "--model",
        default=default,
        show_default=True,
        metavar="NAME|PATH",
        help="Model name (see 'rave models') or checkpoint file (.pt/.pth/.safetensors).",
    )


def device_option(default: str = "auto", what: str = "the network") -> Callable[[F], F]:
    """``--device``: ``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda:1``...

    ``what`` names what runs there in the help (``"the network"`` by default).
    """
    return click.option(
        "--device",
        default=default,
        show_default=True,
        help=f"Where to run {what}: auto (CUDA, then Apple MPS, then CPU), cpu, cuda, "
        "cuda:N or mps.",
    )


def max_pixels_option(default: str = "200M") -> Callable[[F], F]:
    """``--max-pixels``: the decompression-bomb guard of :func:`rave.io.read_photo`."""
    return click.option(
        "--max-pixels",
        type=PixelCount(),
        default=default,
        show_default=True,
        help="Refuse images larger than this (decompression-bomb guard), e.g. 500M.",
    )


def tile_option(default: str = "auto") -> Callable[[F], F]:
    """``--tile``: tile size of the exact tiled inference (same output for every size)."""
    return click.option(
        "--tile",
        type=TileSize(),
        default=default,
        show_default=True,
        help="Tile size in pixels for bounded memory; 'auto' picks one, 'none' runs the "
        "whole image at once. The output is the same either way.",
    )


MAX_STRENGTH = 100.0
"""The largest ``--strength`` (``rave enhance``, ``rave serve``, and the server's URLs; the
Python API takes any finite ``S >= 0``): at 100 a light map of 0.9 already multiplies by
37,000."""


# rave.guidance.shift.VOCABULARIES, spelled out: importing it would import torch for --help
# (tests/test_shift.py checks that the two agree).
VOCABULARY_CHOICES = ("decoded", "token-ids")


def vocabulary_option(help_text: str) -> Callable[[F], F]:
    """``--vocab``: which CLIP vocabulary ``rave interpret`` ranks and ``rave shift`` removes."""
    return click.option(
        "--vocab",
        "vocabulary",
        type=click.Choice(VOCABULARY_CHOICES),
        default=VOCABULARY_CHOICES[0],
        show_default=True,
        help=help_text,
    )


def strength_option(help_text: str = "") -> Callable[[F], F]:
    """``--strength S``: ``clamp(I / L**S, 0, 1)``, 0 = the input, 1 = the paper's output."""
    return click.option(
        "--strength",
        type=FiniteFloatRange(0, MAX_STRENGTH),
        default=1.0,
        show_default=True,
        metavar="S",
        help="How strongly to relight: result = clamp(I / L**S, 0, 1) with the light map L; "
        "0 = unchanged, 1 = the model's output, above 1 stronger." + help_text,
    )


def resolve_device(name: str) -> torch.device:
    """A ``torch.device`` for a ``--device`` value; ``auto`` picks the fastest available.

    Raises:
        click.BadParameter: unknown device, or one this machine does not have (the message
            lists the devices that work here).
    """
    from rave.devices import DeviceError
    from rave.devices import resolve_device as resolve

    try:
        return resolve(name)
    except DeviceError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
