"""What made each result: the re-run rule of ``rave enhance``.

A result is reused only if it was made from the same source photo (same path with the same
size and modification time, or the same content by SHA-256), with the same model (the
SHA-256 of its weights) and the same options (strength, format, quality), and the file is
still the one rave wrote (same size and modification time). A result made from another
photo is never overwritten without ``--overwrite``.

The record is a small JSON manifest, ``.rave-results.json``, in each output folder, rather
than metadata inside each result: BMP has no place for it, and the 16-bit PNG/TIFF writers
(OpenCV, tifffile) would each need their own; one hidden file per folder works for every
format and leaves the photos' own XMP untouched. Updates take an exclusive lock on the
folder (POSIX ``flock``) and replace the manifest atomically, so concurrent runs into one
folder keep every record.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MANIFEST_NAME",
    "NOT_A_REGULAR_FILE",
    "Decision",
    "Recipe",
    "Records",
    "decide",
    "finish_record",
    "read_records",
    "record_result",
    "source_sha256",
]

MANIFEST_NAME = ".rave-results.json"
NOT_A_REGULAR_FILE = "not a regular file"
_BACKUP_SUFFIX = ".bak"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """How a result is made: the model's weights and the options that change the pixels."""

    model_sha256: str
    format: str
    quality: int | None  # only for lossy formats
    strength: float = 1.0


@dataclass(frozen=True)
class Decision:
    """What to do with one existing target: ``reuse`` it, ``rerun`` (overwrite our own
    earlier result) or ``refuse`` (it holds something else); ``reason`` says why."""

    action: Literal["reuse", "rerun", "refuse"]
    reason: str = ""


def source_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MB blocks).

    Raises:
        OSError: the file cannot be read, or is not a regular file (a FIFO, a device such as
            /dev/zero, a socket: ``strerror`` is "not a regular file"); such a file is
            refused before a byte is read from it, so that it can neither block nor run on.
    """
    # O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever. It changes
    # nothing for regular files, whose reads never block.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, NOT_A_REGULAR_FILE, str(path))
        digest = hashlib.sha256()
        with open(descriptor, "rb", closefd=False) as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    finally:
        os.close(descriptor)
    return digest.hexdigest()


@dataclass
class Records:
    """One output folder's record of what rave wrote there, as read from its manifest."""

    results: dict[str, Any]
    problem: str | None = None
    """Why the manifest could not be read ("unreadable (not valid JSON)"), or None."""
    kept_aside: Path | None = None
    """An earlier unreadable manifest set aside as ``.rave-results.json.bak``, if any."""


def read_records(folder: Path) -> Records:
    """The records of ``folder``: empty when it has no manifest; never raises.

    A manifest that exists but cannot be read or parsed gives empty results and a
    ``problem``: every file in the folder is then of unknown origin.
    """
    path = folder / MANIFEST_NAME
    backup = path.with_name(MANIFEST_NAME + _BACKUP_SUFFIX)
    kept_aside = backup if os.path.lexists(backup) else None
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return Records({}, kept_aside=kept_aside)
    except OSError as err:
        return Records({}, f"unreadable ({err.strerror or err})", kept_aside)
    except ValueError:  # UnicodeDecodeError
        return Records({}, "unreadable (not UTF-8 text)", kept_aside)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        return Records({}, f"unreadable (not valid JSON at {where})", kept_aside)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        return Records({}, "unreadable (not valid JSON)", kept_aside)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        return Records({}, "unreadable (not a record written by rave)", kept_aside)
    return Records(results, kept_aside=kept_aside)


def _read_manifest(folder: Path) -> dict[str, Any]:
    return read_records(folder).results


def decide(
    target: Path,
    source: Path,
    recipe: Recipe,
    manifests: dict[Path, Records] | None = None,
) -> Decision:
    """Whether the existing file ``target`` can stand for ``source`` enhanced by ``recipe``.

    The source's SHA-256 is computed only when its path, size or time differ from the record.
    ``manifests`` caches each folder's records across the calls of one batch.
    """
    manifests = {} if manifests is None else manifests
    if target.parent not in manifests:
        manifests[target.parent] = read_records(target.parent)
    records = manifests[target.parent]
    entry = records.results.get(target.name)
    entry = dict(entry) if isinstance(entry, dict) else entry
    try:
        status = target.stat()
    except OSError:
        return Decision("rerun", "no result yet")
    written = [status.st_size, status.st_mtime_ns]
    if isinstance(entry, dict) and entry.get("output") is None:
        # Interrupted between writing the result and completing its record: the file is
        # the new result unless it is still the one there before.
        if written == entry.get("previous_output"):
            return Decision("rerun", "the previous run was interrupted")
        entry["output"] = written
    if records.problem is not None:
        return Decision(
            "refuse",
            f"{target} exists and rave cannot tell whether it wrote it (the record "
            f"{target.parent / MANIFEST_NAME} is {records.problem}); --overwrite replaces "
            "it, or choose another -o folder or --suffix",
        )
    if not isinstance(entry, dict) or entry.get("output") != written:
        if isinstance(entry, dict):
            what = "it was changed after rave wrote it"
        elif records.kept_aside is not None:
            what = (
                "no record of rave writing it; an earlier record that could not be read is "
                f"kept in {records.kept_aside}"
            )
        else:
            what = "no record of rave writing it"
        return Decision(
            "refuse",
            f"{target} exists and is not a result of this photo ({what}); "
            "--overwrite replaces it, or choose another -o folder or --suffix",
        )
    source_status = source.stat()
    same_path = entry.get("source") == str(source.resolve())
    same_file = same_path and entry.get("source_stat") == [
        source_status.st_size,
        source_status.st_mtime_ns,
    ]
    same_content = same_file or entry.get("source_sha256") == source_sha256(source)
    if not same_content and not same_path:
        return Decision(
            "refuse",
            f"{target} holds the result of another photo ({entry.get('source')}); "
            "choose another -o folder or --suffix, or --overwrite to replace it",
        )
    if not same_content:
        return Decision("rerun", "the photo changed since its result was made")
    if entry.get("recipe") != asdict(recipe):
        recorded = entry.get("recipe")
        recorded = recorded if isinstance(recorded, dict) else {}
        changed = [key for key, value in asdict(recipe).items() if recorded.get(key) != value]
        names = {"model_sha256": "model"}
        return Decision(
            "rerun",
            "made with another " + ", ".join(names.get(key, key) for key in changed),
        )
    return Decision("reuse")


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (POSIX flock on the folder itself; none elsewhere)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks on folders
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def record_result(
    target: Path, source: Path, recipe: Recipe, sha256: str | None = None
) -> Path | None:
    """Note in the folder's manifest that ``target`` is being made from ``source``.

    Called before the result is written; :func:`finish_record` completes the record once
    it is. A run stopped in between leaves a pending record that :func:`decide` resolves.

    Args:
        target: the result about to be written.
        source: the photo it is made from.
        recipe: how it is made.
        sha256: the source's SHA-256 if already known (else computed here).

    Returns:
        Where an unreadable manifest of the folder was set aside (see :func:`_update`),
        else None.
    """
    source_status = source.stat()
    try:
        before = target.stat()
        previous = [before.st_size, before.st_mtime_ns]
    except OSError:
        previous = None
    entry = {
        "source": str(source.resolve()),
        "source_stat": [source_status.st_size, source_status.st_mtime_ns],
        "source_sha256": sha256 or source_sha256(source),
        "recipe": asdict(recipe),
        "output": None,
        "previous_output": previous,
    }
    return _update(target, entry)


def finish_record(target: Path) -> Path | None:
    """Complete ``target``'s record with the size and time of the file just written.

    Returns:
        As :func:`record_result`.
    """
    status = target.stat()
    entry = _read_manifest(target.parent).get(target.name)
    if isinstance(entry, dict):
        entry["output"] = [status.st_size, status.st_mtime_ns]
        entry.pop("previous_output", None)
        return _update(target, entry)
    return None


def _update(target: Path, entry: dict[str, Any]) -> Path | None:
    """Write ``entry`` into the folder's manifest; returns where an unreadable one went.

    An unreadable manifest is renamed to ``.rave-results.json.bak`` (``.bak2``... when
    that exists) and a new one started, rather than refusing to record: its bytes are
    kept for whoever wants to mend it, and the batch is not held up by it. The results
    it described stay of unknown origin and are not replaced without ``--overwrite``.
    """
    from rave.io.write import atomic_write

    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        records = read_records(folder)
        kept = None
        if records.problem is not None:
            kept = _set_aside(folder / MANIFEST_NAME)
        records.results[target.name] = entry
        text = json.dumps({"version": _FORMAT_VERSION, "results": records.results}, indent=1)
        atomic_write(folder / MANIFEST_NAME, text.encode())
    return kept


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to the first free ``NAME.bak``, ``NAME.bak2``... (under the lock)."""
    number = 1
    while True:
        backup = path.with_name(f"{path.name}{_BACKUP_SUFFIX}{number if number > 1 else ''}")
        if not os.path.lexists(backup):
            os.rename(path, backup)
            return backup
        number += 1
