"""What a batch command does when one file fails, when it is interrupted, and when rave errs.

The rule for every command that works through files (``rave enhance``, ``rave evaluate``,
``rave residual``, training data loading): whatever goes wrong with one file is that
file's error, reported on one line naming it, and the batch goes on. Only the user
(Ctrl-C, SIGTERM) and a bug in rave itself stop a batch; a bug is reported as such, with
its traceback behind ``--debug``.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from rave.errors import describe_failure, is_rave_bug

__all__ = [
    "STOP_BATCH_ERRNOS",
    "Interrupted",
    "bug_report",
    "describe_failure",
    "interrupt_on_sigterm",
    "is_rave_bug",
]

STOP_BATCH_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""Write errors after which every later photo would fail the same way."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; ``exit_status`` is 128 + the signal number (130, 143)."""

    def __init__(self, signal_number: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.exit_status = 128 + signal_number


def bug_report(err: BaseException) -> str:
    """One line reporting a bug in rave (the traceback is printed only with ``--debug``)."""
    return (
        f"internal error (a bug in rave, please report it): {describe_failure(err)}; "
        "--debug shows the traceback"
    )


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`Interrupted` (like Ctrl-C) while the block runs.

    Temporary files are removed and a summary printed the same way as for Ctrl-C. Only
    the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signal_number: int, frame: FrameType | None) -> None:
        raise Interrupted(signal_number)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
