"""Telling a file's failure from a bug in rave, and saying either in one line.

Every batch (``rave enhance``, ``rave evaluate``, ``rave residual``, training data) treats
whatever goes wrong with one file as that file's error and carries on; only a bug in rave
itself stops it. :func:`is_rave_bug` draws that line, :func:`describe_failure` words it.
"""

from __future__ import annotations

import errno
from pathlib import Path

from rave.io.printable import printable

__all__ = ["describe_failure", "is_rave_bug", "os_reason"]

_RAVE_ROOT = Path(__file__).resolve().parent

# Exceptions that mean the code is wrong rather than the file: when rave's own code raises
# one of these, it is a bug (a library raising them on a malformed file is the file's fault,
# e.g. Pillow's TypeError "Missing dimensions" for a TIFF page without ImageWidth).
_PROGRAMMING_ERRORS = (
    AssertionError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    NameError,
    TypeError,
)


def is_rave_bug(err: BaseException) -> bool:
    """Whether ``err`` is a programming error raised from rave's own source files."""
    if not isinstance(err, _PROGRAMMING_ERRORS):
        return False
    frame = err.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    try:
        Path(frame.tb_frame.f_code.co_filename).resolve().relative_to(_RAVE_ROOT)
    except ValueError:
        return False
    return True


def os_reason(err: OSError) -> str:
    """An OSError's reason in the words of rave's error lines ("permission denied", "no such
    file or directory"), without its file name, which may be rave's own temporary file."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (err.strerror or str(err)).lower()


def describe_failure(err: BaseException, limit: int = 300) -> str:
    """One escaped line for a file's failure: the message, or the type when it has none."""
    text = " ".join(str(err).split())
    if not text or isinstance(err, (*_PROGRAMMING_ERRORS, MemoryError)):
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return printable(text[:limit])
