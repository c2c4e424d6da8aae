"""Capture what image libraries print or warn, so that rave reports it in its own words.

libjpeg (inside OpenCV) prints "Corrupt JPEG data: premature end of data segment" to the
process's standard error, libpng "libpng warning: ...", OpenCV "[ WARN:0@...]", and Pillow
raises Python warnings. None of those may reach the user's terminal raw (they interleave
with the progress bar and name no file); :func:`captured_messages` collects them as lines
that the reader turns into a note or an error naming the photo.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import TextIO

__all__ = ["TerminalStream", "captured_messages", "is_premature_end", "outside_captures"]

_lock = threading.RLock()
_MAX_LINES = 20


def is_premature_end(message: str) -> bool:
    """Whether a decoder message says the data ended before the picture did."""
    text = message.lower()
    return "premature end" in text or "truncated" in text


@contextlib.contextmanager
def captured_messages(*, native: bool = True) -> Iterator[list[str]]:
    """Collect Python warnings and (``native=True``) C-level stderr output into a list.

    The list is filled when the block ends: one stripped line per message, at most 20,
    duplicates dropped. The process's file descriptor 2 is redirected to a temporary file
    for the duration, so this is serialised by a lock; an inner capture takes what is
    printed inside it, the outer one the rest.

    Yields:
        The list of messages (empty until the block exits).
    """
    messages: list[str] = []
    with _lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = None
        sink = None
        if native:
            try:
                sink = tempfile.TemporaryFile()  # noqa: SIM115 (closed in finally below)
                saved = os.dup(2)
                os.dup2(sink.fileno(), 2)
            except OSError:  # no fd 2 to redirect (e.g. a daemon): capture warnings only
                if sink is not None:
                    sink.close()
                sink = saved = None
        try:
            yield messages
        finally:
            native_text = ""
            if saved is not None and sink is not None:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                native_text = sink.read(64 * 1024).decode("utf-8", "replace")
                sink.close()
            lines = [str(warning.message) for warning in caught]
            lines += native_text.splitlines()
            for line in lines:
                line = " ".join(line.split())
                if line and line not in messages and len(messages) < _MAX_LINES:
                    messages.append(line)


@contextlib.contextmanager
def outside_captures() -> Iterator[None]:
    """Hold off captures while the block writes to the terminal.

    What another thread prints while :func:`captured_messages` has fd 2 redirected lands in
    that capture: lost from the terminal, and read as the decoder's own message (a log line
    naming "truncated" turned a good photo into a corrupt one). A write done inside this
    block waits until any capture in progress ends (one decode or encode) and keeps new
    ones from starting until it is done. Captures in this thread are not held off: a block
    inside a capture still writes into it.
    """
    with _lock:
        yield


class TerminalStream:
    """A text stream (default ``sys.stderr``) whose writes wait while fd 2 is captured.

    :func:`captured_messages` redirects the process's file descriptor 2 while a decoder
    runs; in a batch whose photos overlap (rave.inference.pipeline) another thread may print
    a progress bar or an error line meanwhile, which would land in the capture (lost, or
    misread as a decoder message). Writes through this stream take the capture's lock, so
    they reach the terminal after the capture ends.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def write(self, text: str) -> int:
        with _lock:
            written = self.stream.write(text)
            self.stream.flush()
        return written

    def flush(self) -> None:
        with _lock:
            self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()
