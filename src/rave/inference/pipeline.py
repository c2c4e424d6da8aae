"""Overlapped batch processing: decode the next photo and encode the previous one while
the current one is enhanced.

The network keeps every core busy only while it runs; decoding and encoding a photo use one
core and the network waits meanwhile. :func:`overlapped` runs each photo's whole job
(read, enhance, write) in a worker thread, up to three photos at once, and lets only one of
them use the network at a time (:func:`wait_for_turn` / :func:`end_turn`, in input order),
so one photo is decoded and another encoded while a third is enhanced. Pillow, OpenCV and
the network release the GIL, so the threads really overlap.

Memory rule: a photo overlaps with its neighbours only when its pixels and theirs each take
at most :data:`OVERLAP_MAX_BYTES` (48 MB: 16 MP at 8 bits per channel, 8 MP at 16 bits); a
larger photo runs alone, with nothing decoded or encoded beside it, so its peak is that of
the photo alone (a 24 MP photo stays under 1 GB). Small photos in flight add at most three
photos' arrays (and their codecs' buffers) to the enhancement's working set.

``RAVE_OVERLAP=0`` turns overlapping off (one photo after another, as before).

Results are reported in input order whatever the order the threads finish in: a photo's
exception is raised where that photo is reported, and what its job prints through
:func:`in_order` is held back until then, so every photo's lines come in input order.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

__all__ = [
    "OVERLAP_MAX_BYTES",
    "BatchStopped",
    "end_turn",
    "in_order",
    "overlapped",
    "photo_bytes",
    "wait_for_turn",
]

OVERLAP_MAX_BYTES = 48 * 2**20
_MAX_IN_FLIGHT = 3  # one decoding, one enhancing, one encoding

Job = TypeVar("Job")


class BatchStopped(Exception):
    """Raised in a photo's job when the batch stopped (Ctrl-C, a bug, a full disk) before
    the photo reached the network: nothing of it is written."""


class _Turns:
    """The network's turns, given in input order; a ticket finishes once (used or not)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._finished: set[int] = set()
        self._serving = 0
        self._stopped = False

    def wait(self, ticket: int) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._serving == ticket or self._stopped)
            if self._stopped:
                raise BatchStopped("the batch stopped before this photo's turn")

    def stop(self) -> None:
        """No more turns: photos that have not reached the network give up."""
        with self._condition:
            self._stopped = True
            self._condition.notify_all()

    def finish(self, ticket: int) -> None:
        with self._condition:
            self._finished.add(ticket)
            while self._serving in self._finished:
                self._finished.discard(self._serving)
                self._serving += 1
            self._condition.notify_all()


_local = threading.local()  # .turns, .ticket and .held of the job running in this thread


def in_order(action: Callable[[], None]) -> None:
    """Run ``action`` (printing a line) now, or, in a job of :func:`overlapped`, when that
    job is reported, so that lines keep the input order."""
    held: list[Callable[[], None]] | None = getattr(_local, "held", None)
    if held is None:
        action()
    else:
        held.append(action)


def wait_for_turn() -> None:
    """Block until this photo may use the network (no-op outside :func:`overlapped`)."""
    turns: _Turns | None = getattr(_local, "turns", None)
    if turns is not None:
        turns.wait(_local.ticket)


def end_turn() -> None:
    """Let the next photo use the network (no-op outside :func:`overlapped`)."""
    turns: _Turns | None = getattr(_local, "turns", None)
    if turns is not None:
        _local.turns = None  # finished once, whatever happens next in this job
        turns.finish(_local.ticket)


def _run_here(run: Callable[[Job], None], job: Job) -> Future[None]:
    """``run(job)`` in the calling thread, as a done future (Ctrl-C still propagates)."""
    future: Future[None] = Future()
    try:
        run(job)
    except Exception as error:  # that photo's error, reported where its result is read
        future.set_exception(error)
    else:
        future.set_result(None)
    return future


def photo_bytes(path: Path) -> int | None:
    """Bytes of a photo's decoded pixels from its header, or ``None`` when unknown."""
    from PIL import Image

    from rave.io.library_messages import captured_messages

    if not path.is_file():
        return None  # a FIFO would block Image.open; the job's reader refuses it in one line
    try:
        # Only the size is wanted here: the job's own reader reports what is wrong with the
        # file. What Pillow warns or logs on open (corrupt EXIF, absurd TIFF tags) is caught
        # and dropped, never printed raw on the terminal.
        with captured_messages(), Image.open(path) as image:
            width, height = image.size
            bands = len(image.getbands())
            depth = 2 if image.mode.startswith("I;16") or image.mode in ("I", "F") else 1
    except Exception:  # any reader error: the job itself reports it
        return None
    return width * height * bands * depth


def overlapped(
    jobs: Iterable[Job],
    run: Callable[[Job], None],
    size_of: Callable[[Job], int | None],
    *,
    threads: int | None = None,
) -> Generator[Future[None], None, None]:
    """Run ``run(job)`` for every job, overlapping small photos, in input order.

    Args:
        jobs: the photos' jobs, in the order results are reported.
        run: reads, enhances and writes one photo; it calls :func:`wait_for_turn` before
            using the network and :func:`end_turn` after.
        size_of: bytes of a job's decoded pixels (``None``: unknown, treated as large).
        threads: torch intra-op threads of the workers (default: the caller's).

    Yields:
        one future per job, in input order, once the job is done (and its held lines
        printed); ``future.result()`` returns, or raises what ``run`` raised for that job.
    """
    import torch

    threads = threads or torch.get_num_threads()
    allowed = os.environ.get("RAVE_OVERLAP", "1").strip() != "0"
    turns = _Turns()
    pending: deque[tuple[Future[None], bool, list[Callable[[], None]]]] = deque()

    def work(job: Job, ticket: int, held: list[Callable[[], None]]) -> None:
        # OpenMP thread counts are per thread: give workers the caller's.
        torch.set_num_threads(threads)
        _local.turns, _local.ticket, _local.held = turns, ticket, held
        try:
            run(job)
        finally:
            end_turn()  # a job that failed before or during its turn frees it
            _local.held = None

    def report() -> Future[None]:
        future, _, held = pending.popleft()
        future.exception()  # wait for the job
        for action in held:
            action()
        return future

    pool = ThreadPoolExecutor(_MAX_IN_FLIGHT, thread_name_prefix="rave-photo")
    try:
        for ticket, job in enumerate(jobs):
            size = size_of(job)
            small = allowed and size is not None and size <= OVERLAP_MAX_BYTES
            while pending and not (
                small and len(pending) < _MAX_IN_FLIGHT and all(s for _, s, _ in pending)
            ):
                yield report()
            if not small:
                # A large photo runs alone and in this thread: in a worker thread its tiles
                # would come from another glibc arena and another OpenMP team (measured: 24 MP
                # peak RSS 1094 MB in a worker, 1080 MB here; 1063 MB before overlapping).
                yield _run_here(run, job)
                turns.finish(ticket)
                continue
            held: list[Callable[[], None]] = []
            pending.append((pool.submit(work, job, ticket, held), small, held))
        while pending:
            yield report()
    finally:
        # Closed early (Ctrl-C, a bug, a full disk): photos not yet at the network give up,
        # those past it finish their (atomic) write, and none runs on after the caller has
        # reported: close() returns only when every worker is done.
        turns.stop()
        pool.shutdown(wait=True, cancel_futures=True)
