"""``rave enhance``: enhance photo files, folders and globs in one batch."""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rave.cli._options import device_option, max_pixels_option, model_option, tile_option

if TYPE_CHECKING:  # torch is imported only once a photo is enhanced
    import torch
    from torch import nn

__all__ = ["enhance_command"]

# Files picked up when a folder is given (any readable image may be named explicitly).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".ppm"}
)
DEFAULT_OUTPUT_DIR = "enhanced"
BESIDE_SUFFIX = "_enhanced"
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass
class _Job:
    source: Path
    relative: Path  # where the result goes under the output folder
    target: Path | None = None
    format: str | None = None
    error: str | None = None


@dataclass
class _Tally:
    enhanced: int = 0
    skipped: int = 0
    failed: int = 0


def _scan_folder(folder: Path, recursive: bool, exclude: Path | None) -> list[_Job]:
    """Image files in ``folder`` (sorted), relative paths kept for the output tree."""
    jobs = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        kept_dirs = []
        for name in sorted(dirs):
            sub = root_path / name
            if name.startswith(".") or (exclude is not None and _is_within(sub, exclude)):
                continue
            if not recursive and name.lower().endswith(tuple(IMAGE_SUFFIXES)):
                # Named like a photo but a folder: report it rather than ignore it.
                jobs.append(_Job(sub, sub.relative_to(folder)))
            kept_dirs.append(name)
        dirs[:] = kept_dirs if recursive else []
        for name in sorted(files):
            # Hidden files include our own temporary ".NAME.*.part" files.
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                path = root_path / name
                jobs.append(_Job(path, path.relative_to(folder)))
    return sorted(jobs, key=lambda job: job.relative.parts)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _collect(
    inputs: tuple[str, ...], recursive: bool, output_dir: Path | None
) -> tuple[list[_Job], list[str]]:
    """Expand files, folders and globs into jobs; also one error line per empty input."""
    jobs: list[_Job] = []
    errors: list[str] = []
    for text in inputs:
        path = Path(text).expanduser()
        if os.path.lexists(path):
            matches = [path]
        elif _GLOB_CHARACTERS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            if not matches:
                errors.append(f"{text}: no files match this pattern")
        else:
            errors.append(f"{text}: no such file or folder")
            matches = []
        for match in matches:
            if match.is_dir():
                found = _scan_folder(match, recursive, output_dir)
                if not found:
                    hint = "" if recursive else " (use -r to include sub-folders)"
                    errors.append(f"{match}: no images found in this folder{hint}")
                jobs.extend(found)
            else:
                jobs.append(_Job(match, Path(match.name)))
    unique: dict[str, _Job] = {}
    for job in jobs:
        unique.setdefault(os.path.realpath(job.source), job)
    return list(unique.values()), errors


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _target(job: _Job, output_dir: Path | None, suffix: str, format: str | None) -> Path:
    """Where ``job``'s result goes; sets ``job.format``."""
    from rave.io import FORMATS, format_for_suffix

    native = format_for_suffix(job.source.suffix)
    job.format = format or native or "png"
    keep_suffix = native == job.format  # keep the input's own spelling, e.g. ".JPG"
    extension = job.source.suffix if keep_suffix else FORMATS[job.format][1]
    folder = job.source.parent if output_dir is None else output_dir / job.relative.parent
    return folder / (job.source.stem + suffix + extension)


def _plan(
    jobs: list[_Job],
    *,
    output_dir: Path | None,
    suffix: str,
    format: str | None,
    in_place_allowed: bool,
) -> list[_Job]:
    """Give every job its target path, or the reason it cannot be written.

    Returns the jobs minus inputs that are results of other jobs (``a_enhanced.jpg`` beside
    ``a.jpg`` when a folder is enhanced ``--beside`` again): they are not new photos.
    """
    planned = [(job, _target(job, output_dir, suffix, format)) for job in jobs]
    result_paths = {
        os.path.realpath(target)
        for job, target in planned
        if os.path.realpath(target) != os.path.realpath(job.source)
    }
    # An input that another input's result would replace, and that is not itself enhanced
    # in place, is a result of an earlier run: drop it (inputs kept below stay protected).
    planned = [
        (job, target)
        for job, target in planned
        if os.path.realpath(job.source) not in result_paths
        or os.path.realpath(target) == os.path.realpath(job.source)
    ]
    source_ids = {ident for job, _ in planned if (ident := _file_id(job.source)) is not None}
    targets: dict[str, Path] = {}
    for job, target in planned:
        key = os.path.realpath(target)
        if key in targets:
            job.error = f"output {target} would also be written from {targets[key]}: skipped"
            continue
        targets[key] = job.source
        target_id = _file_id(target)
        if target_id is not None and target_id in source_ids:
            own = target_id == _file_id(job.source)
            if not (own and in_place_allowed):
                job.error = (
                    f"refusing to overwrite the input file {target} (to replace inputs in "
                    "place, pass --overwrite and an explicit --suffix '')"
                )
                continue
        job.target = target
    return [job for job, _ in planned]


# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _tune_allocator(memory_bound: bool) -> None:
    """Choose glibc's allocation policy for the next photo (no-op without glibc).

    Photos too large for the engine's feature cache are bound by memory: tile tensors (a few
    MB each) stay in the heap and are not trimmed away between tiles, while anything from
    32 MB up (whole-photo arrays) is mapped on its own and returned at once (24 MP JPEG, 2
    threads: 896 MB peak RSS, 2.34 s/MP; 16-bit TIFF: 974 MB). A 1 MB threshold kept 809 MB
    but spent a third of the time in page faults (3.46 s/MP); glibc's default trimming made
    the speed depend on what happened to lie above the tiles in the heap (2.1 to 2.9 s/MP);
    keeping whole-photo arrays in the heap too reached 972 MB for a JPEG. Smaller photos
    are bound by time: the heap keeps all freed memory (2048x1536, oneDNN convolutions: 4.57
    s/MP with the 1 MB threshold, 3.49 with glibc's default, 3.32 keeping it, at 1.36 GB
    peak), and returns it (``malloc_trim``) before the next memory-bound photo.
    """
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)  # freed tile memory stays for the next tile
    if memory_bound:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.malloc_trim(0)
    else:
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)


def _return_freed_memory() -> None:
    """Hand memory freed in the heap back to the OS (glibc only; no-op elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    """The C library, where it is glibc (``mallopt``/``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    # musl and other C libraries lack these glibc extensions
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def _note_slow_convolutions(net: nn.Module, quiet: bool) -> None:
    """Tell CPU users when the Winograd kernel could not be built (it is 1.8x faster)."""
    from rave.inference import winograd

    if next(net.parameters()).device.type != "cpu" or os.environ.get("RAVE_CONV_BACKEND"):
        return
    if winograd.load_kernel() is None:
        _say(
            f"note: Winograd kernel {winograd.kernel_status()}; "
            "using PyTorch's convolutions (same result, about 1.8x slower)",
            quiet,
        )


def _say(message: str, quiet: bool = False) -> None:
    if not quiet:
        from tqdm import tqdm

        from rave.inference.pipeline import in_order

        in_order(lambda: tqdm.write(message, file=sys.stderr))


def _load_network(ctx: click.Context, model: str, device_name: str) -> nn.Module:
    """The network, or exit with status 2 and one line saying what to do."""
    from rave.api import get_model
    from rave.cli._options import resolve_device
    from rave.zoo import BuiltinModelMissingError

    device = resolve_device(device_name)
    try:
        return get_model(model, device)
    except BuiltinModelMissingError:
        message = (
            "error: this version of rave ships no built-in default model; pass --model NAME "
            "(see 'rave models', e.g. rave-unpaired) or --model PATH to a checkpoint file"
        )
    except (ValueError, RuntimeError, OSError) as err:  # zoo, checkpoint and file errors
        message = f"error: --model {model}: {' '.join(str(err).split())}"
    click.echo(message, err=True)
    ctx.exit(2)


def _net_device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _enhance_one(job: _Job, net: nn.Module, options: dict[str, Any], quiet: bool) -> None:
    """Read, enhance and write one photo; raises PhotoError/OSError/ValueError on failure."""
    import numpy as np

    from rave.api import enhance_array
    from rave.inference import is_memory_bound
    from rave.inference.pipeline import end_turn, wait_for_turn
    from rave.io import SIXTEEN_BIT_FORMATS, read_photo, write_photo

    assert job.target is not None and job.format is not None
    photo = read_photo(job.source, max_pixels=options["max_pixels"])
    notes = list(photo.notes)
    pixels, photo.pixels = photo.pixels, np.empty(0, np.uint8)  # hold one reference only
    wait_for_turn()  # batches: the network is used by one photo at a time, in input order
    _tune_allocator(is_memory_bound(pixels.shape[0], pixels.shape[1], _net_device(net)))
    out_dtype = np.uint8
    if pixels.dtype == np.uint16:
        if job.format in SIXTEEN_BIT_FORMATS:
            out_dtype = np.uint16
        else:
            notes.append(f"16-bit input written as 8-bit {job.format.upper()}")
    # In place where the result has the input's type: a whole photo's worth less memory.
    enhanced = enhance_array(net, pixels, tile=options["tile"], out_dtype=out_dtype, in_place=True)
    del pixels
    _return_freed_memory()  # tile buffers kept for speed, not needed while encoding
    end_turn()
    notes += write_photo(
        job.target,
        enhanced,
        format=job.format,
        icc_profile=photo.icc_profile,
        exif=photo.exif,
        quality=options["quality"],
    )
    for note in notes:
        _say(f"note: {job.source}: {note}", quiet)


def _run_batch(
    jobs: list[_Job], net: nn.Module, options: dict[str, Any], tally: _Tally, quiet: bool
) -> None:
    from tqdm import tqdm

    from rave.inference.pipeline import overlapped, photo_bytes
    from rave.io import PhotoError

    progress = tqdm(jobs, unit="photo", desc="enhance", disable=True if quiet else None)
    # Decodes the next photo and encodes the previous one while one is enhanced.
    outcomes = overlapped(
        jobs, lambda job: _enhance_one(job, net, options, quiet), lambda j: photo_bytes(j.source)
    )
    for job, outcome in zip(progress, outcomes, strict=True):
        progress.set_postfix_str(job.source.name, refresh=False)
        try:
            outcome.result()
        except PhotoError as err:
            tally.failed += 1
            _say(f"error: {err}")
        except (OSError, ValueError, RuntimeError, MemoryError) as err:
            tally.failed += 1
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            _say(f"error: {job.source}: {reason}")
        else:
            tally.enhanced += 1


HELP = f"""Enhance backlit photos: files, folders (-r for sub-folders) and globs.

\b
Where results go:
  -o DIR (default ./{DEFAULT_OUTPUT_DIR}): the same file names in DIR; photos found in a
         folder keep their sub-folder path below DIR.
  --beside: next to each input, named NAME{BESIDE_SUFFIX}.EXT.
  --suffix TEXT is added to every name (default '' in DIR, '{BESIDE_SUFFIX}' with --beside).

\b
Existing results are skipped, so an interrupted batch can simply be re-run; --overwrite
redoes them. Inputs are never overwritten, whatever the path says, unless you ask for it
with both --overwrite and an explicit empty suffix (--beside --suffix '' --overwrite).
Files are written to a temporary name and renamed when complete.

\b
Formats: the output has the input's format and bit depth (8/16-bit PNG and TIFF), EXIF
orientation applied, ICC profile and EXIF kept. --format converts (alpha is dropped for
JPEG). Palette and CMYK images are converted to RGB; grey stays grey; alpha is kept.

Exit status: 0 if every photo was enhanced or skipped, 1 if any failed, 2 on usage errors.
"""


@click.command("enhance", help=HELP)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Folder for the results [default: ./{DEFAULT_OUTPUT_DIR}].",
)
@click.option("--beside", is_flag=True, help="Write each result next to its input.")
@model_option()
@click.option(
    "--suffix",
    default=None,
    help=f"Text added to each output file name [default: '' with -o, '{BESIDE_SUFFIX}' "
    "with --beside].",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["png", "jpg", "jpeg", "tif", "tiff", "webp"], case_sensitive=False),
    default=None,
    help="Output format [default: that of each input].",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG/WebP quality.",
)
@click.option("--overwrite", is_flag=True, help="Replace results that already exist.")
@click.option("-r", "--recursive", is_flag=True, help="Include sub-folders of folder inputs.")
@device_option()
@tile_option()
@max_pixels_option()
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no notes, errors only.")
@click.pass_context
def enhance_command(
    ctx: click.Context,
    inputs: tuple[str, ...],
    output_dir: Path | None,
    beside: bool,
    model: str,
    suffix: str | None,
    output_format: str | None,
    quality: int,
    overwrite: bool,
    recursive: bool,
    device: str,
    tile: int | str | None,
    max_pixels: int,
    quiet: bool,
) -> None:
    started = time.perf_counter()
    if beside and output_dir is not None:
        raise click.UsageError("-o/--output-dir and --beside exclude each other")
    if not beside and output_dir is None:
        output_dir = Path(DEFAULT_OUTPUT_DIR)
    if suffix is None:
        suffix = BESIDE_SUFFIX if beside else ""
    if any(sep in suffix for sep in {"/", os.sep, os.altsep} - {None}):
        raise click.BadParameter("must not contain a path separator", param_hint="--suffix")
    explicit_suffix = ctx.get_parameter_source("suffix") == click.core.ParameterSource.COMMANDLINE
    fmt = {"jpeg": "jpg", "tiff": "tif"}.get((output_format or "").lower(), output_format)

    jobs, errors = _collect(inputs, recursive, output_dir)
    jobs = _plan(
        jobs,
        output_dir=output_dir,
        suffix=suffix,
        format=fmt.lower() if fmt else None,
        in_place_allowed=overwrite and explicit_suffix and suffix == "",
    )
    tally = _Tally(failed=len(errors))
    for line in errors:
        _say(f"error: {line}")
    to_run = []
    for job in jobs:
        if job.error is not None:
            tally.failed += 1
            _say(f"error: {job.source}: {job.error}")
        elif job.target is not None and os.path.lexists(job.target) and not overwrite:
            tally.skipped += 1
        else:
            to_run.append(job)

    if to_run:
        net = _load_network(ctx, model, device)
        _note_slow_convolutions(net, quiet)
        options = {"tile": tile, "quality": quality, "max_pixels": max_pixels}
        _run_batch(to_run, net, options, tally, quiet)

    elapsed = time.perf_counter() - started
    where = "next to the inputs" if output_dir is None else f"in {output_dir}"
    hint = " (skipped: results exist, --overwrite redoes them)" if tally.skipped else ""
    click.echo(
        f"{tally.enhanced} enhanced, {tally.skipped} skipped, {tally.failed} failed "
        f"in {elapsed:.1f} s; results {where}{hint}"
    )
    if tally.failed:
        ctx.exit(1)
