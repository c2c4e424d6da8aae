"""``rave serve``: the page, enhance/view/download/zip, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from rave.api import enhance_array
from rave.inference import predict_light_map
from rave.server import make_server

_SERVED_NET: list = []  # the network the module's server runs


@pytest.fixture(scope="module")
def server(net) -> Iterator[str]:
    _SERVED_NET[:] = [net]
    lines: list[str] = []
    httpd = make_server(net, "127.0.0.1", 0, max_upload_bytes=200_000, log_line=lines.append)
    httpd.lines = lines  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.stop()


def _request(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _upload(server: str, name: str, data: bytes) -> dict:
    status, headers, body = _request(f"{server}/enhance?name={urllib.parse.quote(name)}", data)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def _dark_photo(height: int = 64, width: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.02, 0.35, width)[None, :, None] * np.ones((height, 1, 3))
    return np.clip((ramp + rng.normal(0, 0.01, ramp.shape)) * 255, 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _decode_view(body: bytes) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    assert body[:8] == b"RAVEVIEW"
    width, height, *box = struct.unpack("<6I", body[8:32])
    rgb = np.frombuffer(body, np.uint8, width * height * 3, 32).reshape(height, width, 3)
    codes = np.frombuffer(body, "<u2", width * height, 32 + width * height * 3)
    light = 2.0 ** (codes.reshape(height, width) / 2048.0 - 16.0)
    return rgb, light, tuple(box)


def test_page_is_served_offline(server: str) -> None:
    status, headers, body = _request(server + "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "<title>rave" in page and "/enhance" in page
    assert "http://" not in page and "https://" not in page  # nothing from a CDN


def test_the_file_chooser_offers_every_photo_rave_reads(server: str) -> None:
    from rave.io.formats import HEIF_SUFFIXES, IMAGE_SUFFIXES, RAW_SUFFIXES

    page = _request(server + "/")[2].decode()
    accept = re.search(r'id="file"[^>]* accept="([^"]*)"', page)
    assert accept is not None
    offered = set(accept.group(1).split(","))
    # "image/*" alone leaves out HEIC and camera RAW where the system has no MIME type for them
    assert offered >= HEIF_SUFFIXES | RAW_SUFFIXES and offered >= IMAGE_SUFFIXES
    assert "HEIC" in page and "RAW" in page  # and the help line says so


def test_download_at_strength_one_is_the_engines_result_with_metadata(server: str, net) -> None:
    photo = _dark_photo()
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    info = _upload(server, "café ☀.png", _encoded(photo, "PNG", icc_profile=profile))
    assert (info["name"], info["format"], info["width"], info["height"]) == (
        "café ☀.png", "png", 96, 64,
    )  # fmt: skip
    status, headers, body = _request(f"{server}/result/{info['id']}/download?strength=1")
    assert status == 200 and headers["Content-Type"] == "image/png"
    disposition = headers["Content-Disposition"]
    assert 'filename="caf_enhanced.png"' in disposition  # ASCII fallback
    assert "filename*=UTF-8''caf%C3%A9%20%E2%98%80_enhanced.png" in disposition
    with Image.open(io.BytesIO(body)) as result:
        assert result.info.get("icc_profile") == profile
        pixels = np.asarray(result.convert("RGB"))
    assert np.array_equal(pixels, enhance_array(net, photo, out_dtype=np.uint8))
    assert pixels.mean() > photo.mean() + 5


def test_strength_download_is_computed_from_the_kept_light_map(server: str, net) -> None:
    photo = _dark_photo()
    info = _upload(server, "a.png", _encoded(photo, "PNG"))
    for strength in ("0", "0.5", "2"):
        status, _, body = _request(f"{server}/result/{info['id']}/download?strength={strength}")
        assert status == 200
        got = np.asarray(Image.open(io.BytesIO(body)))
        assert np.array_equal(got, enhance_array(net, photo, strength=float(strength)))
    status, _, body = _request(f"{server}/result/{info['id']}/download?strength=-1")
    assert status == 400 and b"strength" in body


def test_view_holds_the_preview_and_the_light_map(server: str, net) -> None:
    photo = _dark_photo()
    info = _upload(server, "v.png", _encoded(photo, "PNG"))
    status, _, body = _request(f"{server}/result/{info['id']}/view")
    assert status == 200
    rgb, light, box = _decode_view(body)
    assert box == (0, 0, 96, 64) and np.array_equal(rgb, photo)
    expected = predict_light_map(net, torch.from_numpy(photo).permute(2, 0, 1)[None])[0, 0]
    np.testing.assert_allclose(light, expected.numpy(), rtol=1e-3)
    # a region at 100%
    status, _, body = _request(
        f"{server}/result/{info['id']}/view?left=10&top=5&right=42&bottom=37&max=2048"
    )
    rgb, _, box = _decode_view(body)
    assert box == (10, 5, 42, 37) and np.array_equal(rgb, photo[5:37, 10:42])
    status, _, _ = _request(f"{server}/result/{info['id']}/view?left=0&top=0&right=500&bottom=5")
    assert status == 400


def test_sixteen_bit_and_tiff_get_previews(server: str) -> None:
    wide = (_dark_photo().astype(np.uint16) * 257 + 100).astype(np.uint16)
    import cv2

    ok, png16 = cv2.imencode(".png", wide[:, :, ::-1])
    assert ok
    for name, data in (("deep.png", png16.tobytes()), ("t.tif", _encoded(_dark_photo(), "TIFF"))):
        info = _upload(server, name, data)
        rgb, _, _ = _decode_view(_request(f"{server}/result/{info['id']}/view")[2])
        assert rgb.shape == (64, 96, 3) and rgb.std() > 1
    status, _, body = _request(f"{server}/result/{info['id']}/download")
    assert status == 200
    assert Image.open(io.BytesIO(body)).format == "TIFF"


def test_zip_holds_every_result_at_its_strength(server: str, net) -> None:
    photo = _dark_photo()
    first = _upload(server, "same.png", _encoded(photo, "PNG"))
    second = _upload(server, "same.png", _encoded(photo, "PNG"))
    status, headers, body = _request(
        f"{server}/zip?items={first['id']}:0.5,{second['id']}:0"
    )  # fmt: skip
    assert status == 200 and headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as bundle:
        names = bundle.namelist()
        assert names == ["same_enhanced.png", "same_enhanced (2).png"]
        first_pixels = np.asarray(Image.open(io.BytesIO(bundle.read(names[0]))))
        second_pixels = np.asarray(Image.open(io.BytesIO(bundle.read(names[1]))))
    assert np.array_equal(first_pixels, enhance_array(net, photo, strength=0.5))
    assert np.array_equal(second_pixels, photo)  # strength 0: the input
    status, _, _ = _request(f"{server}/zip?items=nonexistent:1")
    assert status == 410


def test_notes_reach_the_json_and_names_never_split_headers(server: str) -> None:
    frames = [Image.fromarray(_dark_photo()), Image.fromarray(_dark_photo()[::-1])]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    evil = "x\r\nX-Evil: 1\r\n\r\nbody.tif"
    info = _upload(server, evil, buffer.getvalue())
    assert any("first of 2 frames" in note for note in info["notes"])
    status, headers, _ = _request(f"{server}/result/{info['id']}/download")
    assert status == 200 and "X-Evil" not in headers
    assert "\r" not in headers["Content-Disposition"] and "\n" not in headers["Content-Disposition"]


def test_bad_upload_gets_one_line_naming_it(server: str) -> None:
    status, _, body = _request(f"{server}/enhance?name=holiday.jpg", b"\xff\xd8 not a jpeg")
    assert status == 400
    message = body.decode().strip()
    assert message.startswith("holiday.jpg: ") and "\n" not in message


def test_empty_and_oversized_uploads_are_refused(server: str) -> None:
    status, _, body = _request(f"{server}/enhance?name=a.png", b"")
    assert status == 400 and b"empty" in body
    status, _, body = _request(f"{server}/enhance?name=big.png", b"x" * 300_000)
    assert status == 413 and b"big.png" in body and b"upload limit" in body


def test_unknown_paths_are_404_and_every_request_is_logged(server: str) -> None:
    status, _, _ = _request(server + "/nothing")
    assert status == 404
    status, _, _ = _request(f"{server}/upload", b"abc")
    assert status == 404


def test_one_log_line_per_request_with_name_size_time_result(net) -> None:
    lines: list[str] = []
    httpd = make_server(net, "127.0.0.1", 0, log_line=lines.append)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}"
        _upload(url, "evil\x1b[2Jname.png", _encoded(_dark_photo(), "PNG"))
        _request(url + "/missing")
    finally:
        httpd.stop()
    assert len(lines) == 2, lines
    assert "POST /enhance" in lines[0] and "-> 200" in lines[0] and " s" in lines[0]
    assert "96x64 png" in lines[0] and "\\x1b[2J" in lines[0] and "\x1b" not in lines[0]
    assert "GET /missing" in lines[1] and "-> 404" in lines[1]


def test_cli_reports_a_busy_port_in_one_line() -> None:
    import socket

    from click.testing import CliRunner

    from rave.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_any_address_prints_addresses_a_browser_can_open() -> None:
    from rave.cli.serve import _addresses

    urls = _addresses("0.0.0.0", 8123)
    assert urls[0] == "http://127.0.0.1:8123/"
    assert all("0.0.0.0" not in url for url in urls)
    assert _addresses("::1", 80) == ["http://[::1]:80/"]


def test_server_writes_through_the_same_session_as_rave_enhance(server: str, tmp_path) -> None:
    """The page's download and `rave enhance` are one pipeline (rave.Enhancer.enhance_file):
    what the CLI keeps (XMP, resolution) the download keeps, and a float TIFF stays float
    (before, the server wrote its own files and dropped both)."""
    photo = _dark_photo()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    jpeg = _encoded(photo, "JPEG", quality=95, dpi=(300, 300), xmp=xmp)
    info = _upload(server, "with-xmp.jpg", jpeg)
    status, _, body = _request(f"{server}/result/{info['id']}/download?strength=0.7")
    assert status == 200
    (tmp_path / "in.jpg").write_bytes(jpeg)
    rave_enhance_output = tmp_path / "out.jpg"
    from rave.session import Enhancer

    # the server's Enhancer, applied as `rave enhance --strength 0.7` would
    httpd_enhancer = Enhancer(_SERVED_NET[0], tile="auto")
    httpd_enhancer.enhance_file(tmp_path / "in.jpg", rave_enhance_output, strength=0.7)
    with Image.open(io.BytesIO(body)) as served, Image.open(rave_enhance_output) as cli:
        assert served.info.get("xmp") == cli.info.get("xmp") and xmp in served.info["xmp"]
        assert tuple(round(v) for v in served.info["dpi"]) == (300, 300)
        assert np.array_equal(np.asarray(served), np.asarray(cli))

    tifffile = pytest.importorskip("tifffile")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, (photo / 255.0).astype(np.float32), photometric="rgb")
    info = _upload(server, "float.tif", buffer.getvalue())
    status, _, body = _request(f"{server}/result/{info['id']}/download")
    assert status == 200
    result = tifffile.imread(io.BytesIO(body))
    assert result.dtype == np.float32 and result.shape == photo.shape


def test_the_format_note_describes_the_content_not_the_name(server: str) -> None:
    """The download's format comes from the decoded content; so does the note saying the
    format changed (it came from the name: a JPEG named photo.gif was noted 'GIF input
    written as PNG' and downloaded as a JPEG)."""
    jpeg = _encoded(_dark_photo(), "JPEG", quality=95)
    gif = _encoded(_dark_photo(), "GIF")
    for name, data, fmt, gif_note in (
        ("photo.gif", jpeg, "jpg", False),
        ("x.gif", gif, "png", True),
        ("x.jpg", gif, "png", True),
        ("x", gif, "png", True),
    ):
        info = _upload(server, name, data)
        assert info["format"] == fmt, (name, info)
        notes = [note for note in info["notes"] if "GIF" in note]
        assert notes == (["GIF input written as PNG (rave does not write GIF)"] if gif_note else [])
        status, _, body = _request(f"{server}/result/{info['id']}/download")
        assert status == 200
        assert Image.open(io.BytesIO(body)).format == {"jpg": "JPEG", "png": "PNG"}[fmt]


_STORE_CHILD = """
import os, signal, sys
from rave.server.store import ResultStore
store = ResultStore(1 << 20)
_, folder = store.new_folder()
(folder / "upload").write_bytes(b"a photo")
print(store._root, flush=True)
if sys.argv[1] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # alive until the test closes stdin
store.close()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only")
def test_folders_of_killed_servers_are_removed_and_running_ones_kept(tmp_path, monkeypatch) -> None:
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    from rave.server.store import ResultStore

    env = {**os.environ, "TMPDIR": str(tmp_path)}

    def start(how: str) -> tuple[subprocess.Popen[str], Path]:
        child = subprocess.Popen(
            [sys.executable, "-c", _STORE_CHILD, how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        return child, Path(child.stdout.readline().strip())

    running, running_folder = start("running")
    killed, killed_folder = start("killed")
    assert killed.wait(60) == -9
    unrelated = tmp_path / "rave-serve-not-a-server"  # no owner file: not ours to judge
    unrelated.mkdir()
    assert killed_folder.is_dir() and killed_folder.parent == tmp_path
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = ResultStore(1 << 20)
    try:
        assert not killed_folder.exists()
        assert store.removed_stale == 1
        assert any(running_folder.rglob("upload"))  # the running server's photo is kept
        assert unrelated.is_dir()
    finally:
        store.close()
        assert running.stdin is not None
        running.stdin.close()
        running.wait(60)
    assert not running_folder.exists()  # removed by its own server, as always
