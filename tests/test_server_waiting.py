"""``rave serve``: requests that wait for the engine, HEAD without rendering, and the page's
signal that a download has started. Each test here failed before its change.

Real sockets on 127.0.0.1 and a network whose light map is 0.5 everywhere (the results are
known without the real model); an engine the test holds busy (no timing). The browser tests
use Debian's chromium through Playwright, as ``tests/test_server_browser.py`` does.
"""

from __future__ import annotations

import http.client
import io
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from _served import Served as _Served
from _served import dark as _dark
from _served import open_page as _open_page_only
from _served import png as _png
from _served import serve as _serve
from _served import upload_in_page as _upload_in_page
from rave.server import app as server_app
from rave.server import store
from rave.server.app import Limits


def _doubled(pixels: np.ndarray) -> np.ndarray:
    """The result at strength 1 of a light map of 0.5: the photo doubled, clipped."""
    return np.minimum(pixels.astype(np.int32) * 2, 255).astype(np.uint8)


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


# -- a cap on requests waiting for the engine ---------------------------------------------


def test_the_default_cap_on_waiting_requests_is_below_the_connection_cap() -> None:
    limits = Limits()
    assert limits.max_waiting == 8 < limits.max_connections


def test_downloads_zips_and_zooms_beyond_the_waiting_cap_get_a_503_at_once(
    light_half_net,
) -> None:
    """Whoever held a result's id could fill every connection with downloads waiting (up to
    --time-limit each) for a photo being enhanced: nothing capped them below 32."""
    with _serve(light_half_net, max_waiting=2) as served:
        photo = _dark()
        info = served.upload("a.png", _png(photo))
        download = f"/result/{info['id']}/download?strength=1"
        busy = served.hold_engine()
        waiting = [_in_thread(lambda: served.request("GET", download)) for _ in range(2)]
        served.wait_for(lambda: served.server.waiting == 2, "two downloads waiting")

        started = time.monotonic()
        status, headers, body = served.request("GET", download, timeout=10)
        assert status == 503, body
        assert headers["Retry-After"] == "5"
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        line = body.decode()
        assert line.count("\n") == 1 and line.endswith("\n")  # one line of plain text
        assert line.startswith("a.png: too many downloads and zooms already wait their turn")
        assert "(2; " in line and line.rstrip().endswith("try again shortly")
        assert time.monotonic() - started < 5  # at once, not after the engine

        zoom = f"/result/{info['id']}/view?left=0&top=0&right=32&bottom=24"
        status, _, body = served.request("GET", zoom, timeout=10)
        assert status == 503 and body.startswith(b"a.png: too many downloads"), body
        # A zip names no single photo (the page names the zip's photos itself).
        status, _, body = served.request("GET", f"/zip?items={info['id']}:1", timeout=10)
        assert status == 503 and body.startswith(b"too many downloads and zooms"), body
        assert sum("-> 503" in line for line in served.lines) == 3, served.lines

        # Uploads are not counted: their own limit is max_queued_bytes.
        upload, uploaded = _in_thread(lambda: served.upload("b.png", _png(_dark(seed=1))))
        time.sleep(0.3)
        assert not uploaded  # waiting for the engine, not refused
        assert served.server.waiting == 2

        served.engine.hold.clear()
        served.engine.release.set()
        for thread, answers in waiting:
            thread.join(30)
            status, _, body = answers[0]
            assert status == 200
            with Image.open(io.BytesIO(body)) as result:
                assert np.array_equal(np.asarray(result), _doubled(photo))
        upload.join(30)
        busy.join(30)
        assert uploaded and uploaded[0]["name"] == "b.png"
        assert served.server.waiting == 0
        # The engine free, the same download is served at once.
        assert served.request("GET", download)[0] == 200


def test_a_client_that_leaves_gives_its_waiting_place_up(light_half_net) -> None:
    with _serve(light_half_net, max_waiting=1) as served:
        info = served.upload("a.png", _png(_dark()))
        busy = served.hold_engine()
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        connection.request("GET", f"/result/{info['id']}/download")
        served.wait_for(lambda: served.server.waiting == 1, "one download waiting")
        connection.close()  # the user cancelled it
        served.wait_for(lambda: served.server.waiting == 0, "its place given up")
        waiting, answers = _in_thread(
            lambda: served.request("GET", f"/result/{info['id']}/download")
        )
        served.wait_for(lambda: served.server.waiting == 1, "the next one waiting")
        served.engine.release.set()
        waiting.join(30)
        busy.join(30)
        assert answers[0][0] == 200


def test_a_zip_let_in_to_wait_is_not_refused_between_its_photos(light_half_net) -> None:
    """A zip waits for the engine again before each photo: only its first wait is checked
    against the cap, so that it is never refused halfway through."""
    with _serve(light_half_net, max_waiting=1) as served:
        server = served.server
        zip_waiter = server_app._Waiter("")
        server._start_waiting(zip_waiter)  # its first photo waits: let in
        assert server.waiting == 1
        server.waiting -= 1  # it got the engine
        other = server_app._Waiter("b.png")
        server._start_waiting(other)  # a download takes the one place meanwhile
        server._start_waiting(zip_waiter)  # the zip's next photo waits: still let in
        assert server.waiting == 2
        with pytest.raises(server_app._Refused) as refused:
            server._start_waiting(server_app._Waiter("c.png"))  # a newcomer is not
        assert refused.value.status == 503
        server.waiting = 0


# -- HEAD without rendering ---------------------------------------------------------------


def test_head_on_a_download_zip_or_zoom_renders_nothing(light_half_net) -> None:
    """HEAD on a download rendered the whole photo (and waited for the engine to do so)
    just to send headers; a zip rendered every photo."""
    with _serve(light_half_net) as served:
        info = served.upload("a b.png", _png(_dark()))
        busy = served.hold_engine()  # a render would wait for this: the HEADs must not
        download = f"/result/{info['id']}/download?strength=0.5&job={'d' * 32}"
        status, headers, body = served.request("HEAD", download, timeout=10)
        assert status == 200 and body == b""
        assert headers["Content-Type"] == "image/png"
        assert headers["Content-Disposition"] == (
            "attachment; filename=\"a_b_enhanced.png\"; filename*=UTF-8''a%20b_enhanced.png"
        )
        assert headers["Set-Cookie"].startswith(f"rave-job-{'d' * 32}=started;")
        assert headers["Content-Length"] is None  # known only once rendered (RFC 9110 8.6)

        status, headers, body = served.request("HEAD", f"/zip?items={info['id']}:1", timeout=10)
        assert status == 200 and body == b""
        assert headers["Content-Type"] == "application/zip"
        assert headers["Content-Disposition"] == 'attachment; filename="rave-enhanced.zip"'
        assert headers["Content-Length"] is None

        zoom = f"/result/{info['id']}/view?left=0&top=0&right=32&bottom=24&max=16"
        status, zoom_headers, body = served.request("HEAD", zoom, timeout=10)
        assert status == 200 and body == b""
        assert zoom_headers["Content-Type"] == "application/octet-stream"

        # What is known without rendering is still checked.
        bad = f"/result/{info['id']}/download?strength=x"
        assert served.request("HEAD", bad, timeout=10)[0] == 400
        assert served.request("HEAD", "/result/nothing/download", timeout=10)[0] == 410
        assert served.request("HEAD", f"/zip?items={info['id']}:1,x:1", timeout=10)[0] == 410
        outside = f"/result/{info['id']}/view?left=0&top=0&right=65&bottom=24"
        assert served.request("HEAD", outside, timeout=10)[0] == 400
        # The preview itself is a file: its HEAD keeps its exact length.
        status, headers, _ = served.request("HEAD", f"/result/{info['id']}/view", timeout=10)
        assert status == 200 and int(headers["Content-Length"]) > 0

        assert served.engine.renders == 0 and served.server.waiting == 0
        served.engine.release.set()
        busy.join(30)
        # The GET has the same headers, and a Content-Length.
        status, get_headers, body = served.request("GET", download)
        assert status == 200 and int(get_headers["Content-Length"]) == len(body)
        head_headers = served.request("HEAD", download, timeout=10)[1]
        for key in ("Content-Type", "Content-Disposition", "Set-Cookie"):
            assert get_headers[key] == head_headers[key]
        # A zoomed region's length follows from its size: its HEAD gives it exactly.
        status, _, body = served.request("GET", zoom)
        assert status == 200 and int(zoom_headers["Content-Length"]) == len(body)


def test_a_views_length_is_known_without_encoding_it() -> None:
    pixels, light = _dark(), np.full((48, 64), 0.5, np.float32)
    for box in ((0, 0, 64, 48), (3, 5, 40, 30), (0, 0, 1, 48), (10, 10, 11, 11)):
        for max_side in (16, 17, 33, 1024):
            expected = len(store.encode_view(pixels, light, box, max_side))
            assert store.view_length(box, max_side) == expected, (box, max_side)


# -- the download's job cookie ------------------------------------------------------------


def test_a_download_or_zip_with_a_job_token_sets_its_cookie(light_half_net) -> None:
    with _serve(light_half_net) as served:
        info = served.upload("a.png", _png(_dark()))
        job = "Job_token-0123456789"
        status, headers, _ = served.request("GET", f"/result/{info['id']}/download?job={job}")
        assert status == 200
        assert headers["Set-Cookie"] == (
            f"rave-job-{job}=started; Path=/; Max-Age=60; SameSite=Strict"
        )
        status, headers, body = served.request("GET", f"/zip?items={info['id']}:1&job={job}")
        assert status == 200 and zipfile.ZipFile(io.BytesIO(body)).namelist()
        assert headers["Set-Cookie"].startswith(f"rave-job-{job}=started;")
        # Without a token, no cookie; a malformed one is refused before anything is rendered.
        assert served.request("GET", f"/result/{info['id']}/download")[1]["Set-Cookie"] is None
        renders = served.engine.renders
        for bad in ("short", "x" * 65, "a%3Bb" + "c" * 20, ""):
            status, _, body = served.request("GET", f"/result/{info['id']}/download?job={bad}")
            assert status == 400 and body.startswith(b"job must be 16 to 64"), (bad, body)
        assert served.engine.renders == renders


# -- the page -----------------------------------------------------------------------------


def _open_page(browser: Any, served: _Served, tmp_path: Path, photos: dict[str, Any]) -> Any:
    page = _open_page_only(browser, served)
    _upload_in_page(page, tmp_path, photos)
    return page


def _status_says(page: Any, text: str) -> None:
    page.wait_for_function("t => $('status').textContent === t", arg=text, timeout=20000)


def _frames(page: Any) -> int:
    return page.evaluate("() => document.querySelectorAll('iframe').length")


@pytest.mark.slow
def test_the_page_says_a_download_is_under_way_until_it_starts_and_leaves_no_frame(
    browser, light_half_net, tmp_path, monkeypatch
) -> None:
    """Nothing on the page said that a download was being prepared (a 24 MP photo takes
    seconds), and each download left a hidden frame behind."""
    sending = threading.Event()  # the download's body waits for it, after its headers
    original = server_app._Handler._send_head

    def send_head(handler: Any, status: int, headers: dict[str, str], close: bool) -> None:
        original(handler, status, headers, close)
        if "/download" in handler.path and handler.command == "GET":
            assert sending.wait(30)

    monkeypatch.setattr(server_app._Handler, "_send_head", send_head)
    with _serve(light_half_net) as served:
        photos = {"first.png": _dark(), "second.png": _dark(seed=1)}
        page = _open_page(browser, served, tmp_path, photos)
        page.locator(".thumb").nth(0).click()
        served.engine.render_hold.set()
        with page.expect_download(timeout=30000) as download:
            page.click("#download")
            _status_says(page, "2 photos: 2 done; downloading first.png…")
            assert _frames(page) == 1
            served.engine.render_release.set()  # rendered: the headers (and cookie) go out
            _status_says(page, "2 photos: 2 done")
        # The frame is gone while the file is still being sent: the download goes on.
        assert _frames(page) == 0
        assert "rave-job-" not in page.evaluate("() => document.cookie")
        sending.set()
        saved = tmp_path / "saved.png"
        download.value.save_as(saved)
        assert download.value.failure() is None
        with Image.open(saved) as result:
            assert np.array_equal(np.asarray(result), _doubled(photos["first.png"]))

        served.engine.render_hold.clear()
        with page.expect_download(timeout=30000) as download:
            page.click("#zipall")
        download.value.save_as(tmp_path / "all.zip")
        with zipfile.ZipFile(tmp_path / "all.zip") as bundle:
            assert bundle.namelist() == ["first_enhanced.png", "second_enhanced.png"]
        _status_says(page, "2 photos: 2 done")
        assert _frames(page) == 0
        page.context.close()


@pytest.mark.slow
def test_the_page_says_when_too_many_downloads_wait(browser, light_half_net, tmp_path) -> None:
    """Over the cap on waiting requests, the page's download and zoom say so, naming the
    photo once (the zoom's line said it twice: "a.png: a.png: ...")."""
    with _serve(light_half_net, max_waiting=1) as served:
        page = _open_page(browser, served, tmp_path, {"first.png": _dark()})
        photo_id = page.evaluate("() => photos[0].id")
        busy = served.hold_engine()
        waiting, answers = _in_thread(lambda: served.request("GET", f"/result/{photo_id}/download"))
        served.wait_for(lambda: served.server.waiting == 1, "the one place taken")

        page.click("#download")
        page.wait_for_function(
            "() => $('status').textContent.startsWith('Not downloaded')", timeout=20000
        )
        status = page.text_content("#status")
        assert status.startswith("Not downloaded: first.png: too many downloads and zooms")
        assert status.endswith("try again shortly")
        assert _frames(page) == 0

        page.click("#zoom")
        page.wait_for_function("() => $('error').textContent.length > 0", timeout=20000)
        error = page.text_content("#error")
        assert error.startswith("first.png: too many downloads and zooms"), error

        served.engine.release.set()
        waiting.join(30)
        busy.join(30)
        assert answers[0][0] == 200
        page.context.close()
