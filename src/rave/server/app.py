"""``rave serve``: a one-page web app over the same engine as ``rave enhance``.

The standard library's HTTP server, hardened here, rather than an ASGI stack: the page
talks to four endpoints of one local process, and uvicorn/starlette would add two
dependencies while still leaving the limits that matter here (bytes queued before the
one-photo lock, a time budget per photo, stopping the engine on Ctrl-C) to this code.
Each case below is tested over real sockets (``tests/test_server_http.py``):

- every request has a deadline (headers, then the body at a minimum rate, then the
  response), enforced by a watchdog thread that shuts the socket down, so a client that
  trickles or stops never holds a thread for longer; the time a request waits for the
  engine (its photo, or a download behind another photo) is not the client's: it is bounded
  by the time limit per photo instead, and a client that leaves gives its place up;
- at most ``max_waiting`` downloads, zips and zoomed views wait for the engine at once
  (each holds a connection); one more gets a 503 at once;
- at most ``max_connections`` connections are served at once (one thread each); beyond
  that, the connection that has spent longest (over a second) sending its request is
  closed to make room, or else the newcomer gets a 503 at once;
- uploads are streamed to a private temporary folder, never held in memory; their declared
  sizes in flight are capped (``max_queued_bytes``, 503 beyond); an upload over the limit
  gets its 413 before its body is read;
- request framing is strict: no ``Content-Length`` -> 411, chunked -> 411/400, a malformed
  or repeated length -> 400, each with the connection closed; a body that no handler wants
  is read and discarded (small) or the connection closed (large), so it is never parsed as
  a second request;
- one log line per request, also for a client that leaves mid-request or is cut off (why,
  and how many of its body's bytes came);
- header values are checked (no control characters: no response splitting); notes travel
  in JSON bodies; download names use RFC 6266 ``filename*`` for non-ASCII names.

Endpoints: ``POST /enhance?name=N`` (raw file bytes) runs the network once and answers
JSON ``{id, name, format, width, height, notes, seconds}``; ``GET /result/ID/view`` the
preview (:func:`rave.server.store.encode_view`; with ``left, top, right, bottom, max`` a
region, e.g. at 100%); ``GET /result/ID/download?strength=S`` the full-resolution file at
strength S (a plain decimal number from 0 to 100, as ``--strength``; default 1);
``GET /zip?items=ID:S,ID:S`` all of them (at most as many items as results are kept);
``DELETE /result/ID`` forgets a result (the page's *Remove*: its files go at once). A
download or zip asked with ``job=TOKEN`` (as ``X-Rave-Job`` below) answers its 200 with the
cookie ``rave-job-TOKEN=started``, so that the page knows when the file has started (a
download in a frame gets no load event). The
upload is the file's bytes as the body (a multipart form gets 415). An upload may name
itself with an ``X-Rave-Job`` header (16 to 64 of ``A-Za-z0-9_-``, random: the page sends
32 hex digits); while that request lasts, ``GET /progress/TOKEN`` answers JSON
``{done, total}``, the tiles of its photo computed so far (``0, 0`` before the engine
starts), then its last count until as many later uploads as ``max_connections`` have
ended, then 404, as for a token never sent; these answers are not logged (the page asks
each half-second). The page computes
``I / L**S`` itself, so moving a strength slider sends nothing. ``HEAD`` answers every
``GET`` route (the same status and headers, no body) without rendering: a download, zip or
zoomed region is answered from its checks alone, a download or zip without a Content-Length
(known only once rendered); other methods get 405 with ``Allow``.
Every error, the HTTP parser's own included (414, 431, 505, 501, HTTP/0.9), is one line of
plain text; a write that the server's full disk refuses (an upload, a light map, a download,
a zip) is a 507 naming the photo.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import select
import signal
import socket
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
from torch import nn

from rave.cli._options import MAX_STRENGTH  # rave enhance --strength's cap, for URLs too
from rave.io.formats import IMAGE_SUFFIXES
from rave.io.library_messages import outside_captures
from rave.io.printable import printable
from rave.server.page import PAGE
from rave.server.store import Result, ResultStore, encode_view, view_length
from rave.session import Enhancer, output_dtype

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "MAX_STRENGTH", "EnhanceServer", "Limits", "make_server"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 100 * 2**20
SLIDER_MAX_STRENGTH = 2.0  # the page's sliders end here, or at a larger --strength
DEFAULT_MAX_PIXELS = 50_000_000  # lower than rave enhance's: one slow photo blocks the queue
# Every format rave.io.write_photo writes (a HEIC upload is downloaded as HEIC where libheif
# can encode it); a format missing here would be labelled wrongly, and with nosniff a client
# trusts the label.
_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "heic": "image/heic",
}
_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")
_LENGTH = re.compile(r"[0-9]{1,15}")
_RESULT_PATH = re.compile(r"/result/([A-Za-z0-9_-]{1,64})/(view|download)")
_RESULT = re.compile(r"/result/([A-Za-z0-9_-]{1,64})")
_JOB = re.compile(r"[A-Za-z0-9_-]{16,64}")  # an upload's X-Rave-Job token
_PROGRESS = re.compile(r"/progress/([A-Za-z0-9_-]{16,64})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SMALL_BODY_BYTES = 64 * 2**10  # unwanted bodies up to this size are read and dropped
_CHUNK = 2**20
# A decimal number as a person or the page writes it; float() would also take "1_0", " 1",
# "nan", "inf" and "infinity".
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_PIXELS = re.compile(r"[0-9]{1,9}")


@dataclass
class Limits:
    """What one client may cost the server; the defaults suit a machine on a LAN.

    Attributes:
        max_upload_bytes: larger uploads get a 413 before their body is read.
        max_pixels: larger images get a 400 from their header (decompression bombs).
        max_connections: connections served at once; beyond, the slowest sender is
            dropped for the newcomer, or the newcomer gets a 503.
        max_queued_bytes: total declared size of the uploads being received or waiting for
            the one-photo lock; an upload that would exceed it gets a 503.
        max_waiting: downloads, zips and zoomed views waiting for the engine (another photo
            is being computed) at once; one more gets a 503 at once rather than holding a
            connection for up to ``time_limit`` (uploads are bounded by max_queued_bytes).
        header_seconds: time to send a request's headers (and idle time on keep-alive).
        min_upload_rate: bytes per second an upload must average (after header_seconds).
        time_limit: seconds one photo may compute (and wait for the lock) before a 503.
        results_bytes: disk kept for results (upload + light map), oldest forgotten first.
    """

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_connections: int = 32
    max_queued_bytes: int = 2 * DEFAULT_MAX_UPLOAD_BYTES
    max_waiting: int = 8
    header_seconds: float = 10.0
    min_upload_rate: float = 100e3
    time_limit: float = 600.0
    results_bytes: int = 2 * 2**30


# File systems cap a name at 255 bytes (ext4, APFS) or UTF-16 units (NTFS): a longer one
# cannot be saved or unzipped. The stem keeps this many UTF-8 bytes, leaving room for
# "_enhanced.heic" and the zip's " (N)" for repeated names.
_STEM_BYTES = 200


def _download_names(name: str, fmt: str) -> tuple[str, str]:
    """(ASCII fallback, Unicode) download names for an upload name (untrusted)."""
    stem = Path(name.replace("\\", "/")).stem
    stem = _CONTROL.sub("", stem).strip(" .")[:120]
    # Whole characters only: a cut inside one would leave half a character ("ignore").
    stem = stem.encode()[:_STEM_BYTES].decode("utf-8", "ignore").strip(" .") or "photo"
    ascii_stem = _SAFE_STEM.sub("_", stem).strip("._")[:100] or "photo"
    return f"{ascii_stem}_enhanced.{fmt}", f"{stem}_enhanced.{fmt}"


def _disposition(name: str, fmt: str) -> str:
    fallback, full = _download_names(name, fmt)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(full, safe='')}"


# A full disk (or quota): the server's, not the photo's or the client's fault.
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_LOW_SPACE_BYTES = 2**20


def _disk_full(err: OSError, folder: Path) -> bool:
    """Whether ``err`` says that the results' disk is full.

    numpy reports a short write (np.save on a full disk) as an OSError without an errno
    ("19200 requested and 7136 written"): for those the free space decides.
    """
    if err.errno in _DISK_FULL_ERRNOS:
        return True
    if err.errno is not None:
        return False
    try:
        status = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False
    return status.f_bavail * status.f_frsize < _LOW_SPACE_BYTES


def _disk_full_refusal(name: str) -> _Refused:
    """507 for a write that the server's full disk refused, naming the photo."""
    prefix = f"{name}: " if name else ""
    return _Refused(
        HTTPStatus.INSUFFICIENT_STORAGE,
        printable(
            f"{prefix}the server's disk is full: remove photos from the page, or free space "
            f"in {tempfile.gettempdir()} on the server, then try again"
        ),
        close=True,
    )


class _Closed(Exception):
    """The client's connection ended or was ended (deadline, shutdown) mid-request."""


class _Handler(BaseHTTPRequestHandler):
    # Only EnhanceServer constructs this handler; typeshed declares `server` as a mutable
    # BaseServer attribute, so pyright flags any narrowing of it.
    server: EnhanceServer  # pyright: ignore[reportIncompatibleVariableOverride]
    protocol_version = "HTTP/1.1"
    server_version = "rave"

    def version_string(self) -> str:
        return self.server_version  # no Python version on the wire

    # -- framing ---------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        self._responded = False
        self._logged = False
        self._unread = 0
        self._started = time.monotonic()
        self._what = ""  # the photo and its details, for the log line
        self._why: list[str] = []  # why it was refused or cut short, for the log line
        self._name = ""  # the photo's name, which refusals' messages start with
        self.cut_off = ""  # set by the server when it ends this connection (why)
        self._cut_short = False
        self._quiet = False  # a progress answer: not logged (the page asks twice a second)
        self._expect_continue = False  # the client waits for "100 Continue" to send its body
        self.raw_requestline = b""
        self.path = ""  # not the previous request's, if this one has no parsable line
        self.server.watch(self, self.server.limits.header_seconds)
        try:
            super().handle_one_request()
        except (OSError, _Closed) as err:
            self._closed(err)
        finally:
            self.server.watch(self, None)
            if self.raw_requestline.strip() and not self._logged:
                # One line per request, whatever ended it (README).
                self._log_line("closed", "")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request is written by _log_line, with the photo's details

    def log_error(self, format: str, *args: Any) -> None:
        with outside_captures():
            log.info("%s", printable(format % args))

    def parse_request(self) -> bool:
        words = self.raw_requestline.decode("latin-1").split()
        if len(words) == 2:
            # HTTP/0.9 ("GET /"): its answers have no status line, so a client could not
            # tell an error from a page; and the parser would wait for headers it never sends.
            self.command, self.path = words
            self.request_version = "HTTP/1.0"
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not served: use HTTP/1.1")
            return False
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # "100 Continue" invites the body: it is sent when the body is read (_read_exactly),
        # after every check that needs none, so that an upload over the limit gets its 413
        # (or 404, 411, 503) instead of an invitation to send it first.
        self._expect_continue = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Errors found by the standard library's parser (bad request line, unknown method,
        # lines too long, HTTP/2), in the server's one line of plain text rather than the
        # library's HTML page; the connection is closed, as whatever followed is unread.
        if self.request_version == "HTTP/0.9":
            # The parser's default for an unparsable line; HTTP/0.9 replies have no status
            # line, so the client could not tell an error from a page.
            self.request_version = "HTTP/1.0"
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = f"error {code}"
        self._send_refusal(_Refused(code, text, close=True))

    def _framing(self) -> int | None:
        """The body's length (None without one); raises _Refused on bad framing.

        Each refusal here closes the connection: where the body ends is unknown, so
        whatever follows must not be read as the next request (request smuggling).
        """
        if self.headers.get_all("Transfer-Encoding"):
            status = HTTPStatus.LENGTH_REQUIRED if self.command == "POST" else 400
            raise _Refused(
                status, "chunked bodies are not accepted: send a Content-Length", close=True
            )
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return None
        if len(lengths) > 1:
            raise _Refused(HTTPStatus.BAD_REQUEST, "repeated Content-Length", close=True)
        if not _LENGTH.fullmatch(lengths[0].strip()):
            raise _Refused(HTTPStatus.BAD_REQUEST, "malformed Content-Length", close=True)
        self._unread = int(lengths[0].strip())
        return self._unread

    def _dispatch(self, route: Callable[[], None]) -> None:
        try:
            self._framing()
            # The headers are in: their deadline ends here. A body is read, and an answer
            # sent, under deadlines of their own; between them a request may wait for the
            # engine (a download or zoom while another photo is enhanced, a zip of many),
            # bounded by the time limit per photo, not cut off as a slow client.
            self.server.watch(self, None)
            route()
        except _Refused as refusal:
            self._send_refusal(refusal)
        except (_Closed, OSError) as err:
            if isinstance(err, OSError) and _disk_full(err, self.server.store.root):
                # Writing the upload or a zip: without this the client saw its connection
                # closed without a word, as if the server had crashed.
                self._send_refusal(_disk_full_refusal(self._name))
            else:  # the client went away, or its deadline passed
                self._closed(err)
        except Exception as err:  # a bug in rave: one 500, and the server goes on
            with outside_captures():
                log.exception("rave serve: internal error")
            if not self._responded:
                reason = f"internal error ({type(err).__name__}: {err})"
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                self._send_refusal(_Refused(status, printable(reason), close=True))
            self.close_connection = True

    def _send_refusal(self, refusal: _Refused) -> None:
        try:
            self._error(refusal.status, refusal.message, close=refusal.close, **refusal.extra)
        except (_Closed, OSError) as err:  # gone before its answer: nobody to tell, one line
            self._closed(err)

    def _closed(self, err: _Closed | OSError) -> None:
        """The connection ended mid-request: close it and log the request's one line."""
        self.close_connection = True
        if isinstance(err, _Closed):
            self._note(str(err))
        elif not self._cut_short:  # else the line says already why the answer did not go out
            self._note(f"connection lost ({err.strerror or type(err).__name__})")
        if not self._logged and self.raw_requestline.strip():
            self._log_line("closed", "")

    def do_GET(self) -> None:
        self._dispatch(self._route_get)

    def do_HEAD(self) -> None:
        self._dispatch(self._route_get)  # no body; nothing rendered (_reply_head)

    def do_POST(self) -> None:
        self._dispatch(self._route_post)

    def do_DELETE(self) -> None:
        self._dispatch(self._route_delete)

    def do_OPTIONS(self) -> None:
        self._dispatch(self._not_allowed)

    do_PUT = do_PATCH = do_TRACE = do_CONNECT = do_OPTIONS

    def _not_allowed(self) -> None:
        path = urlsplit(self.path).path
        if path == "/enhance":
            allow = "POST"
        elif _RESULT.fullmatch(path):
            allow = "DELETE"
        else:
            allow = "GET, HEAD"
        raise _Refused(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{self.command} is not served: {path} answers {allow}",
            headers={"Allow": allow},
        )

    # -- replies ---------------------------------------------------------------------------

    def _prepare_reply(self, close: bool) -> bool:
        """Deal with an unread request body; returns whether the connection must close."""
        if 0 < self._unread <= _SMALL_BODY_BYTES and not close and not self._expect_continue:
            try:
                self._read_exactly(self._unread, None)  # small: drop it, keep the connection
            except _Closed as err:
                # Cut short (the client closed, or its deadline passed): the answer is still
                # sent if the socket takes it (a half-closed client reads it), then close.
                self._note(str(err))
                return True
        return close or self._unread > 0

    def _send_head(self, status: int, headers: dict[str, str], close: bool) -> None:
        self.send_response(status)
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", **headers}
        if close:
            headers["Connection"] = "close"
            self.close_connection = True
        for key, value in headers.items():
            if _CONTROL.search(value) or len(value) > 4096 or not value.isascii():
                raise ValueError(f"refusing to send header {key}: {value[:60]!r}")
            self.send_header(key, value)
        self.end_headers()
        self._responded = True

    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        close = self._prepare_reply(close)
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        self.server.watch(self, self.server.limits.header_seconds + self._send_seconds(len(body)))
        self._send_head(status, {**all_headers, **(headers or {})}, close)
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        self._log_line(status, f"{len(body) / 1e6:.1f} MB")
        if close:
            self._linger()

    def _reply_file(self, path: Path, content_type: str, headers: dict[str, str]) -> None:
        size = path.stat().st_size
        close = self._prepare_reply(False)
        self.server.watch(self, self.server.limits.header_seconds + self._send_seconds(size))
        all_headers = {"Content-Type": content_type, "Content-Length": str(size), **headers}
        self._send_head(HTTPStatus.OK, all_headers, close)
        with path.open("rb") as source:
            while self.command != "HEAD" and (chunk := source.read(_CHUNK)):
                self.wfile.write(chunk)
        self.wfile.flush()
        self._log_line(HTTPStatus.OK, f"{size / 1e6:.1f} MB")

    def _reply_head(self, content_type: str, headers: dict[str, str]) -> None:
        """HEAD on a rendered answer (a download, a zip, a zoomed region): the GET's headers,
        without rendering it (seconds to minutes of the one engine, for headers only).

        RFC 9110 lets a HEAD answer omit the header fields whose values are determined only
        while generating the content (9.3.2), and forbids a Content-Length other than the
        GET's (8.6): a download's or zip's length is known only once rendered (an encoded
        photo), so none is sent; a zoomed region's follows from its size and comes in
        ``headers``. The status is what can be known now (the result is kept, the query is
        valid); what only rendering finds (a busy server, the time limit, a full disk) only
        a GET says.
        """
        close = self._prepare_reply(False)
        self.server.watch(self, self.server.limits.header_seconds)
        self._send_head(HTTPStatus.OK, {"Content-Type": content_type, **headers}, close)
        self.wfile.flush()
        self._log_line(HTTPStatus.OK, "headers only")
        if close:
            self._linger()

    def _json(self, payload: dict[str, Any]) -> None:
        self._reply(HTTPStatus.OK, json.dumps(payload).encode(), "application/json")

    def _error(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._responded:
            self.close_connection = True
            return
        # The log line names the photo already; the reason follows it.
        self._note(message.removeprefix(f"{self._name}: ") if self._name else message)
        body = (printable(message) + "\n").encode()
        headers = dict(headers or {})
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            headers["Retry-After"] = "5"
        self._reply(status, body, "text/plain; charset=utf-8", close=close, headers=headers)

    def _note(self, reason: str) -> None:
        """Add ``reason`` to why this request's log line says it failed (once)."""
        reason = printable(reason)
        if reason and reason not in self._why:
            self._why.append(reason)

    def _linger(self) -> None:
        """After a reply that leaves a body unread: stop sending, drain briefly, close.

        Closing a socket with unread data makes the kernel send a reset, which can destroy
        the reply before the client reads it (a broken pipe instead of the 413); reading
        and dropping for a bounded time lets the client see the answer.
        """
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2.0
            left = self._unread or 64 * 2**20
            while left > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _send_seconds(self, size: int) -> float:
        return size / self.server.limits.min_upload_rate

    def _log_line(self, status: int | str, size: str) -> None:
        self._logged = True
        if self._quiet:
            return
        elapsed = time.monotonic() - self._started
        path = printable(urlsplit(self.path).path) if self.path else "-"
        what = " ".join([self._what, "; ".join(self._why)]).strip()
        what = f" {what}" if what else ""
        self.server.log(
            f"{self.client_address[0]} {printable(getattr(self, 'command', None) or '-')} "
            f"{path}{what} "
            f"-> {status if isinstance(status, str) else int(status)} {size} {elapsed:.2f} s"
        )

    # -- bodies ----------------------------------------------------------------------------

    def _read_exactly(self, length: int, sink: Any) -> None:
        """Read ``length`` body bytes into ``sink`` (a file) or drop them, within a deadline."""
        limits = self.server.limits
        self.server.watch(self, limits.header_seconds + length / limits.min_upload_rate)
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
        left = length
        while left > 0:
            try:
                chunk = self.rfile.read(min(_CHUNK, left))
            except OSError:  # a reset: the client is gone all the same
                chunk = b""
            if not chunk:
                self._unread = left
                self._cut_short = True
                # The server shut the socket down (deadline, shutdown) or the client left.
                why = self.cut_off or "the client closed the connection"
                raise _Closed(f"{why} after {length - left} of {length} bytes")
            left -= len(chunk)
            if sink is not None:
                sink.write(chunk)
        self._unread = 0
        self.server.watch(self, None)

    def _client_gone(self) -> bool:
        """Whether the client has closed its connection (it has sent its whole request).

        The page's *Remove* (or a closed tab) aborts the request; reading EOF from the
        socket without consuming anything tells it, so the engine can stop within a tile.
        """
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):  # reset, or closed by the watchdog or the server
            return True

    # -- routes ----------------------------------------------------------------------------

    def _route_get(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path == "/":
            strength = self.server.strength
            page = (
                PAGE.replace("__RAVE_STRENGTH__", f"{strength:g}")
                .replace("__RAVE_STRENGTH_MAX__", f"{max(SLIDER_MAX_STRENGTH, strength):g}")
                .replace("__RAVE_MAX_UPLOAD__", str(self.server.limits.max_upload_bytes))
                .replace("__RAVE_SUFFIXES__", ",".join(sorted(IMAGE_SUFFIXES)))
            )
            self._reply(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif url.path == "/health":
            self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif match := _PROGRESS.fullmatch(url.path):
            progress = self.server.progress(match.group(1))
            if progress is None:
                raise _Refused(HTTPStatus.NOT_FOUND, "no upload in progress with this token")
            self._quiet = True
            self._json({"done": progress[0], "total": progress[1]})
        elif url.path == "/zip":
            self._zip(query)
        elif match := _RESULT_PATH.fullmatch(url.path):
            result = self.server.store.get(match.group(1))
            if result is None:
                raise _Refused(HTTPStatus.GONE, "this result is no longer kept: upload it again")
            self._name = result.name
            self._what = f'"{printable(result.name)}"'
            if match.group(2) == "view":
                self._view(result, query)
            else:
                # No strength: 1, the model's output; an empty one is refused (a page bug).
                self._download(result, _strength(query.get("strength", ["1"])[0]), query)
        else:
            raise _Refused(HTTPStatus.NOT_FOUND, f"no page {url.path}")

    def _route_delete(self) -> None:
        """``DELETE /result/ID``: the page's Remove; the upload and light map go at once."""
        match = _RESULT.fullmatch(urlsplit(self.path).path)
        if match is None:
            self._not_allowed()
            return
        result = self.server.store.forget(match.group(1))
        if result is None:
            raise _Refused(HTTPStatus.GONE, "this result is no longer kept")
        self._what = f'"{printable(result.name)}"'
        self._reply(HTTPStatus.OK, b"forgotten\n", "text/plain; charset=utf-8")

    def _route_post(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/enhance":
            raise _Refused(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}")
        name = parse_qs(url.query).get("name", ["photo"])[0][:255]
        self._name = name
        self._what = f'"{printable(name)}"'
        if self._unread == 0 and self.headers.get("Content-Length") is None:
            # A client that sends no length may still send a body: never read it as a request.
            raise _Refused(
                HTTPStatus.LENGTH_REQUIRED, "send the photo with a Content-Length", close=True
            )
        length = self._unread
        if length == 0:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"{name}: empty upload")
        if self.headers.get_content_maintype() == "multipart":
            # What an HTML form or curl -F sends: the photo inside a wrapper, which would
            # be refused as "not an image file". The page sends the file itself.
            raise _Refused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"{name}: send the photo's bytes as the request body, not a multipart form "
                "(curl --data-binary @photo.jpg)",
            )
        limits = self.server.limits
        if length > limits.max_upload_bytes:
            limit = limits.max_upload_bytes
            raise _Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{name}: {length:,} bytes is over the {limit:,}-byte "
                f"({limit / 2**20:.3g} MB) upload limit",
                close=True,
            )
        job = self.headers.get("X-Rave-Job")
        if job is not None and not _JOB.fullmatch(job):
            raise _Refused(
                HTTPStatus.BAD_REQUEST,
                f"{name}: X-Rave-Job must be 16 to 64 letters, digits, '-' or '_'",
                close=True,
            )
        with self.server.queued(length) as admitted, self.server.job(job) as progress:
            if not admitted:
                raise _Refused(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"{name}: the server is busy with other uploads; try again shortly",
                    close=True,
                )
            if progress is None:
                raise _Refused(
                    HTTPStatus.CONFLICT, f"{name}: its X-Rave-Job is another upload's", close=True
                )
            result_id, folder = self.server.store.new_folder()
            try:
                with (folder / "upload").open("wb") as sink:
                    try:
                        self._read_exactly(length, sink)
                    except _Closed as err:  # answered if the client still reads, then closed
                        raise _Refused(400, f"{name}: {err}", close=True) from None
                result = self.server.enhance_upload(
                    result_id, folder, name, self._client_gone, progress
                )
            except BaseException:
                self.server.store.discard(folder)
                raise
        self._what += f" {result.width}x{result.height} {result.format}"
        self._json(
            {
                "id": result.id,
                "name": result.name,
                "format": result.format,
                "width": result.width,
                "height": result.height,
                "notes": result.notes,
                "seconds": round(time.monotonic() - self._started, 3),
            }
        )

    def _view(self, result: Result, query: dict[str, list[str]]) -> None:
        if "left" not in query:
            self._reply(HTTPStatus.OK, result.view.read_bytes(), "application/octet-stream")
            return
        left, top, right, bottom = box = tuple(
            _pixels(query, key) for key in ("left", "top", "right", "bottom")
        )
        max_side = min(_pixels(query, "max", "1024"), 2048)
        if not (0 <= left < right <= result.width and 0 <= top < bottom <= result.height):
            raise _Refused(HTTPStatus.BAD_REQUEST, f"region {box} is outside the photo")
        max_side = max(16, max_side)
        if self.command == "HEAD":  # its length is known without rendering it
            length = view_length((left, top, right, bottom), max_side)
            self._reply_head("application/octet-stream", {"Content-Length": str(length)})
            return
        body = self.server.render_view(
            result, (left, top, right, bottom), max_side, self._client_gone, _Waiter(result.name)
        )
        self._reply(HTTPStatus.OK, body, "application/octet-stream")

    def _download(self, result: Result, strength: float, query: dict[str, list[str]]) -> None:
        headers = {
            "Content-Disposition": _disposition(result.name, result.format),
            **self._job_cookie(query),
        }
        self._what += f" strength {strength:g}"
        content_type = _CONTENT_TYPES.get(result.format, "application/octet-stream")
        if self.command == "HEAD":
            self._reply_head(content_type, headers)
            return
        target = self.server.render(result, strength, self._client_gone, _Waiter(result.name))
        try:
            self._reply_file(target, content_type, headers)
        finally:
            target.unlink(missing_ok=True)

    def _job_cookie(self, query: dict[str, list[str]]) -> dict[str, str]:
        """For a download or zip asked with ``job=TOKEN``: the cookie that tells the page its
        answer has started (a frame whose answer becomes a download gets no load event).

        Set with the 200's headers, i.e. once the file is rendered and about to be sent; the
        page removes it as soon as it sees it, and it expires in a minute otherwise.
        """
        job = query.get("job", [None])[0]
        if job is None:
            return {}
        if not _JOB.fullmatch(job):
            raise _Refused(
                HTTPStatus.BAD_REQUEST, "job must be 16 to 64 letters, digits, '-' or '_'"
            )
        return {"Set-Cookie": f"rave-job-{job}=started; Path=/; Max-Age=60; SameSite=Strict"}

    def _zip(self, query: dict[str, list[str]]) -> None:
        items = query.get("items", [""])[0]
        name = query.get("name", ["rave-enhanced"])[0]
        wanted: list[tuple[Result, float]] = []
        for item in filter(None, items.split(",")):
            result_id, colon, strength = item.partition(":")
            result = self.server.store.get(result_id)
            if result is None:
                raise _Refused(HTTPStatus.GONE, "a result is no longer kept: upload it again")
            wanted.append((result, _strength(strength if colon else "1")))
        if not wanted:
            raise _Refused(HTTPStatus.BAD_REQUEST, "no items to download")
        kept = len(self.server.store)
        if len(wanted) > kept:
            # Each item is a full-resolution render: a list repeating one photo would keep
            # the engine busy for as long as the URL is long.
            raise _Refused(
                HTTPStatus.BAD_REQUEST,
                f"{len(wanted)} items, but the server keeps {kept} results: "
                "at most one item per kept photo",
            )
        self._what = f"{len(wanted)} photos"
        stem = _SAFE_STEM.sub("_", name)[:60] or "rave-enhanced"
        headers = {
            "Content-Disposition": f'attachment; filename="{stem}.zip"',
            **self._job_cookie(query),
        }
        if self.command == "HEAD":
            self._reply_head("application/zip", headers)
            return
        waiter = _Waiter("")  # one place for the whole zip; the page names its photos
        archive = self.server.store.new_folder()[1] / "all.zip"
        try:
            used: set[str] = set()
            # Stored, not deflated: the photos are compressed already.
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
                for result, strength in wanted:
                    target = self.server.render(result, strength, self._client_gone, waiter)
                    arcname = _download_names(result.name, result.format)[1]
                    stem, dot, ext = arcname.rpartition(".")
                    count = 1
                    while arcname in used:
                        count += 1
                        arcname = f"{stem} ({count}){dot}{ext}"
                    used.add(arcname)
                    bundle.write(target, arcname)
                    target.unlink()
            self._reply_file(archive, "application/zip", headers)
        finally:
            self.server.store.discard(archive.parent)


class _Refused(Exception):
    """A request refused with a status and one line; ``close`` ends the connection."""

    def __init__(
        self, status: int, message: str, close: bool = False, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.close = status, message, close
        self.extra: dict[str, Any] = {"headers": headers} if headers else {}


def _strength(text: str) -> float:
    """A strength from a URL: a plain decimal number from 0 to MAX_STRENGTH."""
    wanted = f"give a number from 0 to {MAX_STRENGTH:g}"
    if not text:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"strength is empty: {wanted}")
    shown = repr(text if len(text) <= 20 else text[:20] + "...")
    if not _NUMBER.fullmatch(text):
        raise _Refused(HTTPStatus.BAD_REQUEST, f"strength {shown} is not a number: {wanted}")
    value = float(text) + 0.0  # 1e999 is inf; + 0.0 makes -0 plain 0
    if value > MAX_STRENGTH:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"strength {shown} is too large: {wanted}")
    if value < 0:
        raise _Refused(HTTPStatus.BAD_REQUEST, f"strength {shown} is below 0: {wanted}")
    return value


def _pixels(query: dict[str, list[str]], key: str, default: str | None = None) -> int:
    """A whole number of pixels from a URL (int() would also take "1_0", " 1" and "-1")."""
    text = query.get(key, [default])[0]
    if text is None:
        raise _Refused(
            HTTPStatus.BAD_REQUEST, f"{key} is missing: a region needs left, top, right, bottom"
        )
    if not _PIXELS.fullmatch(text):
        shown = repr(text if len(text) <= 20 else text[:20] + "...")
        raise _Refused(HTTPStatus.BAD_REQUEST, f"{key} {shown} is not a whole number of pixels")
    return int(text)


@dataclass
class _Waiter:
    """A download, zip or zoom that may wait for the engine (``Limits.max_waiting``).

    ``label`` starts its refusal's line (the photo's name; empty for a zip, which the page
    names itself); ``admitted`` once it has been given a place to wait.
    """

    label: str
    admitted: bool = False


class _Admission:
    def __init__(self, server: EnhanceServer, size: int) -> None:
        self.server, self.size, self.admitted = server, size, False

    def __enter__(self) -> bool:
        with self.server._queue_lock:
            if self.server.queued_bytes + self.size <= self.server.limits.max_queued_bytes:
                self.server.queued_bytes += self.size
                self.admitted = True
        return self.admitted

    def __exit__(self, *exc: object) -> None:
        if self.admitted:
            with self.server._queue_lock:
                self.server.queued_bytes -= self.size


class _Job:
    """One upload's entry in the server's progress table, from its X-Rave-Job to its end.

    Entered, it gives the callable that records ``(done, total)`` (the engine's progress
    hook), or None when the token is taken by a request in flight (no client can overwrite
    or end another's). Without a token it records nothing. The table holds one entry per
    upload in flight, so its size is bounded by the connection cap; an ended upload's last
    count is kept until as many later uploads have ended (the page's last poll may cross
    the upload's answer: it gets that count, not a 404), so that memory is bounded too.
    """

    def __init__(self, server: EnhanceServer, token: str | None) -> None:
        self.server, self.token, self.entered = server, token, False

    def __enter__(self) -> Callable[[int, int], None] | None:
        token, table = self.token, self.server._jobs
        if token is None:
            return lambda done, total: None
        with self.server._jobs_lock:
            if token in table:
                return None
            self.server._ended.pop(token, None)
            table[token] = (0, 0)
            self.entered = True

        def report(done: int, total: int) -> None:  # from the engine's threads
            with self.server._jobs_lock:
                if token in table:
                    table[token] = (int(done), int(total))

        return report

    def __exit__(self, *exc: object) -> None:
        if self.entered and self.token is not None:
            ended = self.server._ended
            with self.server._jobs_lock:
                ended[self.token] = self.server._jobs.pop(self.token)
                while len(ended) > self.server.limits.max_connections:
                    ended.popitem(last=False)


class EnhanceServer(ThreadingHTTPServer):
    """The HTTP server of ``rave serve``; see the module docstring for its limits."""

    daemon_threads = False  # server_close() joins them: no torch thread killed at exit
    block_on_close = True
    request_queue_size = 64
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        enhancer: Enhancer,
        *,
        limits: Limits,
        quality: int,
        strength: float = 1.0,
        log_line: Callable[[str], None] | None = None,
    ) -> None:
        # An IPv6 address (--host ::1, --host ::) needs an IPv6 socket: the default AF_INET
        # one refused them ("Address family for hostname not supported"). Names and IPv4
        # addresses keep IPv4, as before.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.strength = strength
        self.enhancer = enhancer
        self.limits = limits
        self.quality = quality
        self.log_line = log_line or (lambda line: log.info("%s", line))
        self.store = ResultStore(limits.results_bytes)
        if self.store.removed_stale:
            self.log_line(
                f"removed {self.store.removed_stale} result folder(s) left in "
                f"{tempfile.gettempdir()} by rave serve processes that were killed"
            )
        self.stopping = threading.Event()
        self.queued_bytes = 0
        self._queue_lock = threading.Lock()
        self._jobs: dict[str, tuple[int, int]] = {}  # X-Rave-Job -> (done, total) tiles
        self._ended: OrderedDict[str, tuple[int, int]] = OrderedDict()  # the last ones' counts
        self._jobs_lock = threading.Lock()
        self._one_at_a_time = threading.Lock()
        self.waiting = 0  # downloads, zips and zooms waiting for it (Limits.max_waiting)
        self._waiting_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._deadlines: dict[_Handler, float | None] = {}
        self._phase_started: dict[_Handler, float] = {}
        self._watch_lock = threading.Lock()
        self._watchdog = threading.Thread(target=self._watch_loop, daemon=True)
        self._watchdog.start()
        self._previous_sigterm: Any = None
        self._sigterm_caught = False
        self._terminated = False

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            # All interfaces means IPv4 ones too (as http.server's own --bind ::): where
            # the system defaults to IPv6 only, IPv4 clients would be refused.
            with contextlib.suppress(OSError, AttributeError):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def log(self, line: str) -> None:
        """Write one request's line with ``log_line``, never into a capture of decoder messages.

        While a photo is decoded or written, fd 2 is redirected into a capture of the
        libraries' messages (rave.io.library_messages), and ``log_line`` is the caller's: the
        CLI's echoes to sys.stderr, a logging handler writes to the stream it was given;
        either ends on fd 2, which the server cannot choose. A dup of the original stderr
        would only help a writer the server owns, and a capture that filtered out log lines
        would have to recognise them. What the server controls is when the line is written:
        after any capture in progress (one decode or encode), so captures hold only library
        messages and no line is lost.
        """
        with outside_captures():
            self.log_line(line)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The standard library prints the traceback on sys.stderr, i.e. fd 2, where it
        # would end as a decoder message of the photo decoded meanwhile.
        with outside_captures():
            super().handle_error(request, client_address)

    # -- connections -----------------------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False) and not (
            self._evict_slowest() and self._slots.acquire(timeout=1.0)
        ):
            # Over the cap: answered here, without a thread.
            body = b"too many connections; try again shortly\n"
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    b"Retry-After: 5\r\nConnection: close\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def watch(self, handler: _Handler, seconds: float | None) -> None:
        """Give a connection ``seconds`` for what it does next (None: no deadline)."""
        with self._watch_lock:
            if seconds is None:
                self._deadlines.pop(handler, None)
                self._phase_started.pop(handler, None)
            else:
                self._deadlines[handler] = time.monotonic() + seconds
                self._phase_started.setdefault(handler, time.monotonic())

    def _evict_slowest(self) -> bool:
        """At the connection cap: close the connection that has spent longest sending a
        request (at least 1 s), so that slow clients cannot keep a new one out.

        Connections whose photo is computing are not watched, hence never evicted.
        """
        now = time.monotonic()
        with self._watch_lock:
            waiting = [(t, h) for h, t in self._phase_started.items() if now - t >= 1.0]
            if not waiting:
                return False
            _, slowest = min(waiting, key=lambda pair: pair[0])
            self._deadlines.pop(slowest, None)
            self._phase_started.pop(slowest, None)
        slowest.cut_off = "dropped for a newer connection"
        with contextlib.suppress(OSError):
            slowest.connection.shutdown(socket.SHUT_RDWR)
        return True

    def _watch_loop(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self._watch_lock:
                late = [h for h, d in self._deadlines.items() if d is not None and d < now]
                if self.stopping.is_set():
                    late = list(self._deadlines)
                for handler in late:
                    self._deadlines.pop(handler, None)
                    self._phase_started.pop(handler, None)
            for handler in late:
                stopping = self.stopping.is_set()
                handler.cut_off = "the server stopped" if stopping else "too slow: cut off"
                # wakes the thread blocked on this socket with an error or EOF
                with contextlib.suppress(OSError):
                    handler.connection.shutdown(socket.SHUT_RDWR)

    def queued(self, size: int) -> _Admission:
        """Admits an upload of ``size`` bytes if the queue's byte budget allows it."""
        return _Admission(self, size)

    def job(self, token: str | None) -> _Job:
        """The progress entry of an upload that sent ``token`` (see :class:`_Job`)."""
        return _Job(self, token)

    def progress(self, token: str) -> tuple[int, int] | None:
        """``(done, total)`` tiles of the upload with ``token`` (in flight or among the last
        ended), else None."""
        with self._jobs_lock:
            return self._jobs.get(token) or self._ended.get(token)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`stop`; in the main thread, SIGTERM raises KeyboardInterrupt.

        Service managers (systemd, docker) stop a process with SIGTERM, whose default is to
        die at once: no stop of the running photo, and every upload left in the temporary
        folder. Turned into the KeyboardInterrupt of a Ctrl-C, it gets the caller's clean
        stop (``rave serve``: :meth:`stop`, then "stopped"). The handler stays until
        :meth:`stop` has finished, so a second SIGTERM cannot cut the stop short.
        """
        self._catch_sigterm()
        interrupted = True
        try:
            super().serve_forever(poll_interval)
            interrupted = False
        finally:
            if not interrupted:  # shut down from another thread: its stop() cannot restore
                self._release_sigterm()

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers, and it would get the interrupt

        def on_sigterm(signum: int, frame: Any) -> None:
            if self._terminated or self.stopping.is_set():
                return  # a stop is under way: let it finish
            self._terminated = True
            raise KeyboardInterrupt

        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        self._sigterm_caught = True

    def _release_sigterm(self) -> None:
        if self._sigterm_caught and threading.current_thread() is threading.main_thread():
            previous = self._previous_sigterm
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            self._sigterm_caught = False

    def stop(self) -> None:
        """Stop serving: the running photo stops within one tile, connections are closed."""
        self.stopping.set()
        try:
            self.shutdown()
            self.server_close()  # joins the connection threads
            self.store.close()
        finally:
            self._release_sigterm()

    # -- the engine ------------------------------------------------------------------------

    def _compute(
        self,
        name: str,
        work: Callable[[Callable[[], bool]], Any],
        client_gone: Callable[[], bool] | None = None,
        waiter: _Waiter | None = None,
    ) -> Any:
        """Run ``work(stop)`` alone (one photo at a time), within the time budget.

        ``stop()`` says whether to abandon the work: the server is stopping, the time budget
        is spent, or ``client_gone()`` (the client closed its connection: the page's
        *Remove*, a closed tab), so that nobody's next photo waits for an unwanted one.
        ``waiter`` (a download, zip or zoom; None for an upload) counts against
        ``max_waiting`` if the engine is busy.
        """
        from rave.inference import DeadlineExceeded
        from rave.io import PhotoError

        limit = self.limits.time_limit
        deadline = time.monotonic() + limit
        gone = client_gone or (lambda: False)

        def stop() -> bool:
            return self.stopping.is_set() or time.monotonic() > deadline or gone()

        self._wait_for_engine(name, deadline, gone, waiter)
        try:
            if self.stopping.is_set():
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, "the server is stopping")
            if gone():  # left while waiting for its turn
                raise _Closed("the client closed the connection: not computed")
            return work(stop)
        except PhotoError as err:
            raise _Refused(HTTPStatus.BAD_REQUEST, f"{name}: {err.reason}") from None
        except DeadlineExceeded:
            if not self.stopping.is_set() and gone():
                raise _Closed("the client closed the connection: stopped") from None
            reason = (
                "the server is stopping"
                if self.stopping.is_set()
                else f"over the {limit:g} s time limit per photo (rave serve --time-limit)"
            )
            raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, f"{name}: {reason}") from None
        except (ValueError, MemoryError, OSError) as err:  # the photo's own error...
            if isinstance(err, OSError) and _disk_full(err, self.store.root):
                raise _disk_full_refusal(name) from None  # ...or the server's full disk
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            raise _Refused(HTTPStatus.BAD_REQUEST, printable(f"{name}: {reason}")) from None
        finally:
            self._one_at_a_time.release()
            _return_freed_memory()

    def _wait_for_engine(
        self, name: str, deadline: float, gone: Callable[[], bool], waiter: _Waiter | None
    ) -> None:
        """Take the one-photo lock before ``deadline``; a client that leaves while it waits
        (a cancelled download) gives its place up at once instead of at the deadline.

        A ``waiter`` that finds the engine busy takes one of ``max_waiting`` places while
        it waits, or is refused (503) when none is left: each waiting request holds a
        connection, and whoever has a result's id could otherwise fill every connection
        with downloads that wait. Only its first wait is checked: a zip let in is never
        refused halfway through its photos (it waits again between them).
        """
        if self._one_at_a_time.acquire(blocking=False):
            return
        if waiter is not None:
            self._start_waiting(waiter)
        try:
            while not self._one_at_a_time.acquire(timeout=0.25):
                if self.stopping.is_set():
                    raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, "the server is stopping")
                if time.monotonic() > deadline:
                    raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, f"{name}: the server is busy")
                if gone():
                    raise _Closed("the client closed the connection while it waited: not computed")
        finally:
            if waiter is not None:
                with self._waiting_lock:
                    self.waiting -= 1

    def _start_waiting(self, waiter: _Waiter) -> None:
        with self._waiting_lock:
            if not waiter.admitted and self.waiting >= self.limits.max_waiting:
                prefix = f"{waiter.label}: " if waiter.label else ""
                raise _Refused(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    printable(
                        f"{prefix}too many downloads and zooms already wait their turn "
                        f"({self.waiting}; the server computes one photo at a time); "
                        "try again shortly"
                    ),
                )
            waiter.admitted = True
            self.waiting += 1

    def enhance_upload(
        self,
        result_id: str,
        folder: Path,
        name: str,
        client_gone: Callable[[], bool] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Result:
        """Decode the upload, run the network once, keep the light map and a preview.

        ``progress(done, total)`` is called after each tile of the network, if the engine
        reports them (possibly from a worker thread).
        """
        from rave.io import read_photo

        def work(stop: Callable[[], bool]) -> Result:
            photo = read_photo(folder / "upload", max_pixels=self.limits.max_pixels)
            light = self.enhancer.light_map(photo.pixels, deadline=stop, progress=progress)
            if not np.isfinite(light).all():
                raise ValueError("the model's light map is not finite on this photo")
            np.save(folder / "light.npy", light)
            (folder / "view.bin").write_bytes(encode_view(photo.pixels, light))
            height, width = light.shape
            _, depth_note = output_dtype(photo.pixels.dtype, photo.format)
            format_note = _format_note(folder / "upload", name, photo.format)
            notes = [*photo.notes, *[note for note in (format_note, depth_note) if note]]
            return Result(result_id, name, photo.format, width, height, folder, notes)

        result = self._compute(name, work, client_gone)
        self.store.add(result)
        return result

    def render_view(
        self,
        result: Result,
        box: tuple[int, int, int, int],
        max_side: int,
        client_gone: Callable[[], bool] | None = None,
        waiter: _Waiter | None = None,
    ) -> bytes:
        """A region of a kept result at up to full resolution (e.g. zoom to 100%)."""
        from rave.io import read_photo

        def work(stop: Callable[[], bool]) -> bytes:
            photo = read_photo(result.upload, max_pixels=self.limits.max_pixels)
            light = np.load(result.light, mmap_mode="r")
            return encode_view(photo.pixels, light, box, max_side)

        return self._compute(result.name, work, client_gone, waiter)

    def render(
        self,
        result: Result,
        strength: float,
        client_gone: Callable[[], bool] | None = None,
        waiter: _Waiter | None = None,
    ) -> Path:
        """The full-resolution file at ``strength`` (the network is not run again)."""

        def work(stop: Callable[[], bool]) -> Path:
            target = result.folder / f"out-{time.monotonic_ns()}.{result.format}"
            self.enhancer.enhance_file(
                result.upload,
                target,
                format=result.format,
                quality=self.quality,
                max_pixels=self.limits.max_pixels,
                strength=strength,
                light_map=np.load(result.light),
                deadline=stop,
            )
            return target

        return self._compute(result.name, work, client_gone, waiter)


def _format_note(upload: Path, name: str, written: str) -> str | None:
    """The note for a download in ``written`` format when the upload's content is in another
    one ("GIF input written as PNG"), else None.

    By content, as the download's format is: the name may lie (a JPEG named photo.gif is
    downloaded as a JPEG, a GIF named x.jpg as a PNG). The decoded source's format is not
    on the Photo, so Pillow names it again from the header (no pixels decoded); the note is
    :func:`rave.io.formats.default_output_note` of that format's suffix (the upload's own
    spelling of it first), if that suffix's default output is the one written.
    """
    from PIL import Image

    from rave.io.formats import default_output_note, native_output_format
    from rave.io.library_messages import captured_messages

    try:
        # Warnings about the header were noted when the photo was read.
        with captured_messages(native=False), Image.open(upload) as image:
            kind = image.format
    except Exception:  # not for Pillow (a TIFF rave reads itself): written as it is
        return None
    suffixes = [
        suffix for suffix, pillow in Image.registered_extensions().items() if pillow == kind
    ]
    own = Path(name).suffix.lower()
    for suffix in sorted(suffixes, key=lambda suffix: suffix != own):
        if (native_output_format(suffix) or "png") == written:
            return default_output_note(suffix)
    return None


def _return_freed_memory() -> None:
    # The same allocator policy as rave enhance: freed tile memory goes back to the system
    # after each photo, so a long-lived server does not keep the peak of its largest photo.
    from rave.inference.memory import return_freed_memory

    return_freed_memory()


def make_server(
    model: Enhancer | nn.Module,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int | None = None,
    quality: int = 95,
    tile: int | str | None = "auto",
    strength: float = 1.0,
    limits: Limits | None = None,
    log_line: Callable[[str], None] | None = None,
) -> EnhanceServer:
    """An HTTP server (not yet serving) for the enhancement page.

    Args:
        model: the :class:`rave.Enhancer` to serve with (its tile setting is used), or an
            enhancement network in eval mode, served with ``tile``.
        host, port: where to listen; port 0 picks a free one (``server.server_port``).
        max_upload_bytes: larger uploads are refused (413) before they are read.
        max_pixels: larger images are refused (400) from their header; default 50 M.
        quality: JPEG/WebP/HEIC quality of the results.
        tile: tile size for the engine (``"auto"`` bounds memory) when ``model`` is a
            network.
        strength: the page's initial strength (each photo's slider starts there).
        limits: every other limit (:class:`Limits`); its upload and pixel limits are
            replaced by the two arguments above when those are given.
        log_line: called with one line per request (default: this module's logger).

    Returns:
        the server; call ``serve_forever()`` and, from another thread, ``stop()``.
    """
    limits = limits or Limits(max_queued_bytes=max(2 * max_upload_bytes, 2**20))
    limits.max_upload_bytes = max_upload_bytes
    if max_pixels is not None:
        limits.max_pixels = max_pixels
    if math.isinf(limits.time_limit) or limits.time_limit <= 0:
        raise ValueError("the time limit must be a positive number of seconds")
    from rave.network.enhancer import check_strength

    enhancer = model if isinstance(model, Enhancer) else Enhancer(model, tile=tile)
    return EnhanceServer(
        (host, port),
        enhancer,
        limits=limits,
        quality=quality,
        strength=check_strength(strength),
        log_line=log_line,
    )
