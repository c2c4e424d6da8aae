"""Leftovers of the metadata / API / download audit.

* EXIF PixelXDimension / PixelYDimension describe the result (turned upright, its size).
* Grey tensors go through the Python API and come back grey, as grey arrays do.
* A download server that trickles bytes is given up, with one clear line.

The network here is a seeded, untrained :class:`EnhancementNet`: the properties checked
(equal channels stay equal, metadata travels) hold for any weights, and no reference
material is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rave
from rave.io import read_photo, write_photo
from rave.io.metadata import (
    EXIF_IFD_TAG,
    PIXEL_X_DIMENSION_TAG,
    PIXEL_Y_DIMENSION_TAG,
    set_exif_pixel_dimensions,
)
from rave.network.enhancer import EnhancementNet
from rave.zoo import download as zoo_download

H, W = 30, 40


@pytest.fixture(scope="module")
def net() -> EnhancementNet:
    torch.manual_seed(0)
    return EnhancementNet().eval()


def _dim_photo(height: int = H, width: int = W) -> np.ndarray:
    """A dim, varied (H, W, 3) uint8 picture."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(20, 90, width)[None, :, None] * np.linspace(0.5, 1, height)[:, None, None]
    return np.clip(ramp + rng.normal(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)


# --- EXIF PixelXDimension / PixelYDimension ------------------------------------------------


def _exif(orientation: int, x: int, y: int) -> bytes:
    """An EXIF block with an orientation and the Exif sub-IFD's picture size (Pillow picks
    SHORT for values up to 65535, LONG above)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x0110] = "Test camera"  # Model: a tag that must survive
    exif[EXIF_IFD_TAG] = {PIXEL_X_DIMENSION_TAG: x, PIXEL_Y_DIMENSION_TAG: y, 0x829A: 0.01}
    return exif.tobytes()


def _stored_size(path: Path) -> tuple[int, int]:
    """The written file's EXIF (PixelXDimension, PixelYDimension), as Pillow reads them."""
    with Image.open(path) as image:
        sub_ifd = image.getexif().get_ifd(EXIF_IFD_TAG)
    return sub_ifd[PIXEL_X_DIMENSION_TAG], sub_ifd[PIXEL_Y_DIMENSION_TAG]


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".webp"])
def test_turned_upright_result_says_its_own_width_and_height(
    net: EnhancementNet, tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / "camera.jpg"
    # Stored 40 x 30, orientation 6 (turn 90 degrees clockwise): the photo is 30 x 40.
    Image.fromarray(_dim_photo()).save(source, quality=95, exif=_exif(6, W, H))
    target = tmp_path / f"enhanced{suffix}"
    rave.Enhancer(net, device="cpu", tile=None).enhance_file(source, target)
    with Image.open(target) as result:
        size = result.size
        exif = result.getexif()
    assert size == (H, W)
    assert _stored_size(target) == size
    assert exif.get(0x0112, 1) == 1 and exif[0x0110] == "Test camera"


def test_size_the_camera_wrote_is_replaced_by_the_pictures(tmp_path: Path) -> None:
    """LONG-typed values (a 70000-pixel-wide claim) that are not this picture's size."""
    source = tmp_path / "resized.jpg"
    Image.fromarray(_dim_photo()).save(source, exif=_exif(1, 70000, 4000))
    photo = read_photo(source)
    target = tmp_path / "out.png"
    write_photo(target, photo.pixels, exif=photo.exif)
    assert _stored_size(target) == (W, H)
    # Read back too: Photo.exif already describes Photo.pixels.
    assert _stored_size(source) == (70000, 4000)
    written = tmp_path / "check.jpg"
    Image.fromarray(photo.pixels).save(written, exif=photo.exif)
    assert _stored_size(written) == (W, H)


def test_only_the_two_values_change_in_the_exif_block() -> None:
    original = _exif(6, W, H)
    patched = set_exif_pixel_dimensions(original, 1234, 567)
    assert len(patched) == len(original)
    changed = [i for i, (a, b) in enumerate(zip(original, patched, strict=True)) if a != b]
    assert 0 < len(changed) <= 4  # two SHORT values, two bytes each
    parsed = Image.Exif()
    parsed.load(patched)
    assert parsed.get_ifd(EXIF_IFD_TAG)[PIXEL_X_DIMENSION_TAG] == 1234
    assert parsed.get_ifd(EXIF_IFD_TAG)[PIXEL_Y_DIMENSION_TAG] == 567
    assert set_exif_pixel_dimensions(b"not exif", 1, 1) == b"not exif"


# --- grey tensors and arrays --------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, H, W), (2, 1, H, W), (H, W)])
def test_grey_tensor_comes_back_grey_as_its_rgb_replication(
    net: EnhancementNet, shape: tuple[int, ...]
) -> None:
    grey = torch.from_numpy(_dim_photo()[..., 0] / 255).float()
    grey = grey.expand(*shape).contiguous()
    result = rave.enhance(grey, net, tile=None, strength=0.5)
    assert result.shape == grey.shape and result.dtype == grey.dtype
    assert not torch.equal(result, grey)  # it was enhanced
    # The reference: the same picture as RGB, three equal channels.
    channels = grey.reshape(-1, 1, H, W).expand(-1, 3, -1, -1).contiguous()
    rgb = rave.enhance(channels, net, tile=None, strength=0.5)
    # Equal channels stay equal: the light map is one channel, I / L**S each channel.
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 1], rgb[:, 2])
    torch.testing.assert_close(result.reshape(-1, 1, H, W), rgb[:, :1], rtol=0, atol=1e-6)


def test_grey_tensor_keeps_dtype_and_an_empty_batch(net: EnhancementNet) -> None:
    grey = torch.full((1, 1, H, W), 0.2, dtype=torch.float64)
    assert rave.enhance(grey, net, tile=None).dtype == torch.float64
    empty = torch.empty((0, 1, H, W))
    assert rave.enhance(empty, net).shape == (0, 1, H, W)


def test_tensors_of_other_channel_counts_are_refused_by_layout(net: EnhancementNet) -> None:
    with pytest.raises(ValueError, match=r"grey \(H, W\), \(1, H, W\)"):
        rave.enhance(torch.zeros(2, H, W), net)


@pytest.mark.parametrize(
    "image", [np.zeros((H, W), bool), torch.zeros((1, H, W), dtype=torch.bool)]
)
def test_bool_pixels_are_a_type_error_naming_a_fix(net: EnhancementNet, image: object) -> None:
    with pytest.raises(TypeError, match=r"bool .* not image samples"):
        rave.enhance(image, net)


# --- downloads that trickle ---------------------------------------------------------------

_PAYLOAD = bytes(range(256)) * 40  # 10 KiB


def _server(pieces: list[tuple[float, int]]) -> ThreadingHTTPServer:
    """A local server that sends ``_PAYLOAD`` as ``(pause before, bytes)`` pieces."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(_PAYLOAD)))
            self.end_headers()
            sent = 0
            try:
                for pause, count in pieces:
                    time.sleep(pause)
                    self.wfile.write(_PAYLOAD[sent : sent + count])
                    self.wfile.flush()
                    sent += count
            except OSError:  # the client gave up: what the test wants
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def serve_pieces() -> Iterator:
    servers: list[ThreadingHTTPServer] = []

    def start(pieces: list[tuple[float, int]]) -> str:
        servers.append(_server(pieces))
        return f"http://127.0.0.1:{servers[-1].server_address[1]}/model.pth"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_trickling_server_is_given_up_in_one_line(serve_pieces, tmp_path: Path) -> None:
    url = serve_pieces([(0.0, 100)] + [(0.02, 1)] * 500)  # 50 bytes/s after a start
    digest = hashlib.sha256(_PAYLOAD).hexdigest()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="stalled") as caught:
        zoo_download.download_file(
            url, tmp_path / "model.pth", digest, progress=False, stall_window_s=0.5,
            min_rate=1000,
        )  # fmt: skip
    assert time.monotonic() - started < 3  # not the 10 s the trickle would take
    assert "\n" not in str(caught.value) and url in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_slow_but_steady_download_with_a_pause_completes(serve_pieces, tmp_path: Path) -> None:
    # 1 KiB every 0.05 s (20 KiB/s), with one 0.2 s pause: above 5 KiB/s over any 0.5 s.
    pieces = [(0.05, 1024)] * 5 + [(0.2, 1024)] + [(0.05, 1024)] * 4
    url = serve_pieces(pieces)
    digest = hashlib.sha256(_PAYLOAD).hexdigest()
    path = zoo_download.download_file(
        url, tmp_path / "model.pth", digest, progress=False, stall_window_s=0.5, min_rate=5000
    )
    assert path.read_bytes() == _PAYLOAD


def test_fetch_reports_a_stalled_download_as_unavailable(
    serve_pieces, monkeypatch: pytest.MonkeyPatch, isolated_model_cache: Path
) -> None:
    from rave import zoo

    monkeypatch.delenv("RAVE_OFFLINE", raising=False)
    monkeypatch.setattr(zoo_download, "_STALL_WINDOW_S", 0.5)
    monkeypatch.setattr(zoo_download, "_MIN_RATE", 1000.0)
    url = serve_pieces([(0.0, 100)] + [(0.02, 1)] * 500)
    info = zoo.get_model_info("rave-paired")
    digest = hashlib.sha256(_PAYLOAD).hexdigest()
    info = dataclasses.replace(info, url=url, sha256=digest, size=len(_PAYLOAD))
    with pytest.raises(zoo.ModelUnavailableError, match="stalled") as caught:
        zoo_download.fetch(info, progress=False)
    assert "\n" not in str(caught.value)
    assert list(isolated_model_cache.iterdir()) == []
