"""A ``rave serve`` the tests can hold busy: real sockets on 127.0.0.1, an engine whose
light map (and downloads' render) wait for the test's signal, so that nothing depends on
timing. Used by tests/test_server_audit.py and tests/test_server_waiting.py."""

from __future__ import annotations

import contextlib
import email.message
import http.client
import io
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rave.server import make_server
from rave.server.app import EnhanceServer, Limits
from rave.session import Enhancer


class HeldEnhancer(Enhancer):
    """An Enhancer the test can keep busy: the light map waits for ``release`` while
    ``hold`` is set; a download's render waits for ``render_release`` while ``render_hold``
    is set."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__(net, tile=None)
        self.hold, self.release, self.started = (threading.Event() for _ in range(3))
        self.render_hold, self.render_release = threading.Event(), threading.Event()
        self.renders = 0

    def light_map(self, pixels: np.ndarray, **options: Any) -> np.ndarray:
        if self.hold.is_set():
            self.started.set()
            assert self.release.wait(timeout=60), "the test never released the engine"
        return super().light_map(pixels, **options)

    def enhance_file(self, *args: Any, **options: Any) -> Any:
        self.renders += 1
        if self.render_hold.is_set():
            assert self.render_release.wait(timeout=60), "the test never released the render"
        return super().enhance_file(*args, **options)


class Served:
    def __init__(self, server: EnhanceServer, engine: HeldEnhancer, lines: list[str]) -> None:
        self.server, self.engine, self.lines = server, engine, lines
        self.port = server.server_port

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 60
    ) -> tuple[int, email.message.Message, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body)
            response = connection.getresponse()
            return response.status, response.msg, response.read()
        finally:
            connection.close()

    def upload(self, name: str, body: bytes) -> dict[str, Any]:
        status, _, answer = self.request("POST", f"/enhance?name={urllib.parse.quote(name)}", body)
        assert status == 200, answer
        return json.loads(answer)

    def hold_engine(self) -> threading.Thread:
        """An upload that keeps the engine busy until ``engine.release`` is set."""
        self.engine.hold.set()
        body = png(dark(seed=3))
        thread = threading.Thread(target=self.upload, args=("busy.png", body), daemon=True)
        thread.start()
        assert self.engine.started.wait(30)
        return thread

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, f"never: {what}; log: {self.lines}"
            time.sleep(0.02)


@contextlib.contextmanager
def serve(net: torch.nn.Module, **limits: Any) -> Iterator[Served]:
    engine = HeldEnhancer(net)
    lines: list[str] = []
    server = make_server(
        engine, "127.0.0.1", 0, limits=Limits(time_limit=60, **limits), log_line=lines.append
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server, engine, lines)
    finally:
        engine.release.set()
        engine.render_release.set()
        server.stop()
        thread.join(10)


def dark(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(5, 70, (height, width, 3), dtype=np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def open_page(browser: Any, served: Served) -> Any:
    """The server's page in a new browser context (desktop size, downloads accepted)."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{served.port}/")
    return page


def upload_in_page(page: Any, folder: Path, photos: dict[str, np.ndarray]) -> None:
    """Save ``photos`` in ``folder``, choose them in the page, wait until all are done."""
    paths = []
    for name, pixels in photos.items():
        Image.fromarray(pixels).save(folder / name)
        paths.append(str(folder / name))
    page.set_input_files("#file", paths)
    page.wait_for_function(
        "n => document.getElementById('status').textContent.includes(`${n} done`)",
        arg=len(photos),
        timeout=60000,
    )
