"""Fetching, caching and verifying checkpoint files.

The cache folder is ``$RAVE_HOME`` when set, otherwise the user cache folder for ``rave``
(platformdirs, e.g. ``~/.cache/rave`` on Linux). ``RAVE_OFFLINE=1`` forbids the network.
A download goes to a temporary file in the cache folder, its sha256 is checked against the
pinned value, and only then is it renamed into place, so an interrupted or tampered download
never leaves a file that looks valid. Cached files are re-hashed on every use (1 MB, cheap):
a corrupt copy is reported, deleted and fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from rave.zoo.registry import ModelInfo, ZooError

__all__ = [
    "ChecksumError",
    "ModelUnavailableError",
    "cache_dir",
    "cache_problem",
    "cached_path",
    "download_file",
    "fetch",
    "is_offline",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16
_TIMEOUT_S = 60.0  # for the connection and each read: a silent server
# A server that trickles (a byte now and then, each read inside _TIMEOUT_S) would hold a
# download forever: one that averages under _MIN_RATE over the last _STALL_WINDOW_S is
# given up. 1 KiB/s is a hundredth of a slow mobile link; a minute rides out hiccups.
_STALL_WINDOW_S = 60.0
_MIN_RATE = 1024.0  # bytes per second
_TRUE = {"1", "true", "yes", "on"}


class ModelUnavailableError(ZooError):
    """Weights that are not cached and cannot be downloaded (offline, network failure)."""


class ChecksumError(ZooError):
    """Downloaded bytes whose sha256 differs from the pinned value."""


def cache_dir() -> Path:
    """Folder that holds downloaded checkpoints (not created here).

    ``$RAVE_HOME`` when set, otherwise platformdirs' user cache folder for ``rave``.
    """
    home = os.environ.get("RAVE_HOME")
    if home:
        return Path(home).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rave"))


def cache_problem() -> str | None:
    """Why the cache folder cannot take downloads (for ``rave env`` / ``rave models``), or
    ``None``; a folder that does not exist yet is fine (it is created on first download)."""
    folder = cache_dir()
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent  # the first existing folder above: where mkdir would happen
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def is_offline() -> bool:
    """True when ``RAVE_OFFLINE`` is set to 1/true/yes/on: no network access at all."""
    return os.environ.get("RAVE_OFFLINE", "").strip().lower() in _TRUE


def cached_path(info: ModelInfo) -> Path:
    """Where ``info``'s file lives in the cache: ``<cache>/<stem>-<sha256[:8]>.pth``."""
    return cache_dir() / info.cache_filename


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Whether downloads show their progress bar when their caller does not say: rave's
# commands turn it off for -q (the models are fetched deep inside rave.Enhancer, whose
# callers have no progress argument to pass).
_SHOW_PROGRESS: ContextVar[bool] = ContextVar("rave_download_progress", default=True)


@contextmanager
def download_progress(show: bool) -> Iterator[None]:
    """Show or hide the progress bar of the downloads started within the block."""
    token = _SHOW_PROGRESS.set(show)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


class _StallWatch:
    """Fails a transfer whose average rate over the last ``window`` seconds is below
    ``min_rate`` bytes per second (checked as bytes arrive; a silent server is the
    socket timeout's)."""

    def __init__(self, url: str, window: float, min_rate: float) -> None:
        self.url, self.window, self.min_rate = url, window, min_rate
        # (time, bytes received by then): the oldest kept is at or before the window start.
        self.samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])

    def update(self, received: int) -> None:
        """Record that ``received`` bytes have arrived in all.

        Raises:
            TimeoutError: the last ``window`` seconds brought under ``min_rate`` per second.
        """
        now = time.monotonic()
        self.samples.append((now, received))
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()
        since, before = self.samples[0]
        if now - since >= self.window and received - before < self.min_rate * (now - since):
            raise TimeoutError(
                f"download of {self.url} stalled: {received - before} bytes in the last "
                f"{now - since:.0f} s, under {self.min_rate:.0f} bytes/s ({received} received "
                "in all); try again later"
            )


def download_file(
    url: str,
    destination: str | Path,
    sha256: str,
    *,
    progress: bool | None = None,
    size: int | None = None,
    stall_window_s: float | None = None,
    min_rate: float | None = None,
) -> Path:
    """Download ``url`` to ``destination`` if and only if its sha256 equals ``sha256``.

    The bytes go to a temporary file beside ``destination`` that is renamed into place
    (``os.replace``) after the hash matched, so ``destination`` is either absent or whole.

    Args:
        url: address to fetch.
        destination: final file path; its folder is created if needed.
        sha256: expected hex digest.
        progress: show a tqdm progress bar on stderr (None: unless within
            ``download_progress(False)``).
        size: expected size in bytes, if known: a server that announces more is not
            read from, and a transfer is stopped once it goes past ``size`` (a wrong or
            hostile URL cannot fill the disk).
        stall_window_s, min_rate: a transfer that brings fewer than ``min_rate`` bytes
            per second on average over the last ``stall_window_s`` seconds is given up
            (a server that trickles bytes would otherwise never time out: the 60 s
            timeout is per read). Slow but moving links are untouched. Default (None):
            60 s and 1 KiB/s.

    Raises:
        ChecksumError: the downloaded bytes have another hash, or are more than ``size``
            (nothing is left behind).
        TimeoutError: the transfer stalled (see ``min_rate``; nothing is left behind).
        OSError, urllib.error.URLError: network or disk failures, passed on.
    """
    from rave.io.atomic import atomic_write

    destination = Path(destination)
    if progress is None:
        progress = _SHOW_PROGRESS.get()
    request = Request(url, headers={"User-Agent": "rave-enhance"})

    def download_into(out: BinaryIO) -> None:
        digest = hashlib.sha256()
        received = 0
        with urlopen(request, timeout=_TIMEOUT_S) as response:
            # read1: whatever one socket read brings. read(n) waits for all n bytes, so a
            # trickling server would never let the stall rule below be checked. (Stand-in
            # responses of other types are read as they read.)
            read = response.read
            if isinstance(response, http.client.HTTPResponse):
                read = response.read1
            watch = _StallWatch(
                url,
                _STALL_WINDOW_S if stall_window_s is None else stall_window_s,
                _MIN_RATE if min_rate is None else min_rate,
            )
            headers = response.headers or {}
            length = headers.get("Content-Length")
            kind = headers.get("Content-Type")
            total = int(length) if length and length.isdigit() else None
            if size is not None and total is not None and total > size:
                raise ChecksumError(
                    f"{url} offers {total} bytes ({kind or 'no Content-Type'}), more than the "
                    f"pinned file's {size}: nothing was downloaded"
                )
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=destination.name,
                disable=not progress,
                leave=False,
            ) as bar:
                while chunk := read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
                    watch.update(received)
                    if size is not None and received > size:
                        raise ChecksumError(
                            f"download of {url} passed the expected {size} bytes: not the "
                            "pinned file; stopped and discarded"
                        )
        if total is not None and received < total:
            # http.client returns b"" when the server closes the connection early instead
            # of raising; without this a cut-short transfer read as a changed file.
            raise ConnectionError(
                f"the connection was closed after {received} of {total} bytes; try again"
            )
        actual = digest.hexdigest()
        if actual != sha256:
            what = f"{received} bytes" + (f" of {kind}" if kind else "")
            raise ChecksumError(
                f"download of {url} ({what}) has sha256 {actual}, expected {sha256}: the "
                "file was discarded (changed upstream, damaged in transit, or not the file: "
                "a proxy or login page)"
            )

    atomic_write(destination, download_into)
    return destination


def fetch(info: ModelInfo, *, download: bool = True, progress: bool | None = None) -> Path:
    """Path of ``info``'s verified file in the cache, downloading it first if needed.

    Args:
        info: a downloadable zoo entry (not the built-in ``default``).
        download: allow a download when the file is not cached (``RAVE_OFFLINE=1`` forbids
            it regardless).
        progress: show a progress bar while downloading (None: as ``download_file``).

    Raises:
        ModelUnavailableError: not cached, and downloading is forbidden or failed; the
            message names the model, the URL and the exact path to place the file at.
        ChecksumError: the download does not match the pinned sha256.
    """
    if info.url is None or info.sha256 is None:
        raise ZooError(f"model {info.name!r} is built in: it is never downloaded")
    path = cached_path(info)
    if path.is_file():
        try:
            actual = sha256_file(path)
        except OSError as err:
            raise ZooError(
                f"cached file {path} of model {info.name!r} cannot be read: {err.strerror or err}"
            ) from None
        if actual == info.sha256:
            return path
        logger.warning(
            "cached file %s of model %r is corrupt (sha256 %s, expected %s); removing it",
            path,
            info.name,
            actual,
            info.sha256,
        )
        try:
            path.unlink()
        except FileNotFoundError:  # another process removed or replaced it meanwhile
            pass
        except OSError as err:
            # A read-only cache: the raw PermissionError was blamed on rave export's output.
            raise ZooError(
                f"cached file {path} of model {info.name!r} is corrupt (sha256 {actual}, "
                f"expected {info.sha256}) and cannot be removed ({err.strerror or err}): "
                "delete it, or set RAVE_HOME to a writable folder"
            ) from None
    if not download or is_offline():
        reason = "RAVE_OFFLINE is set" if is_offline() else "downloading was not allowed"
        raise ModelUnavailableError(_not_available_message(info, path, reason))
    _check_cache_folder(path.parent)
    logger.info("downloading model %r from %s to %s", info.name, info.url, path)
    try:
        return download_file(info.url, path, info.sha256, progress=progress, size=info.size)
    except (URLError, OSError, http.client.HTTPException) as err:
        # HTTPError's str has the status code; other URLErrors wrap the socket error
        detail = err if isinstance(err, HTTPError) else getattr(err, "reason", None) or err
        reason = f"download failed: {detail}"
        raise ModelUnavailableError(_not_available_message(info, path, reason)) from err


def _check_cache_folder(folder: Path) -> None:
    """Make the cache folder and check that it takes files, or say in one line why not
    (before any download: otherwise the failure reads as a network problem, "download
    failed: [Errno 17]")."""
    where = "RAVE_HOME" if os.environ.get("RAVE_HOME") else "the user cache folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ZooError(
            f"model cache {folder} ({where}) is not a folder: a file is in the way"
        ) from None
    except OSError as err:
        raise ZooError(
            f"model cache {folder} ({where}) cannot be created: {err.strerror or err}"
        ) from None
    from rave.io.atomic import probe_folder

    try:
        # An existing folder this user cannot write in (or a full disk) otherwise fails
        # as "download failed: [Errno 13] ... .part", advising to download again.
        probe_folder(folder)
    except OSError as err:
        raise ZooError(
            f"model cache {folder} ({where}) cannot be written: {err.strerror or err}; "
            "set RAVE_HOME to a writable folder"
        ) from None


def _not_available_message(info: ModelInfo, path: Path, reason: str) -> str:
    return (
        f"model {info.name!r} is not in the cache and cannot be downloaded ({reason}). "
        f"Download {info.url} and save it as {path} (sha256 {info.sha256}), "
        f"or run `rave models --download {info.name}` while online."
    )
