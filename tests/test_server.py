"""``rave serve``: the page, the enhance endpoint, and its refusals, over real HTTP."""

from __future__ import annotations

import io
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageCms

from rave.api import enhance_array
from rave.server import make_server


@pytest.fixture(scope="module")
def server(net) -> Iterator[str]:
    httpd = make_server(net, "127.0.0.1", 0, max_upload_bytes=200_000)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def _post(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _dark_photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.02, 0.35, 96)[None, :, None] * np.ones((64, 1, 3))
    return np.clip((ramp + rng.normal(0, 0.01, ramp.shape)) * 255, 0, 255).astype(np.uint8)


def test_page_is_served(server: str) -> None:
    with urllib.request.urlopen(server + "/", timeout=10) as response:
        page = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/html")
    assert "<title>rave" in page and "/enhance" in page


def test_enhance_returns_the_engines_result_with_metadata(server: str, net) -> None:
    photo = _dark_photo()
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG", icc_profile=profile)
    status, headers, body = _post(f"{server}/enhance?name=my%20dark.png", buffer.getvalue())
    assert status == 200
    assert headers["Content-Type"] == "image/png"
    assert 'filename="my_dark_enhanced.png"' in headers["Content-Disposition"]
    with Image.open(io.BytesIO(body)) as result:
        assert result.info.get("icc_profile") == profile
        pixels = np.asarray(result.convert("RGB"))
    # the same output as the Python API, and brighter than the input
    assert np.array_equal(pixels, enhance_array(net, photo, out_dtype=np.uint8))
    assert pixels.mean() > photo.mean() + 5


def test_bad_upload_gets_one_line_naming_it(server: str) -> None:
    status, _, body = _post(f"{server}/enhance?name=holiday.jpg", b"\xff\xd8 not really a jpeg")
    assert status == 400
    message = body.decode().strip()
    assert message.startswith("holiday.jpg: ") and "\n" not in message


def test_empty_and_oversized_uploads_are_refused(server: str) -> None:
    status, _, body = _post(f"{server}/enhance?name=a.png", b"")
    assert status == 400 and b"empty" in body
    status, _, body = _post(f"{server}/enhance?name=big.png", b"x" * 300_000)
    assert status == 413 and b"big.png" in body and b"upload limit" in body


def test_unknown_paths_are_404(server: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server + "/nothing", timeout=10)
    assert err.value.code == 404
    status, _, _ = _post(f"{server}/upload", b"abc")
    assert status == 404


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
