"""``rave serve``: a one-page web app over the same engine as ``rave enhance``.

The standard library's HTTP server is enough here: one local user (or a few) uploading
photos; a framework would add a dependency for nothing. The browser posts the raw file
bytes (no multipart parsing), the server decodes them with :func:`rave.io.read_photo`
(EXIF orientation, ICC profile, 16-bit PNG/TIFF, decompression-bomb guard), enhances with
the tiled engine and answers with the enhanced file in the same format, metadata kept.
One photo is enhanced at a time, so memory stays that of one ``rave enhance``.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from torch import nn

from rave.server.page import PAGE

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "make_server"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 100 * 2**20
# Over-limit uploads up to this much larger are read and discarded before the refusal;
# larger ones get the refusal and a closed connection.
_DRAIN_LIMIT_BYTES = 16 * 2**20
_CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
    "webp": "image/webp",
    "bmp": "image/bmp",
}
_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_stem(name: str) -> str:
    """A file stem fit for a download name (the upload's name is untrusted)."""
    stem = _SAFE_STEM.sub("_", Path(name.replace("\\", "/")).stem).strip("._")
    return stem[:100] or "photo"


class _Handler(BaseHTTPRequestHandler):
    server: _EnhanceServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._reply(status, (message + "\n").encode(), "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            self._reply(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/health":
            self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no page {path}")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/enhance":
            self._error(HTTPStatus.NOT_FOUND, f"no endpoint {url.path}")
            return
        name = parse_qs(url.query).get("name", ["photo"])[0]
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the photo with a Content-Length")
            return
        length = int(length_header)
        if length == 0:
            self._error(HTTPStatus.BAD_REQUEST, f"{name}: empty upload")
            return
        if length > self.server.max_upload_bytes:
            if length <= self.server.max_upload_bytes + _DRAIN_LIMIT_BYTES:
                # Read what was sent so that the client sees the answer, not a reset.
                for start in range(0, length, 2**20):
                    self.rfile.read(min(2**20, length - start))
            else:
                self.close_connection = True
            limit_mb = self.server.max_upload_bytes / 2**20
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{name}: {length / 2**20:.1f} MB is over the {limit_mb:.0f} MB upload limit",
            )
            return
        data = self.rfile.read(length)
        try:
            body, fmt, notes = self.server.enhance_bytes(data, name)
        except ValueError as err:  # not a readable photo: one line naming it
            self._error(HTTPStatus.BAD_REQUEST, str(err))
            return
        headers = {
            "Content_Disposition": f'attachment; filename="{_safe_stem(name)}_enhanced.{fmt}"',
        }
        if notes:
            headers["X_Rave_Notes"] = "; ".join(notes).encode("ascii", "replace").decode()
        content_type = _CONTENT_TYPES.get(fmt, "application/octet-stream")
        self._reply(HTTPStatus.OK, body, content_type, **headers)


class _EnhanceServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        net: nn.Module,
        *,
        max_upload_bytes: int,
        max_pixels: int,
        quality: int,
        tile: int | str | None,
    ) -> None:
        super().__init__(address, _Handler)
        self.net = net
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.quality = quality
        self.tile = tile
        self._one_at_a_time = threading.Lock()

    def enhance_bytes(self, data: bytes, name: str) -> tuple[bytes, str, list[str]]:
        """Enhance an uploaded file; returns (file bytes, format, notes).

        Raises:
            ValueError: the upload is not a readable photo (one line naming it).
        """
        from rave.api import enhance_array
        from rave.io import PhotoError, read_photo, write_photo

        with tempfile.TemporaryDirectory(prefix="rave-serve-") as tmp:
            source = Path(tmp) / f"upload{Path(name).suffix.lower()[:8]}"
            source.write_bytes(data)
            try:
                with self._one_at_a_time:
                    photo = read_photo(source, max_pixels=self.max_pixels)
                    enhanced = enhance_array(
                        self.net, photo.pixels, tile=self.tile, out_dtype=photo.pixels.dtype
                    )
                    target = Path(tmp) / f"enhanced.{photo.format}"
                    notes = list(photo.notes) + write_photo(
                        target,
                        enhanced,
                        format=photo.format,
                        icc_profile=photo.icc_profile,
                        exif=photo.exif,
                        quality=self.quality,
                    )
            except PhotoError as err:
                raise ValueError(f"{name}: {err.reason}") from None
            return target.read_bytes(), photo.format, notes


def make_server(
    net: nn.Module,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int | None = None,
    quality: int = 95,
    tile: int | str | None = "auto",
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for the enhancement page.

    Args:
        net: the enhancement network, in eval mode.
        host, port: where to listen; port 0 picks a free one (``server.server_port``).
        max_upload_bytes: larger uploads are refused (413), without being kept.
        max_pixels: larger images are refused (400) from their header; default that of
            :func:`rave.io.read_photo`.
        quality: JPEG/WebP quality of the results.
        tile: tile size for the engine (``"auto"`` bounds memory).

    Returns:
        the server; call ``serve_forever()`` (and ``shutdown()`` from another thread).
    """
    from rave.io import DEFAULT_MAX_PIXELS

    return _EnhanceServer(
        (host, port),
        net,
        max_upload_bytes=max_upload_bytes,
        max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        quality=quality,
        tile=tile,
    )
