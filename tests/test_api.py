"""``rave.enhance``: every input kind comes back as the same kind, with the right pixels.

The reference is the network applied directly to the whole float image
(``apply_light_map(x, net(x))``), quantised here with ``round(x * 255)`` or
``round(x * 65535)``; integer results may differ from it by one code where float rounding
of the tiled engine lands on the other side of a half.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rave
from rave import api
from rave.network.enhancer import EnhancementNet, apply_light_map

H, W = 30, 40


@pytest.fixture(autouse=True)
def empty_model_cache():
    api.clear_model_cache()
    yield
    api.clear_model_cache()


def _dim_rgb(seed: int = 0) -> np.ndarray:
    """A dim, smooth-plus-noise photo in [0, 1], (H, W, 3) float64."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.05, 0.4, W)[None, :, None] * np.linspace(0.5, 1.0, H)[:, None, None]
    return np.clip(ramp * [1.0, 0.8, 0.6] + rng.normal(0, 0.02, (H, W, 3)), 0, 1)


@torch.no_grad()
def _reference(net: EnhancementNet, unit_rgb: np.ndarray) -> np.ndarray:
    """Whole-image float result for (H, W, 3) pixels in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(unit_rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    return apply_light_map(x, net(x))[0].permute(1, 2, 0).numpy().astype(np.float64)


def _assert_quantised(result: np.ndarray, reference: np.ndarray, levels: int) -> None:
    expected = np.round(reference * levels)
    difference = np.abs(result.astype(np.float64) - expected)
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.01


def test_uint8_array_matches_reference(net: EnhancementNet) -> None:
    pixels = np.round(_dim_rgb() * 255).astype(np.uint8)
    result = rave.enhance(pixels, net)
    assert result.dtype == np.uint8 and result.shape == pixels.shape
    _assert_quantised(result, _reference(net, pixels / 255), 255)
    assert result.mean() > pixels.mean() + 10  # it does brighten a dim photo


def test_uint16_array_keeps_16_bit_precision(net: EnhancementNet) -> None:
    pixels = np.round(_dim_rgb(1) * 65535).astype(np.uint16)
    result = rave.enhance(pixels, net)
    assert result.dtype == np.uint16 and result.shape == pixels.shape
    reference = _reference(net, pixels / 65535)
    _assert_quantised(result, reference, 65535)
    # Not computed through 8 bits: far from every 8-bit-quantised result.
    via_8_bit = np.round(np.round(reference * 255) * 257)
    assert np.abs(result - via_8_bit).max() > 50
    assert not np.all(result % 257 == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_array_keeps_dtype(net: EnhancementNet, dtype: type) -> None:
    pixels = _dim_rgb(2).astype(dtype)
    result = rave.enhance(pixels, net)
    assert result.dtype == dtype
    np.testing.assert_allclose(result, _reference(net, pixels), atol=1e-5)


def test_grey_array_enhanced_as_grey(net: EnhancementNet) -> None:
    grey = np.round(_dim_rgb(3)[:, :, 1] * 255).astype(np.uint8)
    result = rave.enhance(grey, net)
    assert result.shape == (H, W) and result.dtype == np.uint8
    reference = _reference(net, np.repeat(grey[:, :, None], 3, axis=2) / 255)
    assert np.abs(reference[:, :, 0] - reference[:, :, 2]).max() < 1e-6  # grey stays grey
    _assert_quantised(result, reference[:, :, 0], 255)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_alpha_passes_through_untouched(net: EnhancementNet, dtype: type) -> None:
    top = np.iinfo(dtype).max
    rgb = np.round(_dim_rgb(4) * top).astype(dtype)
    alpha = np.random.default_rng(5).integers(0, top + 1, (H, W, 1)).astype(dtype)
    result = rave.enhance(np.dstack([rgb, alpha]), net)
    assert result.shape == (H, W, 4) and result.dtype == dtype
    np.testing.assert_array_equal(result[:, :, 3:], alpha)
    np.testing.assert_array_equal(result[:, :, :3], rave.enhance(rgb, net))


def test_grey_alpha_array(net: EnhancementNet) -> None:
    la = np.round(_dim_rgb(6)[:, :, :2] * 255).astype(np.uint8)
    result = rave.enhance(la, net)
    assert result.shape == (H, W, 2)
    np.testing.assert_array_equal(result[:, :, 1], la[:, :, 1])
    np.testing.assert_array_equal(result[:, :, 0], rave.enhance(la[:, :, 0], net))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "I;16", "CMYK", "1"])
def test_pil_image_keeps_mode_and_size(net: EnhancementNet, mode: str) -> None:
    rgb = Image.fromarray(np.round(_dim_rgb(7) * 255).astype(np.uint8))
    image = (
        Image.fromarray(np.round(_dim_rgb(7)[:, :, 0] * 65535).astype(np.uint16))
        if mode == "I;16"
        else rgb.convert(mode)
    )
    result = rave.enhance(image, net)
    assert isinstance(result, Image.Image)
    assert result.mode == mode and result.size == (W, H)


def test_pil_rgb_equals_array_path_and_keeps_icc(net: EnhancementNet) -> None:
    pixels = np.round(_dim_rgb(8) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    image.info["icc_profile"] = b"fake profile bytes"
    result = rave.enhance(image, net)
    np.testing.assert_array_equal(np.asarray(result), rave.enhance(pixels, net))
    assert result.info["icc_profile"] == b"fake profile bytes"


def test_pil_16_bit_grey_keeps_16_bits(net: EnhancementNet) -> None:
    grey = np.round(_dim_rgb(9)[:, :, 0] * 65535).astype(np.uint16)
    result = np.asarray(rave.enhance(Image.fromarray(grey), net))
    assert result.dtype == np.uint16
    np.testing.assert_array_equal(result, rave.enhance(grey, net))


def test_pil_palette_comes_back_as_rgb(net: EnhancementNet) -> None:
    image = Image.fromarray(np.round(_dim_rgb(10) * 255).astype(np.uint8)).convert("P")
    assert rave.enhance(image, net).mode == "RGB"


def test_tensor_shapes_dtype_and_values(net: EnhancementNet) -> None:
    batch = torch.from_numpy(np.stack([_dim_rgb(11), _dim_rgb(12)])).permute(0, 3, 1, 2)
    batch = batch.float().contiguous()
    result = rave.enhance(batch, net)
    assert result.shape == batch.shape and result.dtype == torch.float32
    reference = np.stack([_reference(net, _dim_rgb(11)), _reference(net, _dim_rgb(12))])
    np.testing.assert_allclose(result.permute(0, 2, 3, 1).numpy(), reference, atol=1e-5)
    single = rave.enhance(batch[1].double(), net)
    assert single.shape == (3, H, W) and single.dtype == torch.float64
    np.testing.assert_allclose(single.numpy(), result[1].numpy(), atol=1e-5)


def test_bad_inputs_raise(net: EnhancementNet) -> None:
    with pytest.raises(ValueError, match="float"):
        rave.enhance(torch.zeros(3, H, W, dtype=torch.uint8), net)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        rave.enhance(torch.zeros(2, H, W), net)  # grey (1, H, W) is accepted
    with pytest.raises(ValueError, match="uint8, uint16 or float"):
        rave.enhance(np.zeros((H, W, 3), np.int32), net)
    with pytest.raises(TypeError, match="PIL image, numpy array, torch tensor or file path"):
        rave.enhance([[0.5]], net)  # type: ignore[call-overload]


def test_model_loaded_once_per_name_and_device(checkpoint: Path, monkeypatch) -> None:
    import rave.zoo

    calls: list[tuple[str, str]] = []
    real_loader = rave.zoo.load_enhancer

    def counting_loader(name_or_path, *, device="cpu"):
        calls.append((str(name_or_path), str(device)))
        return real_loader(name_or_path, device=device)

    monkeypatch.setattr(rave.zoo, "load_enhancer", counting_loader)
    pixels = np.round(_dim_rgb(13) * 255).astype(np.uint8)
    first = rave.enhance(pixels, str(checkpoint))
    second = rave.enhance(pixels, checkpoint, device="cpu")
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1


def test_default_model_missing_names_the_fix(monkeypatch) -> None:
    import rave.zoo

    monkeypatch.setattr(rave.zoo, "builtin_weights_path", lambda: None)
    with pytest.raises(rave.zoo.ZooError, match="--model"):
        rave.enhance(np.zeros((H, W, 3), np.uint8))


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 3), (np.uint16, 4), (np.float32, 3)])
def test_enhance_array_in_place(net: EnhancementNet, dtype: type, channels: int) -> None:
    levels = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1)
    rng = np.random.default_rng(channels)
    pixels = np.concatenate([_dim_rgb(5), rng.random((H, W, channels - 3))], axis=2)
    pixels = (np.round(pixels * levels) if levels > 1 else pixels).astype(dtype)
    expected = api.enhance_array(net, pixels, tile=16)
    work = pixels.copy()
    result = api.enhance_array(net, work, tile=16, in_place=True)
    assert result is work
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(result[:, :, 3:], pixels[:, :, 3:])  # alpha untouched


def test_in_place_falls_back_when_the_array_cannot_hold_the_result(net: EnhancementNet) -> None:
    grey = np.round(_dim_rgb()[:, :, 0] * 255).astype(np.uint8)
    read_only = np.round(_dim_rgb() * 255).astype(np.uint8)
    read_only.flags.writeable = False
    sixteen = np.round(_dim_rgb() * 65535).astype(np.uint16)
    for pixels, out_dtype in ((grey, None), (read_only, None), (sixteen, np.uint8)):
        before = pixels.copy()
        result = api.enhance_array(net, pixels, out_dtype=out_dtype, in_place=True)
        assert not np.shares_memory(result, pixels)
        np.testing.assert_array_equal(pixels, before)
        np.testing.assert_array_equal(result, api.enhance_array(net, before, out_dtype=out_dtype))


# --- inputs the API refuses or accepts (issue 14) -------------------------------------------


def test_float_outside_unit_range_or_not_finite_refused(net: EnhancementNet) -> None:
    a8 = _u8_rgb(50)
    with pytest.raises(ValueError, match=r"\[0, 1\].*0-255 scale\? divide by 255"):
        rave.enhance(a8.astype(np.float32), net)  # silently clipped before
    bad = a8.astype(np.float32) / 255
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        rave.enhance(bad, net)
    with pytest.raises(ValueError, match="non-finite"):
        rave.enhance(torch.full((3, H, W), float("inf")), net)


def test_any_strides_accepted(net: EnhancementNet) -> None:
    rgb = _u8_rgb(51)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    flipped_view = bgr[..., ::-1]  # OpenCV's BGR seen as RGB: negative strides
    np.testing.assert_array_equal(rave.enhance(flipped_view, net), rave.enhance(rgb, net))


def test_path_in_array_out_or_written_to_output(net: EnhancementNet, tmp_path: Path) -> None:
    rgb = _u8_rgb(52)
    Image.fromarray(rgb).save(tmp_path / "a.png", dpi=(240, 240))
    expected = rave.enhance(rgb, net)
    np.testing.assert_array_equal(rave.enhance(tmp_path / "a.png", net), expected)
    np.testing.assert_array_equal(rave.enhance(str(tmp_path / "a.png"), net), expected)
    written = rave.enhance(tmp_path / "a.png", net, output=tmp_path / "out" / "a.png")
    assert written == tmp_path / "out" / "a.png"
    with Image.open(written) as out:
        np.testing.assert_array_equal(np.asarray(out), expected)
        assert out.info["dpi"] == pytest.approx((240, 240), abs=0.01)


def test_device_auto_by_default_and_missing_gpu_one_line(checkpoint: Path, monkeypatch) -> None:
    from rave.devices import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    enhancer = rave.Enhancer(checkpoint)  # device="auto"
    assert enhancer.device.type in ("cpu", "mps")
    with pytest.raises(DeviceError, match="CUDA is not available on this machine") as info:
        rave.enhance(_u8_rgb(53), checkpoint, device="cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(DeviceError, match=r"unknown device 'gpu'; choose one of: auto, cpu"):
        rave.Enhancer(checkpoint, device="gpu")


@pytest.mark.parametrize("tile", [3, -5, 0.5, True, "big"])
def test_tile_values_the_cli_refuses_are_refused(net: EnhancementNet, tile: object) -> None:
    with pytest.raises(ValueError, match="tile"):
        rave.enhance(_u8_rgb(54), net, tile=tile)  # type: ignore[arg-type]


def test_dir_shows_the_public_api_only() -> None:
    names = dir(rave)
    assert {"enhance", "Enhancer", "load_enhancer"} <= set(names)
    assert not {"Any", "importlib", "annotations", "version"} & set(names)


def test_all_lists_every_lazy_export_and_each_resolves() -> None:
    # __all__ is spelled out for type checkers; it must not drift from the lazy table.
    assert set(rave.__all__) == {"__version__", *rave._LAZY_EXPORTS}
    for name in rave.__all__:
        assert getattr(rave, name) is not None


def test_enhancer_session_matches_enhance_and_writes_files(
    checkpoint: Path, net: EnhancementNet, tmp_path: Path
) -> None:
    enhancer = rave.Enhancer(checkpoint, device="cpu", tile=16)
    rgb = _u8_rgb(55)
    np.testing.assert_array_equal(enhancer.enhance(rgb), rave.enhance(rgb, net))
    Image.fromarray(rgb).save(tmp_path / "in.jpg", quality=95)
    ticks: list[tuple[int, int]] = []
    notes = enhancer.enhance_file(
        tmp_path / "in.jpg", tmp_path / "out.png", progress=lambda *tick: ticks.append(tick)
    )
    assert notes == []
    assert Image.open(tmp_path / "out.png").size == (W, H)
    assert ticks[-1][0] == ticks[-1][1] > 1  # per-tile progress within one photo
    # the light map alone (rave serve's path) reports the same tiles, once each
    light_ticks: list[tuple[int, int]] = []
    enhancer.light_map(rgb, progress=lambda *tick: light_ticks.append(tick))
    total = ticks[-1][1]
    assert sorted(light_ticks) == [(done, total) for done in range(1, total + 1)]
    assert len(enhancer.model_sha256) == 64


def _u8_rgb(seed: int) -> np.ndarray:
    return np.round(_dim_rgb(seed) * 255).astype(np.uint8)


def test_every_call_hands_freed_memory_back(net: EnhancementNet, monkeypatch) -> None:
    """A long-lived process (a loop over rave.enhance, rave serve) keeps a flat RSS only if
    the heap memory freed by each call is returned (glibc keeps it otherwise: RSS grew
    979 -> 1112 MB over 300 calls of 16-400 px before, benchmarks/soak_memory.py). Every
    input kind, and a call that fails, must hand it back."""
    import rave.inference.memory as memory

    calls = []
    monkeypatch.setattr(memory, "return_freed_memory", lambda: calls.append(1))
    pixels = _u8_rgb(60)
    rave.enhance(pixels, net)
    rave.enhance(Image.fromarray(pixels), net)
    rave.enhance(torch.rand(3, 20, 24), net)
    with pytest.raises(ValueError):
        rave.enhance(pixels.astype(np.float32), net)  # 0-255 floats are refused
    assert len(calls) == 4


def test_light_map_applied_later_equals_running_the_network(net: EnhancementNet) -> None:
    """The server's slider path: the network runs once (Enhancer.light_map), each strength
    is applied from the kept map. It must give what a full run gives, bit for bit, for
    colour, grey and grey + alpha, and the map must be the network's own (closed form:
    enhanced = clamp(I / L, 0, 1) at strength 1)."""
    enhancer = rave.Enhancer(net, tile=16)
    rgb = _u8_rgb(61)
    light = enhancer.light_map(rgb)
    assert light.shape == rgb.shape[:2] and light.dtype == np.float32
    for strength in (0.0, 0.5, 1.0, 1.7):
        np.testing.assert_array_equal(
            enhancer.enhance_pixels(rgb, light_map=light, strength=strength),
            enhancer.enhance_pixels(rgb, strength=strength),
        )
    unit = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    expected = apply_light_map(unit, torch.from_numpy(light)[None, None])
    got = enhancer.enhance_pixels(rgb, out_dtype=np.float32)
    np.testing.assert_allclose(got, expected[0].permute(1, 2, 0).numpy(), atol=1e-6)
    for layered in (rgb[:, :, 1], np.dstack([rgb[:, :, 1], rgb[:, :, 0]])):
        grey_light = enhancer.light_map(layered)
        np.testing.assert_array_equal(
            enhancer.enhance_pixels(layered, light_map=grey_light, strength=0.8),
            enhancer.enhance_pixels(layered, strength=0.8),
        )


def test_deadline_stops_the_engine_between_tiles(net: EnhancementNet) -> None:
    from rave.inference import DeadlineExceeded

    enhancer = rave.Enhancer(net, tile=16)
    with pytest.raises(DeadlineExceeded):
        enhancer.light_map(_u8_rgb(62), deadline=lambda: True)
    with pytest.raises(DeadlineExceeded):
        enhancer.enhance_pixels(_u8_rgb(62), deadline=0.0)  # a monotonic time long past


def test_one_dimensional_array_is_a_layout_error(net: EnhancementNet) -> None:
    with pytest.raises(ValueError, match=r"pixels must be \(H, W\) or \(H, W, 1\|2\|3\|4\)"):
        rave.enhance(np.zeros(12, np.uint8), net)
    with pytest.raises(ValueError, match="pixels must be"):
        rave.Enhancer(net).enhance_pixels(np.zeros(12, np.uint8))


@pytest.mark.parametrize("strength", [True, "1", b"1", float("nan"), -0.5])
def test_strength_must_be_a_finite_non_negative_number(
    net: EnhancementNet, strength: object
) -> None:
    with pytest.raises(ValueError, match="strength must be a"):
        rave.enhance(_u8_rgb(56), net, strength=strength)  # type: ignore[arg-type]


def test_enhance_file_options_checked_as_the_cli_checks_them(
    net: EnhancementNet, tmp_path: Path
) -> None:
    rgb = _u8_rgb(57)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    enhancer = rave.Enhancer(net)
    for quality in (0, 101, 95.0, True, "95"):
        with pytest.raises(ValueError, match="quality must be"):
            enhancer.enhance_file(tmp_path / "in.png", tmp_path / "q.jpg", quality=quality)  # type: ignore[arg-type]
    for max_pixels in (0, -1):
        with pytest.raises(ValueError, match="max_pixels must be a positive"):
            enhancer.enhance_file(tmp_path / "in.png", tmp_path / "m.png", max_pixels=max_pixels)
    with pytest.raises(ValueError, match="strength must be"):
        enhancer.enhance_file(tmp_path / "in.png", tmp_path / "s.png", strength=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]  # nothing written
    # The long format names rave enhance --format takes; the file is what the name says.
    for long_name, pil_format in (("jpeg", "JPEG"), ("tiff", "TIFF")):
        enhancer.enhance_file(tmp_path / "in.png", tmp_path / long_name, format=long_name)
        with Image.open(tmp_path / long_name) as written:
            assert written.format == pil_format
    with pytest.raises(ValueError, match=r"unknown output format '\.gif'"):
        enhancer.enhance_file(tmp_path / "in.png", tmp_path / "g.gif")
    with pytest.raises(ValueError, match="unknown output format 'gif'"):
        enhancer.enhance_file(tmp_path / "in.png", tmp_path / "g.png", format="gif")


def test_enhance_file_refuses_to_replace_its_source_unless_asked(
    net: EnhancementNet, tmp_path: Path
) -> None:
    rgb = _u8_rgb(58)
    source = tmp_path / "in.png"
    Image.fromarray(rgb).save(source)
    original = source.read_bytes()
    enhancer = rave.Enhancer(net)
    (tmp_path / "link.png").symlink_to(source)
    for target in (source, tmp_path / "." / "in.png", tmp_path / "link.png"):
        with pytest.raises(ValueError, match="is the source photo itself; pass replace_source"):
            enhancer.enhance_file(source, target)
        with pytest.raises(ValueError, match="is the source photo itself"):
            rave.enhance(source, net, output=target)
    assert source.read_bytes() == original
    enhancer.enhance_file(source, source, replace_source=True)
    np.testing.assert_array_equal(np.asarray(Image.open(source)), rave.enhance(rgb, net))


def test_float_tiff_written_in_other_formats_says_to_what(
    net: EnhancementNet, tmp_path: Path
) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "in.tif", _dim_rgb(59).astype(np.float32), photometric="rgb")
    enhancer = rave.Enhancer(net)
    expected = enhancer.enhance_pixels(tifffile.imread(tmp_path / "in.tif"))
    notes = enhancer.enhance_file(tmp_path / "in.tif", tmp_path / "out.png")
    assert any("float samples written as 16-bit" in note for note in notes), notes
    written = cv2_read_unchanged(tmp_path / "out.png")
    assert written.dtype == np.uint16
    np.testing.assert_array_equal(written, np.round(expected * 65535).astype(np.uint16))
    notes = enhancer.enhance_file(tmp_path / "in.tif", tmp_path / "out.jpg")
    assert any("float samples written as 8-bit" in note for note in notes), notes
    assert not any("16-bit" in note for note in notes), notes
    assert enhancer.enhance_file(tmp_path / "in.tif", tmp_path / "out.tif") == []
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), expected)


def cv2_read_unchanged(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.mark.parametrize("lossless", [True, False])
def test_webp_output_is_lossless_exactly_when_the_input_was(
    net: EnhancementNet, tmp_path: Path, lossless: bool
) -> None:
    rgb = _u8_rgb(60)
    Image.fromarray(rgb).save(tmp_path / "in.webp", lossless=lossless, quality=90)
    rave.Enhancer(net).enhance_file(tmp_path / "in.webp", tmp_path / "out.webp")
    chunk = (tmp_path / "out.webp").read_bytes()[12:16]  # RIFF....WEBP then the first chunk
    assert chunk == (b"VP8L" if lossless else b"VP8 ")
    if lossless:
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "out.webp").convert("RGB")), rave.enhance(rgb, net)
        )
