"""``rave enhance``: enhance photo files, folders and globs in one batch."""

from __future__ import annotations

import contextlib
import errno
import glob
import itertools
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rave.cli._options import (
    device_option,
    max_pixels_option,
    model_option,
    output_option,
    quiet_option,
    strength_option,
    tile_option,
)
from rave.errors import os_reason

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Future

    # torch is imported only once a photo is enhanced
    from torch import nn

    from rave.io.provenance import Recipe, Records
    from rave.session import Enhancer

__all__ = ["enhance_command"]

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
    replace_source: bool = False  # --overwrite --suffix '': the result replaces the input
    format_note: str | None = None  # why the result is not in the source's format


@dataclass
class _Tally:
    enhanced: int = 0
    skipped: int = 0
    failed: int = 0
    left: int = 0  # photos of the batch not yet attempted


class _BatchStopped(Exception):
    """The batch cannot go on (a bug in rave: exit 3; the output disk is full: exit 1)."""

    def __init__(self, exit_status: int) -> None:
        super().__init__(exit_status)
        self.exit_status = exit_status


@dataclass
class _Scan:
    jobs: list[_Job]
    errors: list[str]  # one line per folder that cannot be read
    subfolders_left_out: int = 0  # without -r
    links_left_out: int = 0  # links to folders, never followed


def _scan_folder(folder: Path, recursive: bool, exclude: Path | None) -> _Scan:
    """Image files in ``folder`` (sorted), relative paths kept for the output tree."""
    from rave.io.formats import is_image_name, scan_image_folder

    scan = scan_image_folder(folder, recursive=recursive, exclude=exclude)
    errors = [
        f"{err.filename if err.filename is not None else folder}: folder cannot be read "
        f"({os_reason(err)}); its photos were not enhanced"
        for err in scan.unreadable
    ]
    if any(err.filename is not None and Path(err.filename) == folder for err in scan.unreadable):
        return _Scan([], errors)
    # Named like a photo but a folder: reported as a job rather than ignored.
    photo_named = [path for path in scan.left_out if is_image_name(path.name)]
    # A FIFO or device named like a photo gets its error line too (see _plan).
    named = scan.files + photo_named + scan.not_regular
    jobs = [_Job(path, path.relative_to(folder)) for path in named]
    links = [path for path in scan.linked_folders if not is_image_name(path.name)]
    # -r does not follow links: they are not among the sub-folders it would include
    left_out = len(scan.left_out) - len(photo_named) - (0 if recursive else len(links))
    return _Scan(sorted(jobs, key=lambda job: job.relative.parts), errors, left_out, len(links))


def _lstat_problem(path: Path) -> str | None:
    """Why ``path`` cannot be looked at (not "missing": that is for the caller), or None."""
    try:
        os.lstat(path)
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return os_reason(err)
    return None


def _collect(
    inputs: tuple[str, ...], recursive: bool, output_dir: Path | None
) -> tuple[list[_Job], list[str], list[str]]:
    """Expand files, folders and globs into jobs.

    Returns:
        The jobs, one error line per input that gave none (missing, empty, unreadable) or
        per folder that cannot be read, and notes (sub-folders left out without -r).
    """
    jobs: list[_Job] = []
    errors: list[str] = []
    notes: list[str] = []
    for text in inputs:
        path = Path(text).expanduser()
        problem = _lstat_problem(path)
        if problem is not None:
            # e.g. a file in a folder that cannot be entered: it may well exist
            errors.append(f"{text}: {problem}")
            matches = []
        elif os.path.lexists(path):
            matches = [path]
        elif _GLOB_CHARACTERS & set(text):
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(text), recursive=True))]
            if not matches:
                errors.append(f"{text}: no files match this pattern")
        else:
            errors.append(f"{text}: no such file or folder")
            matches = []
        for match in matches:
            if not match.is_dir():
                jobs.append(_Job(match, Path(match.name)))
                continue
            scan = _scan_folder(match, recursive, output_dir)
            errors += scan.errors
            left_out = scan.subfolders_left_out
            if not scan.jobs and not scan.errors:
                hint = f" (use -r to include its {left_out} sub-folder(s))" if left_out else ""
                errors.append(f"{match}: no images found in this folder{hint}")
            elif left_out:
                notes.append(f"{match}: skipped {left_out} sub-folder(s) (use -r to include them)")
            if scan.links_left_out:
                notes.append(
                    f"{match}: skipped {scan.links_left_out} link(s) to folders (links are not "
                    "followed; name the folder itself to enhance its photos)"
                )
            jobs.extend(scan.jobs)
    unique: dict[str, _Job] = {}
    for job in jobs:
        # One photo named twice (a link beside its target): enhanced once, and under the
        # name of the file itself rather than of whichever link sorts first.
        first = unique.setdefault(os.path.realpath(job.source), job)
        if first.source.is_symlink() and not job.source.is_symlink():
            unique[os.path.realpath(job.source)] = job
    return list(unique.values()), errors, notes


def _drop_earlier_results(jobs: list[_Job]) -> list[_Job]:
    """Leave out inputs that are rave's results of other inputs of this batch.

    ``rave enhance photos --beside --format jpg`` and later ``rave enhance photos
    --beside`` would otherwise enhance ``a_enhanced.jpg`` as a new photo (into
    ``a_enhanced_enhanced.jpg``): :func:`_plan` recognises only the results this run
    would write. A file counts as a result when its folder's record says rave wrote it
    (and it is unchanged since) from a photo that is also an input now; results of
    photos not in the batch (``rave enhance enhanced -o again``) stay inputs. This also
    makes ``rave enhance *`` re-runnable, where the shell names ./enhanced too. Silent, as
    :func:`_plan`'s rule: every ``--beside`` re-run meets its results.
    """
    from rave.io.provenance import read_records

    sources = {os.path.realpath(job.source) for job in jobs}
    records: dict[Path, dict[str, Any]] = {}
    kept = []
    for job in jobs:
        folder = job.source.parent
        if folder not in records:
            records[folder] = read_records(folder).results
        entry = records[folder].get(job.source.name)
        own = os.path.realpath(job.source)
        if isinstance(entry, dict) and entry.get("source") in sources - {own}:
            try:
                status = job.source.stat()
            except OSError:
                status = None
            if status is not None and entry.get("output") == [status.st_size, status.st_mtime_ns]:
                continue
        kept.append(job)
    return kept


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _target(
    job: _Job,
    output_dir: Path | None,
    suffix: str,
    format: str | None,
    listings: dict[Path, dict[str, list[str]]] | None = None,
) -> Path:
    """Where ``job``'s result goes; sets ``job.format``.

    Photos of one stem in different formats (``img.avif``, ``img.jp2``; ``IMG_1.CR2`` and
    ``IMG_1.JPG`` with ``--format jpg``) would share a result name: those not already in
    the output's format get their own suffix in the name (``img_avif.png``). Same-stem
    files whose suffixes differ only in letter case (``a.JPG``, ``a.jpg``) are numbered in
    name order: ``a_jpg.png``, ``a_jpg_2.png``. The rule looks at the source folder, not at
    the batch, so every run names a photo the same way; :func:`_distinct_targets` settles
    whatever clash is left within one run.
    """
    from rave.io import FORMATS

    name, job.format, own = _output_name(job.source.name, suffix, format)
    if format is None:  # rave's choice, not the user's: say so where it changes the format
        from rave.io.formats import default_output_note

        job.format_note = default_output_note(job.source.suffix)
    if not own:
        siblings = _same_stem_siblings(job.source, {} if listings is None else listings)
        for sibling in siblings:
            if _output_name(sibling, suffix, format)[0].lower() == name.lower():
                kind = job.source.suffix.lstrip(".").lower()
                same_kind = sorted(
                    other
                    for other in [*siblings, job.source.name]
                    if os.path.splitext(other)[1].lower() == job.source.suffix.lower()
                )
                rank = same_kind.index(job.source.name) + 1
                if rank > 1:
                    kind += f"_{rank}"
                name = f"{job.source.stem}{suffix}_{kind}{FORMATS[job.format][1]}"
                break
    folder = job.source.parent if output_dir is None else output_dir / job.relative.parent
    return folder / name


def _name_key(path: Path) -> tuple[str, str]:
    """Which result file ``path`` is, on a file system that ignores letter case too."""
    return os.path.realpath(path.parent), path.name.casefold()


def _distinct_targets(
    planned: list[tuple[_Job, Path]], suffix: str, format: str | None
) -> list[tuple[_Job, Path]]:
    """Rename the results that would still clash within the batch after :func:`_target`.

    E.g. ``x.jxl`` and ``x.psd`` (not in the folder listing of image files) or ``a.JPG``
    and ``a.jpg`` kept as JPEG (one file where letter case is ignored). A name goes first
    to a photo replaced in place, then to one that keeps its own name (``a_jpg_2.png``
    stays ``a_jpg_2.png``), then to the first in batch order; a later one takes
    ``NAME_<its suffix>.EXT`` if it is converted, else the first free ``NAME_2.EXT``,
    ``NAME_3.EXT``... No result takes a name another job gets on its own. Jobs of the same
    file name from different folders are left alone: :func:`_plan` refuses the second
    (two cards' ``IMG_0001.JPG``).
    """

    def rank(item: tuple[_Job, Path]) -> int:
        job, target = item
        if os.path.realpath(target) == os.path.realpath(job.source):
            return 0
        return 1 if _output_name(job.source.name, suffix, format)[2] else 2

    ranks = [rank(item) for item in planned]
    first: dict[tuple[str, str], _Job] = {}
    for _, (job, target) in sorted(zip(ranks, planned, strict=True), key=lambda pair: pair[0]):
        first.setdefault(_name_key(target), job)
    taken = set(first)
    distinct = []
    for job_rank, (job, target) in zip(ranks, planned, strict=True):
        owner = first[_name_key(target)]
        if owner is not job and owner.source.name != job.source.name and job_rank > 0:
            kind = job.source.suffix.lstrip(".").lower()
            candidates: list[Path] = []
            if kind and job_rank == 2:
                candidates.append(
                    target.with_name(f"{job.source.stem}{suffix}_{kind}{target.suffix}")
                )
            numbered = (
                target.with_name(f"{target.stem}_{number}{target.suffix}")
                for number in itertools.count(2)
            )
            target = next(
                path
                for path in itertools.chain(candidates, numbered)
                if _name_key(path) not in taken
            )
            taken.add(_name_key(target))
        distinct.append((job, target))
    return distinct


def _output_name(source_name: str, suffix: str, format: str | None) -> tuple[str, str, bool]:
    """(result file name, output format, whether the source is already in that format)."""
    from rave.io import FORMATS, format_for_suffix
    from rave.io.formats import native_output_format

    stem, source_suffix = os.path.splitext(source_name)
    native = native_output_format(source_suffix)
    fmt = format or native or "png"
    # Keep the input's own spelling, e.g. ".JPG", where the format is unchanged.
    own = native == fmt and format_for_suffix(source_suffix) == fmt
    extension = source_suffix if own else FORMATS[fmt][1]
    return stem + suffix + extension, fmt, own


def _same_stem_siblings(source: Path, listings: dict[Path, dict[str, list[str]]]) -> list[str]:
    """Other image files in ``source``'s folder with the same stem (any letter case).

    ``listings`` caches each folder's image names by lower-case stem for one batch (a
    folder of 10,000 photos is listed once, not once per photo).
    """
    from rave.io.formats import is_image_name

    folder = source.parent
    if folder not in listings:
        by_stem: dict[str, list[str]] = {}
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        for name in names:
            if is_image_name(name):
                by_stem.setdefault(os.path.splitext(name)[0].lower(), []).append(name)
        listings[folder] = by_stem
    same_stem = listings[folder].get(source.stem.lower(), [])
    return [name for name in same_stem if name != source.name]


def _name_too_long(target: Path) -> str | None:
    """Why ``target``'s file name cannot exist in its folder's file system, or None.

    Found before the photo is computed (a long --suffix), and said in words rather than
    as the rename's "[Errno 36]" with rave's temporary name in it.
    """
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the output folder may not exist yet
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        limit = 255
    length = len(os.fsencode(target.name))
    if length <= limit:
        return None
    return (
        f"output file name {target.name[:40]}... is too long ({length} bytes, the file "
        f"system allows {limit}): use a shorter --suffix or file name"
    )


def _not_regular(path: Path) -> bool:
    """Whether ``path`` is a FIFO, a device or a socket (or a link to one)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # missing, a broken link...: the reader names the problem
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


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
    from rave.io.provenance import NOT_A_REGULAR_FILE

    for job in jobs:
        # Before anything opens it: a FIFO or a device would block or never end.
        if _not_regular(job.source):
            job.error = NOT_A_REGULAR_FILE
    listings: dict[Path, dict[str, list[str]]] = {}
    planned = [
        (job, _target(job, output_dir, suffix, format, listings))
        for job in jobs
        if job.error is None
    ]
    planned = _distinct_targets(planned, suffix, format)
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
        too_long = _name_too_long(target)
        if too_long is not None:
            job.error = too_long
            continue
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
            job.replace_source = True
        job.target = target
    kept = {id(job) for job, _ in planned}
    return [job for job in jobs if id(job) in kept or job.error is not None]


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
        from rave.io.library_messages import TerminalStream
        from rave.io.printable import printable

        # File names and metadata may hold escape sequences or newlines: one line, inert.
        # In an overlapped batch the line waits until its photo is reported (input order).
        in_order(lambda: tqdm.write(printable(message), file=TerminalStream()))


def _say_traceback(err: BaseException) -> None:
    """The traceback of ``err`` for --debug, each line escaped on its own."""
    import traceback

    for block in traceback.format_exception(err):
        for line in block.rstrip("\n").split("\n"):
            _say(line)


def _load_enhancer(
    ctx: click.Context, model: str, device_name: str, tile: int | str | None = "auto"
) -> Enhancer:
    """The loaded model, or exit with status 2 and one line saying what to do."""
    from rave.cli._options import resolve_device
    from rave.session import Enhancer
    from rave.zoo import BuiltinModelMissingError

    device = resolve_device(device_name)
    try:
        return Enhancer(model, device=device, tile=tile)
    except BuiltinModelMissingError:
        message = (
            "error: this version of rave ships no built-in default model; pass --model NAME "
            "(see 'rave models', e.g. rave-unpaired) or --model PATH to a checkpoint file"
        )
    except (ValueError, RuntimeError, OSError) as err:  # zoo, checkpoint and file errors
        message = f"error: --model {model}: {' '.join(str(err).split())}"
    click.echo(message, err=True)
    ctx.exit(2)


def _load_network(ctx: click.Context, model: str, device_name: str) -> nn.Module:
    """The network, or exit with status 2 and one line saying what to do."""
    return _load_enhancer(ctx, model, device_name).net


class _TileProgress:
    """A second progress bar, per tile, for photos made of several tiles (24 MP: minutes)."""

    def __init__(self, name: str, quiet: bool) -> None:
        self.name, self.quiet, self.bar = name, quiet, None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet or total < 2:
            return
        if self.bar is None:
            from tqdm import tqdm

            from rave.io.library_messages import TerminalStream

            self.bar = tqdm(
                total=total,
                unit="tile",
                desc=self.name,
                leave=False,
                position=1,
                disable=None,
                file=TerminalStream(),
            )
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _enhance_one(job: _Job, enhancer: Enhancer, options: dict[str, Any], quiet: bool) -> None:
    """Read, enhance and write one photo, and record what made it.

    Raises:
        PhotoError, OSError, ValueError: the photo could not be read or written.
    """
    from rave.io import PhotoError
    from rave.io.provenance import (
        NOT_A_REGULAR_FILE,
        finish_record,
        record_result,
        source_sha256,
    )

    assert job.target is not None and job.format is not None
    try:
        sha256 = source_sha256(job.source)  # before reading: the record names what was read
    except OSError as err:
        # Named here, where the file is first opened; a FIFO must not reach the reader
        # (it would block), and the reader words a permission error as a corrupt image.
        if err.strerror == NOT_A_REGULAR_FILE or err.errno in (errno.EACCES, errno.EPERM):
            reason = NOT_A_REGULAR_FILE if err.strerror == NOT_A_REGULAR_FILE else os_reason(err)
            raise PhotoError(job.source, reason) from None
        sha256 = None  # missing, a folder, a link loop: the reader below names the problem
    set_aside = []
    if sha256 is not None:
        recipe = _recipe(enhancer, job.format, options)
        set_aside.append(record_result(job.target, job.source, recipe, sha256))
    tiles = _TileProgress(job.source.name, quiet)
    try:
        notes = enhancer.enhance_file(
            job.source,
            job.target,
            format=job.format,
            quality=options["quality"],
            max_pixels=options["max_pixels"],
            progress=tiles,
            strength=options.get("strength", 1.0),
            replace_source=job.replace_source,
        )
    finally:
        tiles.close()
    if sha256 is not None:
        set_aside.append(finish_record(job.target))
    for backup in filter(None, set_aside):
        # Not quiet: the record of every earlier result in that folder has moved.
        _say(f"warning: the unreadable record was renamed to {backup}; a new record was started")
    for note in [*([job.format_note] if job.format_note else []), *notes]:
        _say(f"note: {job.source}: {note}", quiet)


def _read_output_records(jobs: list[_Job]) -> dict[Path, Records]:
    """Each output folder's record of what rave wrote, with one warning per unreadable one."""
    from rave.io.provenance import MANIFEST_NAME, read_records

    records: dict[Path, Records] = {}
    for job in jobs:
        if job.target is None or job.target.parent in records:
            continue
        folder = job.target.parent
        records[folder] = read_records(folder)
        problem = records[folder].problem
        if problem is not None:
            # Not quiet: it decides which existing results are refused.
            _say(
                f"warning: {folder / MANIFEST_NAME}: {problem}; files already in {folder} are "
                "treated as not written by rave (--overwrite replaces them); the record is "
                "kept as a .bak copy when new results are recorded"
            )
    return records


def _reuse_or_refuse(
    job: _Job,
    enhancer: Enhancer,
    options: dict[str, Any],
    tally: _Tally,
    quiet: bool,
    manifests: dict[Path, Records],
) -> str | None:
    """Apply the re-run rule to an existing target: None to run the job, else an error.

    A reusable result marks the job done (``job.target = None``, counted as skipped).
    ``manifests`` caches the output folders' records for the batch.
    """
    from rave.io.provenance import decide

    assert job.target is not None and job.format is not None
    if not os.path.lexists(job.target):
        return None
    recipe = _recipe(enhancer, job.format, options)
    try:
        decision = decide(job.target, job.source, recipe, manifests)
    except OSError as err:
        return f"cannot check the existing result {job.target}: {err.strerror or err}"
    if decision.action == "reuse":
        tally.skipped += 1
        job.target = None
        return None
    if decision.action == "refuse":
        return f"not enhanced: {decision.reason}"
    _say(f"note: {job.source}: enhanced again ({decision.reason})", quiet)
    return None


_LOSSY_FORMATS = frozenset({"jpg", "webp", "heic"})


def _recipe(enhancer: Enhancer, fmt: str, options: dict[str, Any]) -> Recipe:
    """What makes a result, for the re-run rule (strength as the option sets it, else 1)."""
    from rave.io.provenance import Recipe

    return Recipe(
        model_sha256=enhancer.model_sha256,
        format=fmt,
        quality=options["quality"] if fmt in _LOSSY_FORMATS else None,
        strength=float(options.get("strength", 1.0)),
    )


def _run_batch(
    jobs: list[_Job],
    enhancer: Enhancer,
    options: dict[str, Any],
    tally: _Tally,
    quiet: bool,
    debug: bool = False,
) -> None:
    """Enhance ``jobs``; any failure of one photo is that photo's error line.

    Raises:
        _BatchStopped: a bug in rave (reported) or a full / read-only output disk.
        KeyboardInterrupt: Ctrl-C or SIGTERM (``tally.left`` says how many remain).
    """
    from tqdm import tqdm

    from rave.inference.pipeline import overlapped, photo_bytes

    tally.left = len(jobs)
    # tqdm's monitor thread may redraw the bar at any time, also while the reader holds
    # stderr to capture decoder messages: the bar is redrawn by this loop alone.
    tqdm.monitor_interval = 0
    from rave.io.library_messages import TerminalStream

    # Bars and lines wait while another photo's decoder has fd 2 captured (overlapped batches).
    progress = tqdm(
        jobs, unit="photo", desc="enhance", disable=True if quiet else None, file=TerminalStream()
    )
    written: set[int] = set()  # id() of each job whose result and record are complete

    def run(job: _Job) -> None:
        _enhance_one(job, enhancer, options, quiet)
        written.add(id(job))

    # Decodes the next photo and encodes the previous one while one is enhanced.
    outcomes = overlapped(jobs, run, lambda job: photo_bytes(job.source))
    enhanced_before, failed_before = tally.enhanced, tally.failed
    try:
        # Whatever ends the loop early, the workers are stopped and joined before the
        # summary (no photo is written after rave enhance has returned).
        with contextlib.closing(outcomes):
            _report_outcomes(jobs, outcomes, progress, tally, debug)
    except KeyboardInterrupt:
        # Photos past the network when the signal came finish their write while the
        # workers are joined, but were never reported: count what is on disk instead.
        tally.enhanced = enhanced_before + len(written)
        tally.left = len(jobs) - len(written) - (tally.failed - failed_before)
        raise


def _report_outcomes(
    jobs: list[_Job], outcomes: Iterator[Future[None]], progress: Any, tally: _Tally, debug: bool
) -> None:
    """Count and report each photo's outcome, in input order; see :func:`_run_batch`."""
    from rave.cli._batch import STOP_BATCH_ERRNOS, bug_report, describe_failure, is_rave_bug
    from rave.io import PhotoError

    for job, outcome in zip(progress, outcomes, strict=True):
        progress.set_postfix_str(job.source.name, refresh=False)
        try:
            outcome.result()
        except PhotoError as err:
            tally.failed += 1
            _say(f"error: {err}")
        except Exception as err:  # whatever one photo raises is that photo's error...
            if is_rave_bug(err):  # ...unless rave's own code is wrong
                _say(f"error: {job.source}: {bug_report(err)}")
                if debug:
                    _say_traceback(err)
                raise _BatchStopped(3) from err
            tally.failed += 1
            _say(f"error: {job.source}: {describe_failure(err)}")
            if debug:
                _say_traceback(err)
            if isinstance(err, OSError) and err.errno in STOP_BATCH_ERRNOS:
                tally.left -= 1
                _say(
                    f"error: stopping: the output cannot take more files; {tally.left} "
                    "photo(s) not attempted"
                )
                raise _BatchStopped(1) from err
        else:
            tally.enhanced += 1
        tally.left -= 1


def _folder_problem(err: OSError) -> str | None:
    """What is in the way of creating an output folder, in words ("File exists" is not)."""
    if err.errno not in (errno.EEXIST, errno.ENOTDIR) or err.filename is None:
        return None
    blocked = Path(os.fsdecode(err.filename))
    if err.errno == errno.ENOTDIR:  # a file somewhere on the way: name it
        blocked = next(
            (path for path in reversed(blocked.parents) if path.exists() and not path.is_dir()),
            blocked,
        )
    if blocked.is_symlink() and not blocked.exists():
        return f"{blocked} is a broken link to {os.readlink(blocked)}"
    return f"{blocked} is a file, not a folder"


def _probe_output_folders(jobs: list[_Job]) -> str | None:
    """Check every output folder can take a file before any photo is computed.

    Returns:
        One error line for the first folder that cannot be written, else None.
    """
    from rave.io import probe_folder

    folders = dict.fromkeys(job.target.parent for job in jobs if job.target is not None)
    for folder in folders:
        try:
            probe_folder(folder)
        except OSError as err:
            reason = _folder_problem(err) or err.strerror or str(err)
            return f"output folder {folder} cannot be written ({reason}): nothing was enhanced"
    return None


def _prepare(
    ctx: click.Context,
    inputs: tuple[str, ...],
    *,
    output_dir: Path | None,
    model: str,
    device: str,
    tile: int | str | None,
    suffix: str,
    fmt: str | None,
    overwrite: bool,
    in_place_allowed: bool,
    recursive: bool,
    options: dict[str, Any],
    tally: _Tally,
    quiet: bool,
) -> tuple[Enhancer, list[_Job]]:
    """Load the model, collect and plan the jobs, report those that will not run.

    Returns:
        The enhancer and the jobs to run (reused results counted as skipped in ``tally``).
    """
    # The model and device are checked before anything is skipped, and what made each
    # existing result is compared with what would make it now.
    enhancer = _load_enhancer(ctx, model, device, tile)
    jobs, errors, scan_notes = _collect(inputs, recursive, output_dir)
    jobs = _drop_earlier_results(jobs)
    for line in scan_notes:
        _say(f"note: {line}", quiet)
    jobs = _plan(
        jobs,
        output_dir=output_dir,
        suffix=suffix,
        format=fmt,
        in_place_allowed=in_place_allowed,
    )
    tally.failed += len(errors)
    for line in errors:
        _say(f"error: {line}")
    to_run = []
    manifests = _read_output_records(jobs)
    for job in jobs:
        if job.error is None and job.target is not None and not overwrite:
            job.error = _reuse_or_refuse(job, enhancer, options, tally, quiet, manifests)
        if job.error is not None:
            tally.failed += 1
            _say(f"error: {job.source}: {job.error}")
        elif job.target is not None:
            to_run.append(job)
    return enhancer, to_run


HELP = f"""Enhance backlit photos: files, folders (-r for sub-folders) and globs.

\b
Where results go:
  -o DIR (default ./{DEFAULT_OUTPUT_DIR}): the same file names in DIR; photos found in a
         folder keep their sub-folder path below DIR.
  --beside: next to each input, named NAME{BESIDE_SUFFIX}.EXT.
  --suffix TEXT is added to every name (default '' in DIR, '{BESIDE_SUFFIX}' with --beside).

\b
Re-runs: a result is reused only if it was made from the same photo (same file, or the
same content) with the same model and options (strength, format, quality); otherwise it is
made again. A result of another photo (or a file rave did not write) under the same name
is never replaced: that photo gets an error line; --overwrite replaces it. What made each
result is recorded in a hidden .rave-results.json in its folder. Inputs are never
overwritten unless you ask with both --overwrite and an explicit empty suffix
(--beside --suffix '' --overwrite). Files are written to a temporary name and renamed.

\b
Formats: JPEG, PNG, TIFF, WebP, BMP, GIF, AVIF, JPEG 2000, PNM, TGA, QOI; HEIC/HEIF
(pillow-heif); camera RAW: DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2 (rawpy/LibRaw: camera
white balance, sRGB, 16-bit, written as 16-bit TIFF). The output has the input's format
and bit depth (8/16-bit PNG and TIFF, float TIFF), HEIC as HEIC where libheif can encode
it (else JPEG), other formats as PNG; EXIF orientation applied; ICC profile, EXIF, XMP and
dpi kept. Photos of one name in two formats get distinct names (img_avif.png, img_jp2.png;
a.JPG and a.jpg to PNG: a_jpg.png, a_jpg_2.png in name order); any other clash of result
names in one run, letter case ignored, is settled in input order with _2, _3...
(re-running the same command names every photo the same way).
--format converts (alpha is dropped for JPEG). Grey stays grey; alpha is kept.

An output folder that cannot be written (read-only, full) is found before any photo is
enhanced. Ctrl-C or SIGTERM stops after cleaning up, prints what is left, and a re-run
finishes the batch.

Exit status: 0 if every photo was enhanced or skipped, 1 if any failed, 2 on usage errors
or an output folder that cannot be written, 3 on an internal error (a bug in rave; --debug
shows the traceback), 130 on Ctrl-C (143 on SIGTERM).
"""


@click.command("enhance", help=HELP)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@output_option(
    f"Folder for the results [default: ./{DEFAULT_OUTPUT_DIR}].",
    folder=True,
    old_names=("--output-dir",),
    dest="output_dir",
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
    type=click.Choice(["png", "jpg", "jpeg", "tif", "tiff", "webp", "heic"], case_sensitive=False),
    default=None,
    help="Output format [default: that of each input].",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG/WebP/HEIC quality.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace existing results, even those of other photos or not written by rave.",
)
@click.option("-r", "--recursive", is_flag=True, help="Include sub-folders of folder inputs.")
@device_option()
@tile_option()
@max_pixels_option()
@quiet_option()
@strength_option()
@click.option("--debug", is_flag=True, help="Print the traceback of each failure.")
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
    debug: bool,
    strength: float = 1.0,
) -> None:
    started = time.perf_counter()
    if beside and output_dir is not None:
        raise click.UsageError("-o/--output and --beside exclude each other")
    if not beside and output_dir is None:
        output_dir = Path(DEFAULT_OUTPUT_DIR)
    if suffix is None:
        suffix = BESIDE_SUFFIX if beside else ""
    if any(sep in suffix for sep in {"/", os.sep, os.altsep} - {None}):
        raise click.BadParameter("must not contain a path separator", param_hint="--suffix")
    explicit_suffix = ctx.get_parameter_source("suffix") == click.core.ParameterSource.COMMANDLINE
    fmt = {"jpeg": "jpg", "tiff": "tif"}.get((output_format or "").lower(), output_format)

    from rave.cli._batch import Interrupted, interrupt_on_sigterm

    options: dict[str, Any] = {
        "tile": tile,
        "quality": quality,
        "max_pixels": max_pixels,
        "strength": strength,
    }
    tally = _Tally()
    try:
        # Ctrl-C or SIGTERM while the model loads or the inputs are looked at (a large
        # batch's re-run checks take a while) says so too, not click's "Aborted!" (exit
        # 1) or nothing at all: nothing has been written yet.
        with interrupt_on_sigterm():
            enhancer, to_run = _prepare(
                ctx,
                inputs,
                output_dir=output_dir,
                model=model,
                device=device,
                tile=tile,
                suffix=suffix,
                fmt=fmt.lower() if fmt else None,
                overwrite=overwrite,
                in_place_allowed=overwrite and explicit_suffix and suffix == "",
                recursive=recursive,
                options=options,
                tally=tally,
                quiet=quiet,
            )
    except KeyboardInterrupt as err:
        # Not through _say: the interrupted import of a library must not be needed here.
        click.echo("interrupted before any photo was enhanced: nothing was written", err=True)
        ctx.exit(err.exit_status if isinstance(err, Interrupted) else 130)

    if to_run:
        tally.left = len(to_run)
        try:
            with interrupt_on_sigterm():
                # After the model is known good, before any photo is computed.
                problem = _probe_output_folders(to_run)
                if problem is not None:
                    _say(f"error: {problem}")
                    ctx.exit(2)
                _note_slow_convolutions(enhancer.net, quiet)
                _run_batch(to_run, enhancer, options, tally, quiet, debug)
        except KeyboardInterrupt as err:
            status = err.exit_status if isinstance(err, Interrupted) else 130
            # Skipped photos are counted too, or the numbers do not add up to the batch.
            skipped = f"{tally.skipped} skipped, " if tally.skipped else ""
            _say(
                f"interrupted: {tally.enhanced} enhanced, {skipped}{tally.failed} failed, "
                f"{tally.left} left; run the same command again to finish (results written "
                "so far are kept and skipped)"
            )
            ctx.exit(status)
        except _BatchStopped as stop:
            if stop.exit_status == 3:
                ctx.exit(3)

    elapsed = time.perf_counter() - started
    where = "next to the inputs" if output_dir is None else f"in {output_dir}"
    hint = (
        " (skipped: made from the same photos with the same model and options; "
        "--overwrite redoes them)"
        if tally.skipped
        else ""
    )
    from rave.io.printable import printable

    not_attempted = f", {tally.left} not attempted" if tally.left else ""
    click.echo(
        f"{tally.enhanced} enhanced, {tally.skipped} skipped, {tally.failed} failed"
        f"{not_attempted} in {elapsed:.1f} s; results {printable(where)}{hint}"
    )
    if tally.failed:
        ctx.exit(1)
