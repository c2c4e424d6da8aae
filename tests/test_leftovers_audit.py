"""Leftovers of the metadata / API / download audit.

* EXIF PixelXDimension / PixelYDimension describe the result (turned upright, its size).
* Grey tensors go through the Python API and come back grey, as grey arrays do.
* A download server that trickles bytes is given up, with one clear line.
* A PNG's sRGB / gAMA / cHRM chunks reach PNG results as they were, other formats as an
  equivalent ICC profile (checked against published colour matrices through littleCMS).

The network here is a seeded, untrained :class:`EnhancementNet`: the properties checked
(equal channels stay equal, metadata travels) hold for any weights, and no reference
material is needed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
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
    png_chunk,
    png_header_end,
    set_exif_pixel_dimensions,
)
from rave.io.raw import srgb_icc_profile
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


def test_xmp_repeating_the_size_is_turned_with_the_picture(
    net: EnhancementNet, tmp_path: Path
) -> None:
    source = tmp_path / "edited.jpg"
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="6" '
        b'exif:PixelXDimension="40" exif:PixelYDimension="30" xmp:Rating="4"/>'
        b"</rdf:RDF></x:xmpmeta>"
    )
    Image.fromarray(_dim_photo()).save(source, exif=_exif(6, W, H), xmp=xmp)
    target = tmp_path / "enhanced.jpg"
    rave.Enhancer(net, device="cpu", tile=None).enhance_file(source, target)
    with Image.open(target) as result:
        written = result.info["xmp"]
    assert b'exif:PixelXDimension="30" exif:PixelYDimension="40"' in written
    assert b'tiff:Orientation="1"' in written and b'xmp:Rating="4"' in written


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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_grey_array_is_its_rgb_replication_too(net: EnhancementNet, dtype: type) -> None:
    """(H, W) arrays were taken already: the same property, at every sample type."""
    grey8 = _dim_photo()[..., 0]
    grey = {np.uint8: grey8, np.uint16: grey8.astype(np.uint16) * 257}.get(
        dtype, (grey8 / 255).astype(np.float32)
    )
    result = rave.enhance(grey, net, tile=None, strength=0.5)
    assert result.shape == grey.shape and result.dtype == grey.dtype
    rgb = rave.enhance(np.repeat(grey[:, :, None], 3, axis=2), net, tile=None, strength=0.5)
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 1])
    np.testing.assert_array_equal(rgb[:, :, 1], rgb[:, :, 2])
    # The same values up to float noise of two memory layouts (a code where it rounds).
    tolerance = 1e-6 if dtype == np.float32 else 1
    np.testing.assert_allclose(
        result.astype(np.float64), rgb[:, :, 0].astype(np.float64), rtol=0, atol=tolerance
    )


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


# --- PNG colour chunks (sRGB / gAMA / cHRM) without an ICC profile ----------------------

# Adobe RGB (1998)'s primaries, D65 white, gAMA 1/2.2: a wide-gamut PNG without a profile.
_ADOBE_CHRM = struct.pack(">8I", 31270, 32900, 64000, 33000, 21000, 71000, 15000, 6000)
_GAMA_22 = struct.pack(">I", 45455)
_LINEAR = struct.pack(">I", 100000)
# Published matrices (Lindbloom): Adobe RGB (D65) to XYZ, and XYZ to linear sRGB (D65).
_ADOBE_TO_XYZ = np.array(
    [[0.5767309, 0.1855540, 0.1881852], [0.2973769, 0.6273491, 0.0752741],
     [0.0270343, 0.0706872, 0.9911085]]
)  # fmt: skip
_XYZ_TO_SRGB = np.array(
    [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560],
     [0.0556434, -0.2040259, 1.0572252]]
)  # fmt: skip


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    """The sRGB tone curve (IEC 61966-2-1), [0, 1] -> [0, 255]."""
    linear = np.clip(linear, 0, 1)
    return 255 * np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def _chunks(path: Path) -> dict[bytes, list[bytes]]:
    """Every chunk of a PNG file by type, read straight from its bytes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found: dict[bytes, list[bytes]] = {}
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        found.setdefault(kind, []).append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    return found


def _png_with_chunks(path: Path, pixels: np.ndarray, chunks: list[tuple[bytes, bytes]]) -> None:
    """A PNG of ``pixels`` (any depth, through OpenCV) with ``chunks`` after IHDR."""
    import cv2

    if pixels.ndim == 3:  # OpenCV writes BGR(A); grey + alpha is not a layout it writes
        order = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}[pixels.shape[2]]
        pixels = cv2.cvtColor(pixels, order)
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    data = encoded.tobytes()
    end = png_header_end(data)
    extra = b"".join(png_chunk(kind, body) for kind, body in chunks)
    path.write_bytes(data[:end] + extra + data[end:])


def _to_srgb(path: Path) -> np.ndarray:
    """A written photo's pixels converted to sRGB through its embedded profile (littleCMS)."""
    from io import BytesIO

    from PIL import ImageCms

    with Image.open(path) as image:
        profile = image.info.get("icc_profile")
        assert profile, "no colour profile: viewers would take the pixels as sRGB"
        source = ImageCms.ImageCmsProfile(BytesIO(profile))
        srgb = ImageCms.createProfile("sRGB")
        converted = ImageCms.profileToProfile(image.convert("RGB") if image.mode != "L" else image,
                                              source, srgb, outputMode="RGB")  # fmt: skip
        return np.asarray(converted).astype(np.float64)


def _decoded(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.float64)


@pytest.mark.parametrize(
    ("layout", "chunks"),
    [
        ("rgb8", [(b"cHRM", _ADOBE_CHRM), (b"gAMA", _GAMA_22)]),
        ("grey8", [(b"gAMA", _LINEAR)]),
        ("rgba8", [(b"sRGB", b"\x01"), (b"gAMA", _GAMA_22)]),
        ("rgb16", [(b"cHRM", _ADOBE_CHRM), (b"gAMA", _GAMA_22)]),
        ("grey16", [(b"gAMA", _LINEAR), (b"cHRM", _ADOBE_CHRM)]),
    ],
)
def test_png_result_keeps_the_sources_colour_chunks(
    net: EnhancementNet, tmp_path: Path, layout: str, chunks: list[tuple[bytes, bytes]]
) -> None:
    rgb = _dim_photo()
    pixels = {
        "rgb8": rgb,
        "grey8": rgb[:, :, 0],
        "rgba8": np.dstack((rgb, np.full((H, W), 200, np.uint8))),
        "rgb16": rgb.astype(np.uint16) * 257,
        "grey16": rgb[:, :, 0].astype(np.uint16) * 257,
    }[layout]
    source = tmp_path / "source.png"
    _png_with_chunks(source, pixels, chunks)
    target = tmp_path / "enhanced.png"
    rave.Enhancer(net, device="cpu", tile=None).enhance_file(source, target)
    written = _chunks(target)
    for kind, body in chunks:
        assert written.get(kind) == [body], kind
    assert b"iCCP" not in written  # the source's own description, nothing else
    assert _decoded(target).shape == pixels.shape


def test_16_bit_grey_alpha_png_result_keeps_the_chunks(tmp_path: Path) -> None:
    """The hand-written 16-bit grey + alpha encoder takes them too."""
    pixels = np.dstack((_dim_photo()[:, :, 0], np.full((H, W), 99, np.uint8))).astype(np.uint16)
    photo_pixels = pixels * 257
    source = tmp_path / "source.png"
    write_photo(source, photo_pixels)
    data = source.read_bytes()
    end = png_header_end(data)
    source.write_bytes(data[:end] + png_chunk(b"gAMA", _LINEAR) + data[end:])
    photo = read_photo(source)
    target = tmp_path / "out.png"
    write_photo(target, photo.pixels, icc_profile=photo.icc_profile)
    assert _chunks(target).get(b"gAMA") == [_LINEAR] and b"iCCP" not in _chunks(target)


@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".webp", ".heic"])
def test_other_formats_get_the_colour_space_as_a_profile(tmp_path: Path, suffix: str) -> None:
    """Adobe RGB primaries, gamma 2.2: the result's profile gives the colours the PNG's
    chunks give, by the published Adobe RGB and sRGB matrices."""
    colours = np.array([[128, 100, 90], [60, 140, 200], [200, 180, 40], [30, 30, 30]], np.uint8)
    pixels = np.repeat(np.repeat(colours[None], 16, axis=0), 16, axis=1)  # flat patches
    source = tmp_path / "adobe.png"
    _png_with_chunks(source, pixels, [(b"cHRM", _ADOBE_CHRM), (b"gAMA", _GAMA_22)])
    photo = read_photo(source)
    target = tmp_path / f"out{suffix}"
    try:
        write_photo(target, photo.pixels, icc_profile=photo.icc_profile, quality=100)
    except ValueError as err:
        pytest.skip(str(err))  # HEIC without pillow-heif
    if suffix == ".heic":
        from rave.io.heif import register_heif

        register_heif()
    stored = _decoded(target)  # what the file holds (lossy formats: near the source)
    linear_adobe = (stored / 255) ** (100000 / 45455)
    expected = _srgb_encode(linear_adobe @ (_XYZ_TO_SRGB @ _ADOBE_TO_XYZ).T)
    shown = _to_srgb(target)
    for index in range(4):
        patch = (slice(4, 12), slice(16 * index + 4, 16 * index + 12))  # off the edges
        assert np.abs(shown[patch] - expected[patch]).max() <= 2, colours[index]


def test_grey_linear_png_as_lossless_webp_is_converted_to_srgb(tmp_path: Path) -> None:
    """WebP stores grey as RGB, so the grey profile is converted: linear 50 is sRGB 122."""
    levels = np.array([0, 50, 128, 255], np.uint8)
    pixels = np.repeat(np.repeat(levels[None], 8, axis=0), 8, axis=1)
    source = tmp_path / "linear.png"
    _png_with_chunks(source, pixels, [(b"gAMA", _LINEAR)])
    photo = read_photo(source)
    target = tmp_path / "out.webp"
    notes = write_photo(target, photo.pixels, icc_profile=photo.icc_profile, lossless=True)
    assert any("converted to sRGB" in note for note in notes)
    expected = _srgb_encode(levels / 255)
    shown = _decoded(target)[4, 8 * np.arange(4) + 4, 0]
    assert np.abs(shown - expected).max() <= 1


def test_srgb_chunk_stays_an_srgb_chunk_and_bmp_says_what_it_loses(tmp_path: Path) -> None:
    source = tmp_path / "srgb.png"
    _png_with_chunks(source, _dim_photo(), [(b"sRGB", b"\x00")])
    photo = read_photo(source)
    assert write_photo(tmp_path / "out.bmp", photo.pixels, icc_profile=photo.icc_profile) == []
    write_photo(tmp_path / "out.png", photo.pixels, icc_profile=photo.icc_profile)
    assert _chunks(tmp_path / "out.png").get(b"sRGB") == [b"\x00"]
    write_photo(tmp_path / "out.jpg", photo.pixels, icc_profile=photo.icc_profile, quality=100)
    assert np.abs(_to_srgb(tmp_path / "out.jpg") - _decoded(tmp_path / "out.jpg")).max() <= 1
    wide = tmp_path / "wide.png"
    _png_with_chunks(wide, _dim_photo(), [(b"cHRM", _ADOBE_CHRM), (b"gAMA", _GAMA_22)])
    photo = read_photo(wide)
    notes = write_photo(tmp_path / "wide.bmp", photo.pixels, icc_profile=photo.icc_profile)
    assert notes == ["ICC profile not written: BMP holds none, so viewers show the colours as sRGB"]


def test_pil_image_keeps_its_png_colour_description(net: EnhancementNet, tmp_path: Path) -> None:
    source = tmp_path / "adobe.png"
    _png_with_chunks(source, _dim_photo(), [(b"cHRM", _ADOBE_CHRM), (b"gAMA", _GAMA_22)])
    with Image.open(source) as image:
        enhanced = rave.enhance(image, net, tile=None)
        for key in ("gamma", "chromaticity"):
            assert enhanced.info[key] == image.info[key]


@pytest.mark.parametrize(
    ("chunk", "named"),
    [
        ((b"gAMA", struct.pack(">I", 0)), "gAMA 0"),
        # A white point with y = 0.00001: its XYZ is beyond what a profile holds.
        ((b"cHRM", struct.pack(">8I", 31270, 1, 64000, 33000, 30000, 60000, 15000, 6000)),
         "cHRM 31270 1 64000"),
        ((b"cHRM", struct.pack(">8I", 31270, 32900, 10000, 10000, 20000, 20000, 30000, 30000)),
         "cHRM 31270 32900 10000"),  # primaries on a line
    ],
)  # fmt: skip
def test_chunks_that_describe_no_colour_space_are_dropped_with_a_note(
    tmp_path: Path, chunk: tuple[bytes, bytes], named: str
) -> None:
    source = tmp_path / "bad.png"
    _png_with_chunks(source, _dim_photo(), [chunk])
    photo = read_photo(source)  # read all the same
    assert photo.icc_profile is None
    assert any(f"PNG colour chunks dropped ({named}" in note for note in photo.notes)
    write_photo(tmp_path / "out.jpg", photo.pixels, icc_profile=photo.icc_profile)


def test_an_iccp_profile_wins_over_the_chunks_and_only_rebuilt_profiles_turn_back(
    tmp_path: Path,
) -> None:
    from rave.io.png_colour import PngColour, png_colour_in_profile, png_colour_profile

    srgb = srgb_icc_profile()
    assert srgb is not None
    source = tmp_path / "both.png"
    Image.fromarray(_dim_photo()).save(source, icc_profile=srgb, pnginfo=_pnginfo(_GAMA_22))
    assert read_photo(source).icc_profile == srgb  # iCCP overrides gAMA (PNG specification)
    built = png_colour_profile(PngColour(gamma=45455), grey=False)
    assert built is not None and png_colour_in_profile(built) == PngColour(gamma=45455)
    altered = built[:-1] + bytes([built[-1] ^ 1])  # same description, another curve
    assert png_colour_in_profile(altered) is None
    write_photo(tmp_path / "altered.png", _dim_photo(), icc_profile=altered)
    assert b"iCCP" in _chunks(tmp_path / "altered.png")


def _pnginfo(gamma: bytes):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"gAMA", gamma)
    return info


def test_float_tiff_reads_as_its_own_samples_in_every_float_view(tmp_path: Path) -> None:
    # Training and rave residual read through rave.io.views; a float TIFF (which rave enhance
    # writes for float input) used to be refused there ("expected uint8 or uint16 samples").
    import tifffile

    from rave.io import read_photo
    from rave.io.views import read_float_rgb, read_tensor

    samples = np.linspace(0.0, 1.0, 5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, samples)
    assert read_photo(path).bit_depth == 32
    np.testing.assert_array_equal(read_float_rgb(path), samples)
    np.testing.assert_array_equal(read_tensor(path).permute(1, 2, 0).numpy(), samples)
