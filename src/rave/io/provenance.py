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
    "decide",
    "finish_record",
    "record_result",
    "source_sha256",
]

MANIFEST_NAME = ".rave-results.json"
NOT_A_REGULAR_FILE = "not a regular file"
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


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    results = data.get("results") if isinstance(data, dict) else None
    return results if isinstance(results, dict) else {}


def decide(
    target: Path,
    source: Path,
    recipe: Recipe,
    manifests: dict[Path, dict[str, Any]] | None = None,
) -> Decision:
    """Whether the existing file ``target`` can stand for ``source`` enhanced by ``recipe``.

    The source's SHA-256 is computed only when its path, size or time differ from the record.
    ``manifests`` caches each folder's records across the calls of one batch.
    """
    manifests = {} if manifests is None else manifests
    if target.parent not in manifests:
        manifests[target.parent] = _read_manifest(target.parent)
    entry = manifests[target.parent].get(target.name)
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
    if not isinstance(entry, dict) or entry.get("output") != written:
        if isinstance(entry, dict):
            what = "it was changed after rave wrote it"
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
        recorded = entry.get("recipe") or {}
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


def record_result(target: Path, source: Path, recipe: Recipe, sha256: str | None = None) -> None:
    """Note in the folder's manifest that ``target`` is being made from ``source``.

    Called before the result is written; :func:`finish_record` completes the record once
    it is. A run stopped in between leaves a pending record that :func:`decide` resolves.

    Args:
        target: the result about to be written.
        source: the photo it is made from.
        recipe: how it is made.
        sha256: the source's SHA-256 if already known (else computed here).
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
    _update(target, entry)


def finish_record(target: Path) -> None:
    """Complete ``target``'s record with the size and time of the file just written."""
    status = target.stat()
    entry = _read_manifest(target.parent).get(target.name)
    if isinstance(entry, dict):
        entry["output"] = [status.st_size, status.st_mtime_ns]
        entry.pop("previous_output", None)
        _update(target, entry)


def _update(target: Path, entry: dict[str, Any]) -> None:
    from rave.io.write import atomic_write

    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _folder_lock(folder):
        results = _read_manifest(folder)
        results[target.name] = entry
        text = json.dumps({"version": _FORMAT_VERSION, "results": results}, indent=1)
        atomic_write(folder / MANIFEST_NAME, text.encode())
