"""``rave serve`` as a demanding user meets it: each test here failed before its fix.

Real sockets on 127.0.0.1 (and ::1), a network whose light map is 0.5 everywhere (so the
results are known without the real model), and the CLI with that network in place of a
checkpoint. The browser test uses Debian's chromium through Playwright, as
``tests/test_server_browser.py`` does.
"""

from __future__ import annotations

import errno
import http.client
import io
import mimetypes
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from _served import Served as _Served
from _served import dark as _dark
from _served import open_page as _open_page
from _served import serve as _serve
from _served import upload_in_page as _upload_in_page
from rave.server import make_server
from rave.server.app import EnhanceServer

NAME_MAX_BYTES = 255  # ext4, APFS (bytes); NTFS counts UTF-16 units, fewer for these names


@pytest.fixture
def served(light_half_net) -> Iterator[_Served]:
    with _serve(light_half_net) as served:
        yield served


def _encoded(pixels: np.ndarray, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _filename(disposition: str) -> str:
    """The Unicode download name of a Content-Disposition (RFC 6266 ``filename*``)."""
    encoded = disposition.split("filename*=UTF-8''", 1)[1].split(";")[0]
    return urllib.parse.unquote(encoded)


# -- the download's Content-Type --------------------------------------------------------


def _heic_upload() -> bytes | None:
    """A HEIC photo, where pillow-heif can write one and rave writes HEIC back, else None."""
    try:
        import pillow_heif

        from rave.io.heif import can_write_heif
    except ImportError:
        return None
    if not can_write_heif():
        return None
    pillow_heif.register_heif_opener()
    return _encoded(_dark(), "HEIF", quality=90)


def test_every_download_is_labelled_with_the_format_it_holds(served: _Served) -> None:
    """A HEIC result went out as ``image/png`` (with ``nosniff``, so clients believed it)."""
    uploads = {
        "a.png": _encoded(_dark(), "PNG"),
        "a.jpg": _encoded(_dark(), "JPEG"),
        "a.webp": _encoded(_dark(), "WEBP", lossless=True),
        "a.tif": _encoded(_dark(), "TIFF"),
        "a.bmp": _encoded(_dark(), "BMP"),
    }
    heic = _heic_upload()
    if heic is not None:
        uploads["a.heic"] = heic
    for name, body in uploads.items():
        info = served.upload(name, body)
        status, headers, data = served.request("GET", f"/result/{info['id']}/download")
        assert status == 200, data
        filename = _filename(headers["Content-Disposition"])
        suffix = Path(filename).suffix
        # The reference: the system's MIME table for the name the browser saves under, and
        # the bytes' own format as Pillow reads it.
        expected = mimetypes.guess_type(filename)[0] or {".heic": "image/heic"}.get(suffix)
        assert headers["Content-Type"] == expected, (name, headers["Content-Type"], filename)
        if suffix == ".heic":
            assert data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"), data[:16]
        else:
            with Image.open(io.BytesIO(data)) as image:
                assert Image.MIME[image.format] == expected


# -- previews ------------------------------------------------------------------------------


def _view_rgb(body: bytes) -> np.ndarray:
    """The preview's RGB bytes, as encode_view's docstring lays the answer out."""
    assert body[:8] == b"RAVEVIEW"
    width, height = int.from_bytes(body[8:12], "little"), int.from_bytes(body[12:16], "little")
    return np.frombuffer(body, np.uint8, width * height * 3, 32).reshape(height, width, 3)


def test_a_float_tiff_is_previewed_not_black(served: _Served) -> None:
    """A 32-bit float TIFF (samples in [0, 1]) was cast to uint8 as is: every sample below
    1.0 became 0, so its preview and thumbnail were black."""
    import tifffile

    photo = np.random.default_rng(2).uniform(0.02, 0.4, (48, 64, 3)).astype(np.float32)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, photo, photometric="rgb")
    info = served.upload("float.tif", buffer.getvalue())
    status, _, body = served.request("GET", f"/result/{info['id']}/view")
    assert status == 200
    preview = _view_rgb(body).astype(np.float64)
    # each sample is the nearest 8-bit value of the original (no resize at this size)
    assert np.abs(preview - photo.astype(np.float64) * 255).max() <= 0.5 + 1e-3


def test_a_sixteen_bit_preview_does_not_hold_the_photo_four_times_over() -> None:
    """The 16-bit preview was converted through whole-photo uint32 temporaries: four times
    the photo's own size at once (a 24 MP 16-bit PNG took the server to 1.3 GB)."""
    import tracemalloc

    from rave.server.store import encode_view

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65535, (2048, 1536, 3), dtype=np.uint16)
    light = np.full(pixels.shape[:2], 0.5, np.float32)
    tracemalloc.start()  # numpy reports its arrays to tracemalloc
    try:
        encode_view(pixels, light)  # the page's preview: 1024 px, as the server sends it
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * pixels.nbytes, (peak / 1e6, pixels.nbytes / 1e6)
    # and the conversion is still to the nearest 8-bit value (a photo small enough to be
    # previewed at full size, over several bands of rows)
    small = rng.integers(0, 65535, (600, 40, 3), dtype=np.uint16)
    view = encode_view(small, np.full(small.shape[:2], 0.5, np.float32))
    preview = _view_rgb(view).astype(np.float64)
    assert np.abs(preview - small.astype(np.float64) * 255 / 65535).max() <= 0.5 + 1e-9


# -- download names ---------------------------------------------------------------------


def test_long_non_ascii_names_download_and_unzip_under_the_file_name_limit(
    served: _Served, tmp_path: Path
) -> None:
    """A 200-character Japanese name gave a 373-byte download name: the zip could not be
    extracted ("File name too long") and single downloads hit the same limit."""
    body = _encoded(_dark(), "PNG")
    names = ["日" * 200 + ".png", "😀" * 100 + ".png", "日" * 200 + ".png", "é" * 130 + ".png"]
    items = []
    for name in names:
        info = served.upload(name, body)
        items.append(f"{info['id']}:1")
        status, headers, _ = served.request("GET", f"/result/{info['id']}/download")
        assert status == 200
        filename = _filename(headers["Content-Disposition"])
        assert len(filename.encode()) <= NAME_MAX_BYTES, (len(filename.encode()), filename)
        # It is still that photo's name, cut at a whole character.
        assert filename.endswith("_enhanced.png") and filename[0] == name[0]
        assert filename.removesuffix("_enhanced.png") == name[: len(filename) - 13]
    status, _, data = served.request("GET", "/zip?items=" + ",".join(items))
    assert status == 200, data
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        entries = bundle.namelist()
        assert len(set(entries)) == len(names)
        assert all(len(entry.encode()) <= NAME_MAX_BYTES for entry in entries), entries
        bundle.extractall(tmp_path / "unzipped")  # raised OSError: File name too long
    assert len(list((tmp_path / "unzipped").iterdir())) == len(names)


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def small_temp(mount_tmpfs, monkeypatch) -> Path:
    """The server's temporary folder on a 64 kB tmpfs (root only; skips elsewhere)."""
    folder = mount_tmpfs("tmp", "size=64k")
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_full_disk_is_said_with_a_507_not_a_dropped_connection(
    light_half_net, small_temp: Path
) -> None:
    """An upload larger than the disk's free space got its connection closed without an
    answer (the page said "the server did not answer"); a light map that did not fit got a
    400 saying "19200 requested and 7136 written"."""
    with _serve(light_half_net) as served:
        big = _encoded(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8), "PNG")
        assert len(big) > 200_000  # over the 64 kB disk: fails while the upload is written
        status, headers, body = served.request("POST", "/enhance?name=big.png", big)
        assert status == 507, body
        text = body.decode()
        assert text.startswith("big.png: ") and "disk is full" in text and text.count("\n") == 1
        assert headers["Content-Type"].startswith("text/plain")
        # Fits as an upload (34 kB), not with its light map (77 kB): fails in the engine.
        small = _encoded(_dark(120, 160), "PNG")
        assert len(small) < 60_000
        status, _, body = served.request("POST", "/enhance?name=small.png", small)
        assert status == 507 and b"small.png: " in body and b"disk is full" in body, body
        assert not any(f for f in small_temp.rglob("*") if f.is_file() and f.stat().st_size > 4)
        # and a photo that fits is still served
        info = served.upload("tiny.png", _encoded(_dark(16, 16), "PNG"))
        assert (info["width"], info["height"]) == (16, 16)


def test_a_full_disk_while_the_upload_is_written_is_a_507(served: _Served, monkeypatch) -> None:
    """The same without root: the upload's file refuses its bytes with ENOSPC."""
    real_open = Path.open

    class FullFile(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_upload(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.name == "upload" and "w" in mode:
            return FullFile()
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_upload)  # the server writes the upload with it
    status, _, body = served.request("POST", "/enhance?name=a.png", _encoded(_dark(), "PNG"))
    assert status == 507, body
    assert body.decode().startswith("a.png: ") and "disk is full" in body.decode()


# -- waiting for the engine ---------------------------------------------------------------


def _hold_engine(served: _Served) -> threading.Thread:
    """Start an upload that keeps the engine busy until ``served.engine.release`` is set."""
    served.engine.hold.set()
    body = _encoded(_dark(seed=3), "PNG")
    thread = threading.Thread(target=served.upload, args=("busy.png", body), daemon=True)
    thread.start()
    assert served.engine.started.wait(30)
    return thread


def test_a_download_waiting_behind_another_photo_is_not_cut_off(light_half_net) -> None:
    """A download, zip or zoomed view asked while another photo was being enhanced was cut
    off after the 10 s header deadline with an empty reply (curl: "Empty reply from server";
    the page: "the server did not answer")."""
    with _serve(light_half_net, header_seconds=1.0) as served:
        photo = _dark()
        info = served.upload("a.png", _encoded(photo, "PNG"))
        busy = _hold_engine(served)
        answers: list[tuple[int, bytes]] = []

        def download() -> None:
            status, _, body = served.request("GET", f"/result/{info['id']}/download?strength=1")
            answers.append((status, body))

        waiting = threading.Thread(target=download, daemon=True)
        waiting.start()
        time.sleep(2.5)  # over the 1 s header deadline (the watchdog looks every 0.2 s)
        assert not answers, answers  # still waiting for the engine, not cut off
        served.engine.release.set()
        waiting.join(30)
        busy.join(30)
        assert answers and answers[0][0] == 200, answers
        with Image.open(io.BytesIO(answers[0][1])) as result:
            got = np.asarray(result)
        # light map 0.5: the result is the photo doubled (clipped)
        expected = np.minimum(photo.astype(np.int32) * 2, 255)
        assert np.abs(got.astype(np.int32) - expected).max() <= 1


def test_a_client_that_leaves_while_waiting_gives_its_place_up(served: _Served) -> None:
    """A cancelled download waited for the engine until the photo before it was done."""
    info = served.upload("a.png", _encoded(_dark(), "PNG"))
    busy = _hold_engine(served)
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
    sock.sendall(f"GET /result/{info['id']}/download HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(0.5)
    sock.close()  # the user cancelled the download
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("/download" in line for line in served.lines):
        time.sleep(0.1)
    logged = [line for line in served.lines if "/download" in line]
    assert logged and "closed the connection" in logged[0], served.lines
    assert not served.engine.release.is_set()  # logged while the other photo still ran
    served.engine.release.set()
    busy.join(30)


# -- addresses ----------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["::1", "::"])
def test_ipv6_addresses_can_be_served(light_half_net, host: str) -> None:
    """``--host ::1`` and ``--host ::`` failed with "Address family for hostname not
    supported" (an IPv4 socket); ``::`` serves IPv4 clients too, as "every interface"."""
    if not _ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    server = make_server(light_half_net, host, 0, log_line=lambda line: None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        clients = ["::1"] + (["127.0.0.1"] if host == "::" else [])
        for client in clients:
            connection = http.client.HTTPConnection(client, server.server_port, timeout=10)
            connection.request("GET", "/health")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"ok\n"), client
            connection.close()
    finally:
        server.stop()
        thread.join(10)


# -- the command line ---------------------------------------------------------------------


@pytest.fixture
def cli_with_net(light_half_net, monkeypatch) -> Iterator[Callable[..., Any]]:
    """``rave serve ARGS`` in-process with the test network, given a Ctrl-C as soon as it
    serves (in the server's loop, where the signal's KeyboardInterrupt comes).

    The command ignores SIGINT from its stop until the process exits; here the process is
    pytest's, so the handler is put back (else every later subprocess, which inherits an
    ignored SIGINT, could not be stopped with one).
    """
    from click.testing import CliRunner

    import rave.cli.enhance
    from rave.cli import main

    def load_network(ctx: Any, model: str, device: str) -> torch.nn.Module:
        return light_half_net  # no checkpoint to read

    def ctrl_c(self: EnhanceServer) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rave.cli.enhance, "_load_network", load_network)
    monkeypatch.setattr(EnhanceServer, "service_actions", ctrl_c)

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["serve", *args])

    previous = signal.getsignal(signal.SIGINT)
    try:
        yield run
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_busy_port_says_what_to_do(cli_with_net) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli_with_net("--port", str(port))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines
    assert "--port" in lines[0]  # what to do, not only the system's "Address already in use"


def test_a_busy_port_is_said_before_the_model_is_loaded(cli_with_net, monkeypatch) -> None:
    """The model was loaded first (seconds; minutes when it is downloaded on first use), and
    only then was the port found taken."""
    import rave.cli.enhance

    def load_network(ctx: Any, model: str, device: str) -> torch.nn.Module:
        raise AssertionError("the model was loaded for a port that is taken")

    monkeypatch.setattr(rave.cli.enhance, "_load_network", load_network)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = cli_with_net("--port", str(busy.getsockname()[1]))
    assert result.exit_code == 2 and "cannot listen on" in result.output, result.output
    unknown = cli_with_net("--host", "no-such-host.invalid")
    assert unknown.exit_code == 2 and "cannot listen on no-such-host.invalid" in unknown.output


def test_listening_beyond_this_machine_is_warned_about(cli_with_net) -> None:
    """``--host 0.0.0.0`` printed the addresses without a word that the page has no
    password and anyone on the network can use it."""
    result = cli_with_net("--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "every network interface" in warnings[0], result.output
    assert "password" in warnings[0]
    local = cli_with_net("--host", "127.0.0.1", "--port", "0")
    assert "warning" not in local.output, local.output


def test_ctrl_c_prints_one_line(cli_with_net) -> None:
    """It printed "stopping" and then "stopped"."""
    result = cli_with_net("--port", "0")
    after = result.output.split("(Ctrl-C stops)\n", 1)[1]
    assert len(after.strip().splitlines()) == 1 and "stopped" in after, result.output


# -- the page (headless Chromium) -----------------------------------------------------------


def _canvas_size(page: Any) -> tuple[int, int]:
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return tuple(page.evaluate("() => [$('view').width, $('view').height]"))


@pytest.mark.slow
def test_a_late_zoom_never_shows_one_photo_under_another(browser, light_half_net, tmp_path):
    """Zoom 100% on a photo, then select another before the region comes (the server was
    finishing a third photo): the region of the first was shown as the second."""
    with _serve(light_half_net) as served:
        page = _open_page(browser, served)
        _upload_in_page(page, tmp_path, {"large.png": _dark(900, 1200), "small.png": _dark()})
        page.locator(".thumb").nth(0).click()
        assert _canvas_size(page) == (1024, 768)  # the large one's preview
        busy = _hold_engine(served)
        page.click("#zoom")  # its region waits for the engine
        page.locator(".thumb").nth(1).click()
        assert _canvas_size(page) == (64, 48)
        served.engine.release.set()
        busy.join(30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("/view" in line for line in served.lines):
            time.sleep(0.1)
        page.wait_for_timeout(300)  # the region's answer has reached the page
        assert any("/view" in line and "-> 200" in line for line in served.lines), served.lines
        assert _canvas_size(page) == (64, 48)  # still the small photo's own pixels
        assert page.get_attribute("#zoom", "aria-pressed") == "false"
        page.context.close()


@pytest.mark.slow
def test_a_zoom_the_server_cannot_answer_says_so(browser, light_half_net, tmp_path):
    """With the server gone, Zoom 100% did nothing visible (an unhandled rejection)."""
    with _serve(light_half_net) as served:
        page = _open_page(browser, served)
        _upload_in_page(page, tmp_path, {"a.png": _dark()})
    # the server has stopped; the page is still open
    page.click("#zoom")
    page.wait_for_function("() => $('error').textContent.length > 0", timeout=10000)
    error = page.text_content("#error")
    assert error.startswith("a.png: ") and "did not answer" in error, error
    page.context.close()


@pytest.mark.slow
def test_a_preview_that_never_comes_says_the_server_did_not_answer(
    browser, light_half_net, tmp_path
):
    """The preview's request failing without an answer showed the browser's own words,
    "a.png: Failed to fetch", where every other such failure says what happened."""
    with _serve(light_half_net) as served:
        page = _open_page(browser, served)
        page.route("**/view", lambda route: route.abort())  # the connection fails
        Image.fromarray(_dark()).save(tmp_path / "a.png")
        page.set_input_files("#file", [str(tmp_path / "a.png")])
        page.wait_for_function("() => $('status').textContent.includes('1 failed')")
        error = page.text_content("#error")
        assert error.startswith("a.png: ") and "did not answer" in error, error
        page.context.close()


@pytest.mark.slow
def test_a_download_behind_a_photo_being_enhanced_says_it_waits(browser, light_half_net, tmp_path):
    """Download while another photo was being enhanced: nothing on the page said why the
    file did not come (it waits for the engine: minutes for a 24 MP photo)."""
    with _serve(light_half_net) as served:
        page = _open_page(browser, served)
        _upload_in_page(page, tmp_path, {"first.png": _dark()})
        served.engine.hold.set()
        Image.fromarray(_dark(seed=5)).save(tmp_path / "second.png")
        page.set_input_files("#file", [str(tmp_path / "second.png")])
        assert served.engine.started.wait(30)  # second.png is being enhanced
        page.wait_for_function("() => photos[1].state === 'enhancing'")
        page.locator(".thumb").nth(0).click()
        with page.expect_download(timeout=30000) as download:
            page.click("#download")
            page.wait_for_function(
                "() => $('status').textContent.includes('starts once')", timeout=5000
            )
            assert "second.png" in page.text_content("#status")
            served.engine.release.set()
        assert download.value.suggested_filename == "first_enhanced.png"
        page.wait_for_function("() => $('status').textContent.includes('2 photos: 2 done')")
        page.context.close()
