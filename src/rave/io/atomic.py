"""The one way rave writes a file: verified, atomic, with the user's umask.

Every file (photo, checkpoint, report, residual vector, download) is written to a short
hidden temporary name in the target folder (``.rave-PID-XXXXXXXX.part``), flushed,
checked and fsynced, and only then renamed over the target with :func:`os.replace`. The
target is therefore either untouched or complete: a full disk, a short write, an encoder
error, Ctrl-C or SIGTERM leave the previous file as it was. That includes replacing a photo
by its enhanced version in place: the original stays until the verified result replaces it.

Why a stream of our own instead of ``open()``: Pillow's JPEG/TIFF/BMP encoders write
straight to a file's descriptor when it has one and ignore short ``write()`` results, so a
full disk produced truncated photos that were renamed into place. :class:`_CheckedFile`
has no descriptor to offer and raises on any write that does not take every byte.

Temporary names carry the writer's process id, so a later run can remove the leftovers
of a killed one (``kill -9``, power loss) without touching those of a live process.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TEMPORARY_PATTERN",
    "atomic_write",
    "file_mode",
    "probe_folder",
    "remove_stale_temporaries",
    "scratch_file",
]

_PREFIX = ".rave-"
_SUFFIX = ".part"
TEMPORARY_PATTERN = re.compile(r"^\.rave-(\d+)-[A-Za-z0-9_]{8}\.(part|png)$")
"""Names of rave's own temporary files (``.rave-PID-XXXXXXXX.part``, ``.png`` for OpenCV)."""

# A leftover whose process id belongs to a live process is still removed once it is this
# old: process ids are reused, and no single write takes a day.
_STALE_AFTER_S = 24 * 3600
_PROBE_BYTES = 64 * 1024
_cleaned_folders: set[str] = set()


def file_mode() -> int:
    """The permission bits a new file gets under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # Linux shows the umask in /proc; elsewhere os.umask can only be read by setting it,
    # which another thread creating a file at that instant would see.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


class _CheckedFile(io.RawIOBase):
    """A raw file over a descriptor whose writes either take every byte or raise OSError.

    ``fileno()`` is refused on purpose so that encoders (Pillow, tifffile, numpy) write
    through :meth:`write` rather than to the descriptor behind our back.
    """

    def __init__(self, descriptor: int, name: str) -> None:
        super().__init__()
        self._descriptor = descriptor
        self.name = name  # tifffile and Pillow look for a file name

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("rave checks every write: use write()")

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = os.read(self._descriptor, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            written = os.write(self._descriptor, view[done:])
            if written <= 0:
                # A write that takes nothing without an error: the device is full.
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += written
        return done

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._descriptor, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._descriptor, 0, os.SEEK_CUR)

    def truncate(self, size: int | None = None) -> int:
        size = self.tell() if size is None else size
        os.ftruncate(self._descriptor, size)
        return size


def _temporary_in(folder: Path, suffix: str = _SUFFIX) -> tuple[int, Path]:
    # Short and independent of the target's name: a 250-byte photo name still fits.
    descriptor, name = tempfile.mkstemp(
        dir=folder, prefix=f"{_PREFIX}{os.getpid()}-", suffix=suffix
    )
    return descriptor, Path(name)


@contextlib.contextmanager
def scratch_file(folder: str | os.PathLike[str], suffix: str = ".png") -> Iterator[Path]:
    """An empty temporary file in ``folder`` for a library that wants a path, then removed.

    Kept beside the output (not in ``$TMPDIR``) and named like every rave temporary, so
    that a killed run's leftover is removed by the next one (``suffix`` is ``.part`` or
    ``.png``).
    """
    descriptor, path = _temporary_in(Path(folder), suffix)
    os.close(descriptor)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete rave's own leftover temporary files in ``folder`` (not its sub-folders).

    A leftover is a ``.rave-PID-XXXXXXXX.part`` file whose process is gone, or older than
    a day. Other files, whatever their name, are never touched.

    Returns:
        The files removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = TEMPORARY_PATTERN.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        try:
            old = time.time() - entry.stat(follow_symlinks=False).st_mtime > _STALE_AFTER_S
        except OSError:
            continue
        if pid == os.getpid() and not old:
            continue
        if not old and _process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by someone else
        return True
    return True


def _clean_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _cleaned_folders:
        if len(_cleaned_folders) >= 4096:  # a server writes into a fresh folder per request
            _cleaned_folders.clear()
        _cleaned_folders.add(key)
        remove_stale_temporaries(folder)


def atomic_write(
    path: str | os.PathLike[str],
    content: bytes | Callable[[BinaryIO], None],
    *,
    verify: Callable[[Path], None] | None = None,
) -> None:
    """Write ``content`` to ``path`` so that ``path`` is either untouched or complete.

    Args:
        path: the target; its folder is created if needed.
        content: the bytes, or a function that writes them to the binary stream it is
            given (it may seek; it has no ``fileno()``).
        verify: called with the temporary file's path once every byte is on disk and
            before the rename; raise to refuse the file (e.g. re-open and check a header).

    Raises:
        OSError: the folder or the file cannot be written (``ENOSPC`` when the disk is
            full); whatever ``content`` or ``verify`` raise. Nothing is left behind and
            an existing ``path`` is kept as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(path.parent)
    descriptor, temporary = _temporary_in(path.parent)
    try:
        raw = _CheckedFile(descriptor, str(temporary))
        with io.BufferedRandom(raw, buffer_size=1 << 20) as stream:
            if isinstance(content, bytes | bytearray | memoryview):
                stream.write(content)
            else:
                content(stream)
            stream.flush()
            end = stream.seek(0, os.SEEK_END)
            os.fsync(descriptor)
            # Every write was checked; the size on disk is checked once more in case a
            # writer reached the descriptor some other way.
            if os.fstat(descriptor).st_size != end:
                raise OSError(errno.EIO, f"{path}: file size on disk differs from bytes written")
        os.close(descriptor)
        descriptor = -1
        if verify is not None:
            verify(temporary)
        # mkstemp creates the file readable by its owner only; give it the usual mode.
        os.chmod(temporary, file_mode())
        os.replace(temporary, path)
    except BaseException:
        if descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(descriptor)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def probe_folder(folder: str | os.PathLike[str]) -> None:
    """Check that files can be written in ``folder`` (created if needed) before real work.

    Writes, fsyncs and deletes a 64 KiB temporary file, and removes rave's stale
    temporary files there.

    Raises:
        OSError: read-only, permission denied, full, or not a folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _clean_once(folder)
    descriptor, temporary = _temporary_in(folder)
    try:
        _CheckedFile(descriptor, str(temporary)).write(bytes(_PROBE_BYTES))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
