"""Tiled inference must equal whole-image inference exactly, for any size and tile."""

from __future__ import annotations

import pytest
import torch

from rave.inference import enhance_tensor, predict_light_map, winograd
from rave.inference.tiled import auto_tile_size
from rave.network import EnhancementNet, apply_light_map

TOLERANCE = 1e-4  # on [0, 1]; float32 rounding gives about 1e-6


@pytest.fixture(scope="module")
def net() -> EnhancementNet:
    """Random weights scaled up so that every layer matters (N(0, 0.02) is nearly linear)."""
    torch.manual_seed(0)
    net = EnhancementNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0 if p.ndim == 4 else 1.0)  # light map ~0.5-1.3, std ~0.1
        net.cond_add1.bias.fill_(0.5)  # a positive light map, so I / L is informative
    return net


def whole_image(net: EnhancementNet, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(image)


@pytest.mark.parametrize(
    ("height", "width", "tiles"),
    [(7, 9, [1, 2, 3, 5, 8]), (2, 2, [1]), (40, 23, [6, 17, 39]), (517, 333, [100, 173, 256])],
)
@pytest.mark.parametrize("cache_features", [True, False])
def test_tiled_light_map_equals_whole_image(net, height, width, tiles, cache_features) -> None:
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
    reference = whole_image(net, image)
    assert reference.std() > 1e-2  # the comparison must not be trivial
    for tile in tiles:
        light = predict_light_map(net, image, tile=tile, cache_features=cache_features)
        assert light.shape == reference.shape
        assert (light - reference).abs().max().item() <= TOLERANCE, f"tile={tile}"


def test_zero_padding_network_is_tiled_exactly(net) -> None:
    zero_net = EnhancementNet(padding_mode="zeros").eval()
    zero_net.load_state_dict(net.state_dict())
    image = torch.rand(2, 3, 30, 45, generator=torch.Generator().manual_seed(1))
    light = predict_light_map(zero_net, image, tile=11)
    assert (light - whole_image(zero_net, image)).abs().max() <= TOLERANCE


def test_enhanced_image_equals_clamped_division(net) -> None:
    image = torch.rand(1, 3, 50, 61, generator=torch.Generator().manual_seed(2))
    expected = apply_light_map(image, whole_image(net, image))
    enhanced = enhance_tensor(net, image, tile=20)
    assert (enhanced - expected).abs().max() <= TOLERANCE
    assert enhanced.min() >= 0.0 and enhanced.max() <= 1.0


def test_integer_input_and_output_are_quantised_from_float(net) -> None:
    gen = torch.Generator().manual_seed(3)
    hwc = (torch.rand(37, 29, 3, generator=gen) * 255).round().to(torch.uint8)
    image = hwc.permute(2, 0, 1)[None]  # a non-contiguous view, as from a numpy photo
    out_hwc = torch.empty_like(hwc)
    enhance_tensor(net, image, tile=16, out=out_hwc.permute(2, 0, 1)[None])
    expected = apply_light_map(image.float() / 255, whole_image(net, image.float() / 255))
    expected = (expected * 255).round().to(torch.uint8)[0].permute(1, 2, 0)
    # A value exactly on a rounding boundary may round either way: allow one level.
    assert (out_hwc.int() - expected.int()).abs().max() <= 1
    assert (out_hwc != expected).float().mean() < 0.01


def test_sixteen_bit_input_keeps_sixteen_bit_precision(net) -> None:
    gen = torch.Generator().manual_seed(4)
    values = torch.randint(0, 65536, (1, 3, 20, 24), generator=gen, dtype=torch.int32)
    image16 = values.to(torch.uint16)
    expected = apply_light_map(values.float() / 65535, whole_image(net, values.float() / 65535))
    out = torch.empty_like(image16)
    enhance_tensor(net, image16, tile=9, out=out)
    quantised = (expected * 65535).round()
    assert (out.to(torch.int32).float() - quantised).abs().max() <= 1
    # 8-bit precision would leave only multiples of 257 (= 65535 / 255) in the output.
    assert (out.to(torch.int32) % 257 != 0).float().mean() > 0.5


def test_float_output_keeps_float_precision(net) -> None:
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    out = enhance_tensor(net, image, tile=None)
    assert out.dtype == torch.float32
    assert (out * 255 - (out * 255).round()).abs().max() > 1e-3  # not quantised


def test_auto_tile_size_bounds_large_images_only() -> None:
    assert auto_tile_size(300, 200) is None
    side = auto_tile_size(4000, 6000)
    assert side is not None and 64 <= side < 4000


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 3, 1, 5), "too small"),
        ((1, 4, 8, 8), r"\(B, 3, H, W\)"),
        ((3, 8, 8), r"\(B, 3, H, W\)"),
    ],
)
def test_bad_shapes_are_refused(net, shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        predict_light_map(net, torch.rand(*shape))


def test_out_shape_mismatch_is_refused(net) -> None:
    with pytest.raises(ValueError, match="out has shape"):
        enhance_tensor(net, torch.rand(1, 3, 8, 8), out=torch.empty(1, 3, 8, 9))


@pytest.mark.parametrize("backend", ["winograd", "nnpack", "channels_last", "default"])
def test_every_convolution_backend_is_exact(net, backend, monkeypatch) -> None:
    if backend == "nnpack" and not torch.backends.nnpack.is_available():
        pytest.skip("this PyTorch build has no NNPACK")
    if backend == "winograd" and winograd.load_kernel() is None:
        pytest.skip(f"Winograd kernel {winograd.kernel_status()}")
    monkeypatch.setenv("RAVE_CONV_BACKEND", backend)
    image = torch.rand(1, 3, 45, 70, generator=torch.Generator().manual_seed(6))
    for tile in (None, 19):
        light = predict_light_map(net, image, tile=tile)
        assert (light - whole_image(net, image)).abs().max() <= TOLERANCE


def test_unknown_backend_is_refused(net, monkeypatch) -> None:
    monkeypatch.setenv("RAVE_CONV_BACKEND", "winograd9000")
    with pytest.raises(ValueError, match="RAVE_CONV_BACKEND"):
        predict_light_map(net, torch.rand(1, 3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(net) -> None:
    image = torch.rand(1, 3, 300, 411, generator=torch.Generator().manual_seed(7))
    cpu = enhance_tensor(net, image, tile=128)
    cuda_net = EnhancementNet().eval()
    cuda_net.load_state_dict(net.state_dict())
    cuda = enhance_tensor(cuda_net.cuda(), image, tile="auto")  # result on image's device
    assert cuda.device.type == "cpu"
    assert (cuda - cpu).abs().max() <= 1e-3


def test_memory_bound_photos_are_those_without_the_feature_cache() -> None:
    from rave.inference import is_memory_bound

    # 32 float32 channels per pixel must fit 512 MB: 4.19 MP do, 24 MP do not.
    assert not is_memory_bound(1536, 2048)
    assert is_memory_bound(4000, 6000)
    assert is_memory_bound(2049, 2048) and not is_memory_bound(2048, 2048)


def test_memory_bound_tiles_return_freed_memory_once_per_row(net, monkeypatch) -> None:
    """Large photos hand freed heap memory back after each row of tiles, in both passes,
    with the same result; photos that fit the feature cache keep it for speed."""
    import rave.inference.memory as memory
    import rave.inference.tiled as tiled

    trims: list[int] = []
    monkeypatch.setattr(memory, "return_freed_memory", lambda: trims.append(1))
    image = torch.rand(1, 3, 40, 45, generator=torch.Generator().manual_seed(4))
    expected = predict_light_map(net, image, tile=15, cache_features=False)
    assert not trims  # fits the cache: no trimming
    monkeypatch.setattr(tiled, "_CPU_FEATURE_CACHE_BYTES", 0)  # as if 24 MP
    light = predict_light_map(net, image, tile=15)
    assert len(trims) == 2 * 3  # 3 rows of 3 tiles, in pass 1 and in pass 2
    assert (light - expected).abs().max() <= 1e-6  # tiles add up in any order
    trims.clear()
    enhance_tensor(net, image, tile=15, light_map=light)  # no network: nothing to trim
    assert not trims


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float32])
@pytest.mark.parametrize("cache_features", [True, False])
def test_enhancing_in_place_equals_out_of_place(net, dtype, cache_features) -> None:
    """out=image: every tile's result waits until no later tile reads under it, for tiles
    smaller than the halo too."""
    generator = torch.Generator().manual_seed(9)
    unit = torch.rand(1, 3, 61, 47, generator=generator)
    scale = {torch.uint8: 255, torch.uint16: 65535}.get(dtype)
    image = unit if scale is None else (unit * scale).round().to(dtype)
    for tile in (5, 13, 30, None):
        expected = enhance_tensor(
            net, image, tile=tile, out=torch.empty_like(image), cache_features=cache_features
        )
        work = image.clone()
        result = enhance_tensor(net, work, tile=tile, out=work, cache_features=cache_features)
        assert result.data_ptr() == work.data_ptr()
        assert torch.equal(work, expected), f"tile={tile}"


def test_partly_overlapping_out_is_refused(net) -> None:
    buffer = torch.rand(1, 3, 20, 21)
    with pytest.raises(ValueError, match="overlaps"):
        enhance_tensor(net, buffer[..., :, :20], out=buffer[..., :, 1:])
    disjoint = torch.rand(2, 3, 20, 20)  # two images in one storage: not in place
    enhance_tensor(net, disjoint[:1], out=disjoint[1:])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_networks_not_in_float32_are_refused(dtype: torch.dtype) -> None:
    net = EnhancementNet().eval().to(dtype)
    with pytest.raises(ValueError, match="float32 only"):
        predict_light_map(net, torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("out_channels", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_few_output_convs_by_taps_equal_conv2d(out_channels, bias) -> None:
    """The per-tap path of 3x3 convs with few outputs (the network's last conv) on crops of
    a channels-last tensor, for every kind of border, against F.conv2d of the padded crop."""
    from torch import nn
    from torch.nn import functional as F

    from rave.inference.tiled import _conv3x3_by_taps, _runs_by_taps

    torch.manual_seed(out_channels)
    conv = nn.Conv2d(32, out_channels, 3, bias=bias)
    assert _runs_by_taps(conv)
    assert not _runs_by_taps(nn.Conv2d(32, 32, 3))
    big = torch.randn(2, 32, 30, 41).contiguous(memory_format=torch.channels_last)
    crop = big[..., 3:22, 5:38]
    for pad in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0)]:
        for mode in ("reflect", "zeros"):
            padded = F.pad(crop, pad, mode="reflect" if mode == "reflect" else "constant")
            expected = F.conv2d(padded, conv.weight, conv.bias)
            out = _conv3x3_by_taps(crop, conv, pad, mode)
            assert out.shape == expected.shape
            assert (out - expected).abs().max() < 1e-5 * (1 + expected.abs().max())
