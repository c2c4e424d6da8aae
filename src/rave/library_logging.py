"""What libraries log on the root logger, routed into rave's own logging.

OpenCLIP reports through ``logging.info/warning/error``, i.e. on the root logger, and the
module-level ``logging.error()`` installs ``basicConfig``'s handler when the root logger
has none: raw ``ERROR:root:`` lines next to rave's one-line errors. The encoders wrap
their calls into OpenCLIP with :func:`route_library_logging`, so neither the command line
nor a Python caller sees them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["LIBRARY_LOGGER", "route_library_logging"]

# What libraries log on the root logger itself goes here, at DEBUG (route_library_logging).
LIBRARY_LOGGER = "rave.libraries"


class _RootRecordsToRave(logging.Filter):
    """Takes the records created on the root logger itself and logs them again at DEBUG.

    OpenCLIP reports through ``logging.info/warning/error``, i.e. on the root logger: its
    "Failed to download weights" is followed by the exception that rave words in one line,
    and "Model initialized randomly" answers a request rave made on purpose. A filter on
    a logger sees only the records created there, so rave's own loggers are untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        logging.getLogger(LIBRARY_LOGGER).debug("%s", record.getMessage())
        return False


class _AsIfNoHandler(logging.Handler):
    """A root handler that does what logging does when there is none: it hands a record to
    ``logging.lastResort`` when no other handler on the record's way takes it.

    The module-level ``logging.error()`` installs ``basicConfig``'s handler (the raw
    "ERROR:root:" lines) whenever the root logger has no handler; this one prevents that.
    """

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return False
            logger = logger.parent if logger.propagate else None
        last = logging.lastResort
        if last is not None and record.levelno >= last.level:
            last.handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() emits
        pass


@contextlib.contextmanager
def route_library_logging() -> Iterator[None]:
    """Within the block, what libraries log on the root logger goes to rave's logging.

    Records created on the root logger (OpenCLIP's) are logged again on
    ``rave.libraries`` at DEBUG; the errors among them reach the user as the exception
    that follows, in rave's words. Everything else is logged as before.
    """
    root = logging.getLogger()
    route = _RootRecordsToRave()
    stand_in = _AsIfNoHandler() if not root.handlers else None
    root.addFilter(route)
    if stand_in is not None:
        root.addHandler(stand_in)
    try:
        yield
    finally:
        root.removeFilter(route)
        if stand_in is not None:
            root.removeHandler(stand_in)
