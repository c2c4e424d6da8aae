"""The Python API as an application developer uses it: inputs the docs promise, and errors
that name the problem (found by an audit of ``rave.enhance`` / ``rave.Enhancer``).

Results are compared with the same pixels enhanced through an already tested input kind
(uint16 or float32 arrays), which runs the same engine on the same values: equal exactly.
"""

from __future__ import annotations

import io
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import rave
from rave import api
from rave.network.enhancer import EnhancementNet, check_strength
from rave.session import Enhancer

H, W = 20, 28


@pytest.fixture(autouse=True)
def empty_model_cache():
    api.clear_model_cache()
    yield
    api.clear_model_cache()


def _dim(seed: int = 0) -> np.ndarray:
    """A dim (H, W) ramp with noise in [0, 0.45], float64."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.05, 0.4, W)[None, :] * np.linspace(0.5, 1.0, H)[:, None]
    return np.clip(ramp + rng.normal(0, 0.02, (H, W)), 0, 0.45)


def test_pil_mode_i_is_enhanced_as_16_bit_and_stays_mode_i(net: EnhancementNet) -> None:
    # Pillow opens 16-bit grey PNGs as mode "I" (int32 samples 0-65535); it was refused.
    samples = np.round(_dim() * 65535).astype(np.int32)
    image = Image.fromarray(samples)
    assert image.mode == "I"
    result = rave.enhance(image, net)
    assert result.mode == "I" and result.size == image.size
    expected = rave.enhance(samples.astype(np.uint16), net).astype(np.int32)
    np.testing.assert_array_equal(np.asarray(result), expected)
    assert np.asarray(result).mean() > samples.mean()  # it does brighten


def test_pil_mode_i_outside_16_bits_is_refused_naming_the_range(net: EnhancementNet) -> None:
    image = Image.fromarray(np.full((8, 8), -5, np.int32))
    with pytest.raises(ValueError, match=r"mode 'I'.*0-65535.*\[-5, -5\]"):
        rave.enhance(image, net)


def test_pil_mode_f_is_enhanced_as_float_and_stays_mode_f(net: EnhancementNet) -> None:
    values = _dim(1).astype(np.float32)
    image = Image.fromarray(values)
    assert image.mode == "F"
    result = rave.enhance(image, net)
    assert result.mode == "F" and result.size == image.size
    np.testing.assert_array_equal(np.asarray(result), rave.enhance(values, net))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rave.enhance(Image.fromarray(values * 255), net)  # a 0-255 float image: refused


def test_big_endian_arrays_are_enhanced_and_keep_their_dtype(net: EnhancementNet) -> None:
    native = np.round(np.dstack([_dim(2)] * 3) * 65535).astype(np.uint16)
    big = native.astype(">u2")
    enhancer = Enhancer(net)
    result = enhancer.enhance(big)
    assert result.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(result, enhancer.enhance(native))
    in_place = enhancer.enhance_pixels(big.copy(), in_place=True)  # a new array, same dtype
    assert in_place.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(in_place, result)
    # A big-endian out_dtype too (it was the engine's buffer type).
    pixels8 = np.round(native / 257).astype(np.uint8)
    wide = enhancer.enhance_pixels(pixels8, out_dtype=np.dtype(">u2"))
    assert wide.dtype == np.dtype(">u2")
    np.testing.assert_array_equal(wide, enhancer.enhance_pixels(pixels8, out_dtype=np.uint16))


@pytest.mark.parametrize("method", ["light_map", "enhance_pixels"])
@pytest.mark.parametrize(
    "pixels", [Image.new("RGB", (8, 8)), torch.zeros(3, 8, 8), [[0.5] * 8] * 8]
)
def test_pixel_methods_say_they_take_numpy_arrays(
    net: EnhancementNet, method: str, pixels: object
) -> None:
    # Was an AttributeError ('Image' object has no attribute 'ndim').
    with pytest.raises(TypeError, match=r"numpy array .*got (Image|Tensor|list)"):
        getattr(Enhancer(net), method)(pixels)


@pytest.mark.parametrize(
    "image",
    [np.zeros((0, 5, 3), np.float32), torch.zeros(3, 0, 5), torch.zeros(3, 5, 0)],
    ids=["float-array", "tensor-h0", "tensor-w0"],
)
def test_empty_images_are_too_small_not_a_reduction_error(net: EnhancementNet, image: Any) -> None:
    with pytest.raises(ValueError, match="too small"):
        rave.enhance(image, net)


def test_an_empty_batch_comes_back_empty(net: EnhancementNet) -> None:
    batch = torch.zeros(0, 3, 8, 8, dtype=torch.float16)
    result = rave.enhance(batch, net)
    assert result.shape == batch.shape and result.dtype == batch.dtype
    with pytest.raises(ValueError, match="strength"):
        rave.enhance(batch, net, strength=-1)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is 3.11+")
def test_enhancer_enhance_is_typed_the_same_kind_out() -> None:
    overloads = getattr(typing, "get_overloads")(Enhancer.enhance)  # noqa: B009 (3.11+)
    returns = [typing.get_type_hints(f, globalns=_typing_names())["return"] for f in overloads]
    assert {Image.Image, np.ndarray, torch.Tensor, Path} <= set(returns)


def _typing_names() -> dict[str, object]:
    import os

    import rave.session

    return {**vars(rave.session), "Image": Image, "Tensor": torch.Tensor, "os": os}


@pytest.mark.parametrize("strength", [None, [1.0], object()])
def test_strength_that_is_no_number_is_a_value_error_naming_strength(strength: object) -> None:
    with pytest.raises(ValueError, match="strength must be a number"):
        check_strength(strength)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [3, None, 2.5])
def test_model_of_the_wrong_type_is_named(model: object) -> None:
    with pytest.raises(TypeError, match=r"model must be a model name.*got (int|NoneType|float)"):
        Enhancer(model, device="cpu")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "image",
    [b"/tmp/photo.jpg", io.BytesIO(b"\xff\xd8\xff"), bytearray(b"\x89PNG")],
    ids=["bytes", "file-object", "bytearray"],
)
def test_bytes_and_file_objects_say_what_to_pass_instead(net: EnhancementNet, image: Any) -> None:
    with pytest.raises(TypeError, match=r"PIL\.Image\.open"):
        Enhancer(net).enhance(image)


@pytest.mark.parametrize(
    ("light", "message"),
    [
        (lambda m: m[:4], r"light_map must be \(H, W\) = \(20, 28\).*got \(4, 28\)"),
        (lambda m: m[..., None], r"light_map must be \(H, W\).*got \(20, 28, 1\)"),
        (lambda m: np.where(m >= np.median(m), np.nan, m), "light_map has non-finite values"),
        (lambda m: -m, r"light_map must be >= 0"),
        (lambda m: 0 * m, r"light_map must be >= 0 and not zero everywhere"),
    ],
    ids=["rows", "trailing-axis", "nan", "negative", "zero"],
)
def test_a_bad_light_map_is_named_not_blamed_on_the_weights(
    net: EnhancementNet, light: typing.Callable[[np.ndarray], np.ndarray], message: str
) -> None:
    # Was "light_map has shape (1, 1, 4, 28), image (1, 3, 20, 28)" or "... the model's
    # weights are broken/degenerate" for a map the caller made.
    enhancer = Enhancer(net)
    pixels = np.round(np.dstack([_dim(3)] * 3) * 255).astype(np.uint8)
    original = pixels.copy()
    with pytest.raises(ValueError, match=message):
        enhancer.enhance_pixels(pixels, light_map=light(enhancer.light_map(pixels)), in_place=True)
    np.testing.assert_array_equal(pixels, original)  # refused before anything is written


@pytest.mark.parametrize(
    "module", [torch.nn.Identity(), torch.nn.Conv2d(3, 1, 3)], ids=["Identity", "Conv2d"]
)
def test_a_module_the_engine_cannot_run_is_refused_when_loaded(module: torch.nn.Module) -> None:
    # Was StopIteration (no parameters) or an AttributeError at the first image.
    with pytest.raises(TypeError, match=r"enhancement network.*got (Identity|Conv2d) without"):
        Enhancer(module)


@pytest.mark.parametrize("shape", [(3, H, W), (2, 3, H, W)], ids=["image", "batch"])
def test_an_enhanced_tensor_is_an_ordinary_tensor(net: EnhancementNet, shape: tuple) -> None:
    # It was made under torch.inference_mode(): y.mul_(...) and autograd then raised
    # "Inplace update to inference tensor outside InferenceMode is not allowed".
    image = torch.from_numpy(np.broadcast_to(_dim(4), shape).astype(np.float32))
    enhanced = rave.enhance(image, net)
    assert not enhanced.is_inference()
    expected = enhanced.clone()
    enhanced.mul_(0.5)  # in place
    torch.testing.assert_close(enhanced, expected * 0.5, rtol=0, atol=0)
    weight = torch.ones((), requires_grad=True)
    (enhanced * weight).sum().backward()  # used where autograd records
    assert weight.grad is not None and bool(torch.isfinite(weight.grad))


def _cmyk(seed: int) -> Image.Image:
    """Random colour inks over a black of 40-220 (a dim print photo)."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, (H, W, 3))
    black = 40 + np.round(_dim(seed) * 400)
    return Image.fromarray(np.dstack([colour, black]).astype(np.uint8), "CMYK")


def test_cmyk_at_strength_zero_is_the_image_black_included(net: EnhancementNet) -> None:
    # Pillow's RGB -> CMYK sets the black to 0: the image changed by up to 254 codes.
    image = _cmyk(5)
    result = rave.enhance(image, net, strength=0)
    assert result.mode == "CMYK"
    np.testing.assert_array_equal(np.asarray(result), np.asarray(image))


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_cmyk_is_relit_in_its_own_inks(net: EnhancementNet, strength: float) -> None:
    image = _cmyk(6)
    result = rave.enhance(image, net, strength=strength)
    ink, out = np.asarray(image) / 255, np.asarray(result) / 255
    light = Enhancer(net).light_map(np.asarray(image.convert("RGB"))).astype(np.float64)
    gain = 1 / light**strength
    # The documented result clamp(I / L**S, 0, 1) for the image's RGB, I = (1-C)(1-K):
    relit = np.clip((1 - ink[:, :, :3]) * (1 - ink[:, :, 3:]) * gain[:, :, None], 0, 1)
    # ... is what the result's inks give, to their 8-bit rounding: two factors off by at
    # most 0.5/255 each.
    rgb = (1 - out[:, :, :3]) * (1 - out[:, :, 3:])
    assert np.abs(rgb - relit).max() <= 1 / 255 + 1e-9
    # Where the lightened black suffices ((1-K) g <= 1) the colour inks are untouched.
    black_suffices = (1 - ink[:, :, 3]) * gain <= 1
    assert black_suffices.mean() > 0.1
    np.testing.assert_array_equal(
        np.asarray(result)[black_suffices][:, :3], np.asarray(image)[black_suffices][:, :3]
    )


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "RGBX", "I;16B"])
def test_strength_zero_returns_a_converted_mode_image_itself(
    net: EnhancementNet, mode: str
) -> None:
    # Was the round trip through RGB (or I;16): YCbCr and HSV pixels off by a code.
    rng = np.random.default_rng(7)
    if mode == "I;16B":
        image = Image.fromarray(rng.integers(0, 65536, (H, W)).astype(np.uint16)).convert(mode)
    else:
        image = Image.fromarray(rng.integers(0, 256, (H, W, 3)).astype(np.uint8)).convert(mode)
    result = rave.enhance(image, net, strength=0)
    assert result.mode == mode and result is not image
    np.testing.assert_array_equal(np.asarray(result), np.asarray(image))


@pytest.mark.parametrize("device", ["garbage", "cuda:99"])
def test_load_enhancer_refuses_an_unknown_or_absent_device_in_one_line(device: str) -> None:
    """Before, torch's own RuntimeError ("Expected one of cpu, cuda, ...") came out of
    ``.to(device)`` after the model was read, and ``"auto"`` (which rave's other entry
    points accept) was refused the same way."""
    from rave.devices import DeviceError

    with pytest.raises(DeviceError, match="choose one of") as caught:
        rave.load_enhancer("default", device=device)
    assert "\n" not in str(caught.value)


def test_load_enhancer_accepts_auto() -> None:
    from rave.devices import resolve_device

    net = rave.load_enhancer("default", device="auto")
    assert next(net.parameters()).device == resolve_device("auto")


def test_a_missing_photo_is_a_file_not_found_error_and_a_photo_error(tmp_path: Path) -> None:
    """``except FileNotFoundError`` (what Python code catches for a missing file) missed
    rave's PhotoError before; it stays a PhotoError, one line naming the file."""
    from rave.io import PhotoError, read_photo

    missing = tmp_path / "IMG_0001.jpg"
    for call in (lambda: rave.enhance(missing), lambda: read_photo(missing)):
        with pytest.raises(FileNotFoundError) as caught:
            call()
        assert isinstance(caught.value, PhotoError)
        assert str(caught.value) == f"{missing}: no such file"
        assert caught.value.errno == 2  # ENOENT
