"""The Winograd C kernel must equal PyTorch's convolution, build where it can, and step
aside (to oneDNN) where it cannot."""

from __future__ import annotations

import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rave.inference import predict_light_map, winograd
from rave.inference.tiled import select_backend
from rave.network import EnhancementNet

COMPILER = winograd._compiler()
pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def kernel() -> winograd.WinogradKernel:
    loaded = winograd.load_kernel()
    # With a compiler present the kernel must build: a silent fallback would hide a bug.
    assert loaded is not None, winograd.kernel_status()
    return loaded


@pytest.fixture
def fresh_loader():
    """Forget the loaded kernel around a test that changes how it is found or built."""
    winograd.load_kernel.cache_clear()
    yield
    winograd.load_kernel.cache_clear()


def _conv(cin: int, cout: int, bias: bool, seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, 3, bias=bias)


def _leaky(v: torch.Tensor, slope: float) -> torch.Tensor:
    return torch.where(v > 0, v, v * slope)


# Largest error relative to the output's largest value, per tile size: Winograd transforms
# round differently from a direct conv (measured on 64-channel layers: up to 1e-5 of the
# largest output with F(4x4), 1.3e-5 with F(6x6), whose transforms hold larger constants).
TOLERANCE = {4: 2e-5, 6: 4e-5}


def _close(actual: torch.Tensor, expected: torch.Tensor, tile: int = 4) -> None:
    scale = expected.abs().max().item()
    assert scale > 0.1
    assert (actual - expected).abs().max().item() <= TOLERANCE[tile] * scale


@pytest.mark.parametrize(
    ("cin", "cout", "height", "width"),
    [(32, 32, 3, 3), (32, 64, 7, 9), (64, 32, 37, 29), (64, 64, 50, 51), (48, 16, 6, 11)],
)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tile", [4, 6])
def test_equals_conv2d(kernel, cin, cout, height, width, bias, tile) -> None:
    if cin % kernel.vector_width or cout % kernel.vector_width:
        pytest.skip(f"channels not a multiple of {kernel.vector_width}")
    conv = _conv(cin, cout, bias, seed=height)
    x = torch.randn(2, cin, height, width).contiguous(memory_format=torch.channels_last)
    out = winograd.conv3x3(kernel, x, conv, tile=tile)
    assert out.shape == (2, cout, height - 2, width - 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    _close(out, F.conv2d(x, conv.weight, conv.bias), tile)


def _tile_remainders(kernel: winograd.WinogradKernel, tile: int, cin: int, cout: int) -> None:
    """Outputs of every size modulo ``tile`` (partial last tiles), with every kind of
    border (reflect and zero padding of single sides: tiles over the padding), split
    across threads (tile ranges starting mid-row), against F.conv2d of the padded input."""
    for height, width in [(3, 3), (4, 11), (8, 9), (9, 16), (13, 8), (17, 15), (20, 25)]:
        conv = _conv(cin, cout, True, seed=height * 31 + width)
        x = torch.randn(1, cin, height, width).contiguous(memory_format=torch.channels_last)
        for padding in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0)]:
            for pad_mode in ("zeros", "reflect"):
                mode = "reflect" if pad_mode == "reflect" else "constant"
                expected = F.conv2d(F.pad(x, padding, mode=mode), conv.weight, conv.bias)
                for threads in (1, 3):
                    out = winograd.conv3x3(kernel, x, conv, padding=padding, pad_mode=pad_mode,
                                           slope=0.2, threads=threads, tile=tile)  # fmt: skip
                    _close(out, _leaky(expected, 0.2), tile)


@pytest.mark.parametrize("tile", [4, 6])
def test_tile_remainders_and_borders(kernel, tile) -> None:
    width = kernel.vector_width
    _tile_remainders(kernel, tile, 2 * width, 4 * width)


def test_tile_size_is_checked(kernel, monkeypatch) -> None:
    conv = nn.Conv2d(32, 32, 3)
    x = torch.rand(1, 32, 8, 8)
    with pytest.raises(ValueError, match="tile must be 4 or 6"):
        winograd.conv3x3(kernel, x, conv, tile=5)
    monkeypatch.setenv("RAVE_WINOGRAD_TILE", "8")
    with pytest.raises(ValueError, match="RAVE_WINOGRAD_TILE must be 4 or 6"):
        winograd.conv3x3(kernel, x, conv)
    monkeypatch.setenv("RAVE_WINOGRAD_TILE", "4")
    assert winograd.output_tile(64, 64) == 4
    monkeypatch.delenv("RAVE_WINOGRAD_TILE")
    assert winograd.output_tile(64, 64) == 6


@pytest.mark.parametrize("tile", [4, 6])
def test_transformed_weights_give_back_the_kernel(tile) -> None:
    """transform_weight lays out G g G^T as documented ((T * T, C_in, C_out), position
    T * i + j): undoing G (full column rank) on both sides gives the weight back."""
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    u = winograd.transform_weight(weight.float(), tile).double()
    g = torch.tensor(winograd._G[tile], dtype=torch.float64)
    side = tile + 2
    assert u.shape == (side * side, 2, 3)
    left = torch.linalg.pinv(g)
    back = torch.einsum("ki,ijco,lj->ockl", left, u.reshape(side, side, 2, 3), left)
    assert (back - weight).abs().max().item() < 1e-5


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
@pytest.mark.parametrize(("height", "width"), [(2, 2), (2, 9), (7, 5), (23, 18)])
@pytest.mark.parametrize("tile", [4, 6])
def test_padding_is_read_in_place_like_f_pad(kernel, pad_mode, height, width, tile) -> None:
    conv = _conv(32, 32, True, seed=height * width)
    x = torch.randn(1, 32, height, width).contiguous(memory_format=torch.channels_last)
    mode = "reflect" if pad_mode == "reflect" else "constant"
    for sides in range(16):
        padding = tuple((sides >> bit) & 1 for bit in range(4))  # left, right, top, bottom
        if height + padding[2] + padding[3] < 3 or width + padding[0] + padding[1] < 3:
            continue
        expected = F.conv2d(F.pad(x, padding, mode=mode), conv.weight, conv.bias)
        out = winograd.conv3x3(
            kernel, x, conv, padding=padding, pad_mode=pad_mode, slope=0.2, tile=tile
        )
        _close(out, _leaky(expected, 0.2), tile)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"padding": (2, 0, 0, 0)}, "0 or 1 per side"),
        ({"pad_mode": "circular"}, "pad_mode"),
        ({"padding": (1, 1, 0, 0), "pad_mode": "reflect", "width": 1}, "at least 2x2"),
    ],
)
def test_bad_padding_is_refused(kernel, kwargs, message) -> None:
    width = kwargs.pop("width", 8)
    with pytest.raises(ValueError, match=message):
        winograd.conv3x3(kernel, torch.rand(1, 32, 8, width), nn.Conv2d(32, 32, 3), **kwargs)


@pytest.mark.parametrize("tile", [4, 6])
def test_closed_form_kernels(kernel, tile) -> None:
    """A centre tap copies the input; an all-ones kernel sums each 3x3 window."""
    conv = nn.Conv2d(32, 32, 3, bias=False)
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(1, 32, 13, 10, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[torch.arange(32), torch.arange(32), 1, 1] = 1.0
    # Bounds relative to the values, about 10x the float32 rounding seen on AVX-512 and AVX2
    # (a wrong tap or transform is off by the size of the values themselves): an absolute
    # 1e-5 on window sums up to 9 was within 1.3x of the rounding and failed on one input.
    looser = TOLERANCE[tile] / TOLERANCE[4]  # F(6x6) rounds more
    copied = winograd.conv3x3(kernel, x, conv, tile=tile)
    assert (copied - x[..., 1:-1, 1:-1]).abs().max() < 1e-5 * looser
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[torch.arange(32), torch.arange(32)] = 1.0
    window_sums = sum(x[..., i : i + 11, j : j + 8] for i in range(3) for j in range(3))
    error = (winograd.conv3x3(kernel, x, conv, tile=tile) - window_sums).abs().max()
    assert error < 2e-5 * looser * window_sums.abs().max()


@pytest.mark.parametrize("slope", [0.2, 0.0, -0.5, 1.7])
@pytest.mark.parametrize("tile", [4, 6])
def test_fused_residual_and_activation(kernel, slope, tile) -> None:
    conv = _conv(32, 32, True, seed=3)
    x = torch.randn(1, 32, 21, 26).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(1, 32, 19, 24).contiguous(memory_format=torch.channels_last)
    out = winograd.conv3x3(kernel, x, conv, slope=slope, residual=residual, tile=tile)
    _close(out, _leaky(F.conv2d(x, conv.weight, conv.bias) + residual, slope), tile)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("tile", [4, 6])
def test_result_written_over_the_residual(kernel, tile, threads) -> None:
    """into_residual: the same values as a fresh output, in the residual's own memory (a crop
    of a larger tensor here, whose other pixels stay untouched), split across threads too."""
    conv = _conv(32, 32, True, seed=8)
    x = torch.randn(1, 32, 47, 38).contiguous(memory_format=torch.channels_last)
    big = torch.randn(1, 32, 50, 44).contiguous(memory_format=torch.channels_last)
    residual = big[..., 2:47, 3:39]
    expected = winograd.conv3x3(
        kernel, x, conv, slope=0.2, residual=residual.clone(), tile=tile, threads=threads
    )
    outside = big.clone()
    outside[..., 2:47, 3:39] = 0
    out = winograd.conv3x3(
        kernel, x, conv, slope=0.2, residual=residual, tile=tile, threads=threads,
        into_residual=True,
    )  # fmt: skip
    assert out.data_ptr() == residual.data_ptr()
    assert torch.equal(out, expected)
    assert torch.equal(residual, expected)
    big[..., 2:47, 3:39] = 0
    assert torch.equal(big, outside)
    with pytest.raises(ValueError, match="needs a residual"):
        winograd.conv3x3(kernel, x, conv, into_residual=True)


@pytest.mark.parametrize("tile", [4, 6])
def test_second_input_read_as_concatenated_channels(kernel, tile) -> None:
    """x2: the conv of cat([x, x2]) without the concatenation, the parts crops of tensors of
    different widths and channel counts (so their row and pixel strides differ), over every
    kind of border (the padded tiles gather from both parts) and split across threads: bit
    for bit what the concatenated input gives, and within rounding of F.conv2d."""
    width = kernel.vector_width
    first, second = 2 * width, width
    conv = _conv(first + second, 2 * width, True, seed=11)
    big_first = torch.randn(1, first, 40, 50).contiguous(memory_format=torch.channels_last)
    big_second = torch.randn(1, second, 31, 27).contiguous(memory_format=torch.channels_last)
    x, x2 = big_first[..., 3:26, 7:30], big_second[..., 5:28, 1:24]
    joined = torch.cat([x, x2], dim=1).contiguous(memory_format=torch.channels_last)
    for padding in [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1)]:
        for pad_mode in ("zeros", "reflect"):
            for threads in (1, 3):
                kwargs = dict(padding=padding, pad_mode=pad_mode, slope=0.2, threads=threads,
                              tile=tile)  # fmt: skip
                out = winograd.conv3x3(kernel, x, conv, x2=x2, **kwargs)
                assert torch.equal(out, winograd.conv3x3(kernel, joined, conv, **kwargs))
                mode = "reflect" if pad_mode == "reflect" else "constant"
                expected = F.conv2d(F.pad(joined, padding, mode=mode), conv.weight, conv.bias)
                _close(out, _leaky(expected, 0.2), tile)
    with pytest.raises(ValueError, match="does not match"):
        winograd.conv3x3(kernel, x, conv, x2=x2[..., 1:, :])
    with pytest.raises(ValueError, match=f"takes {first + second} channels"):
        winograd.conv3x3(kernel, x, conv, x2=torch.cat([x2, x2], dim=1))


@pytest.mark.parametrize("threads", [1, 3])
def test_result_written_into_a_given_crop(kernel, threads) -> None:
    """out=: the result lands in a crop of a larger channels-last tensor (the feature cache),
    equal to a fresh output bit for bit, the rest of the tensor untouched; a residual is
    read, not written."""
    conv = _conv(32, 32, True, seed=9)
    x = torch.randn(1, 32, 30, 27).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(1, 32, 28, 25).contiguous(memory_format=torch.channels_last)
    residual_before = residual.clone()
    big = torch.randn(1, 32, 40, 41).contiguous(memory_format=torch.channels_last)
    outside = big.clone()
    outside[..., 5:33, 9:34] = 0
    kwargs = dict(slope=0.2, residual=residual, tile=6, threads=threads)
    expected = winograd.conv3x3(kernel, x, conv, **kwargs)
    out = winograd.conv3x3(kernel, x, conv, out=big[..., 5:33, 9:34], **kwargs)
    assert out.data_ptr() == big[..., 5:33, 9:34].data_ptr()
    assert torch.equal(out, expected)
    assert torch.equal(residual, residual_before)
    big[..., 5:33, 9:34] = 0
    assert torch.equal(big, outside)
    with pytest.raises(ValueError, match="no out as well"):
        winograd.conv3x3(
            kernel, x, conv, residual=residual, into_residual=True, out=big[..., :28, :25]
        )
    with pytest.raises(ValueError, match="out must be a float32"):
        winograd.conv3x3(kernel, x, conv, out=big[..., :27, :25])
    with pytest.raises(ValueError, match="channels-last"):
        winograd.conv3x3(kernel, x, conv, out=torch.empty(1, 32, 28, 25))


def test_crops_and_other_layouts(kernel) -> None:
    """Crops of a channels-last tensor are read in place; NCHW input is accepted too."""
    conv = _conv(64, 32, True, seed=4)
    big = torch.randn(1, 64, 40, 50).contiguous(memory_format=torch.channels_last)
    crop = big[..., 5:30, 7:41]
    residual_big = torch.randn(1, 32, 40, 50).contiguous(memory_format=torch.channels_last)
    residual = residual_big[..., 3:26, 2:34]
    expected = _leaky(F.conv2d(crop, conv.weight, conv.bias) + residual, 0.2)
    _close(winograd.conv3x3(kernel, crop, conv, slope=0.2, residual=residual), expected)
    _close(winograd.conv3x3(kernel, crop.contiguous(), conv, slope=0.2,
                                  residual=residual.contiguous()), expected)  # fmt: skip


@pytest.mark.parametrize("tile", [4, 6])
def test_threads_split_tiles_without_changing_results(kernel, tile) -> None:
    conv = _conv(32, 64, True, seed=5)
    x = torch.randn(1, 32, 90, 77).contiguous(memory_format=torch.channels_last)
    one = winograd.conv3x3(kernel, x, conv, threads=1, tile=tile)
    two = winograd.conv3x3(kernel, x, conv, threads=2, tile=tile)
    assert torch.equal(one, two)


def test_weights_changed_in_place_are_transformed_again(kernel) -> None:
    conv = _conv(32, 32, False, seed=6)
    x = torch.randn(1, 32, 12, 12).contiguous(memory_format=torch.channels_last)
    for tile in (4, 6):
        winograd.conv3x3(kernel, x, conv, tile=tile)
    with torch.no_grad():
        conv.weight.mul_(-2.0)
    for tile in (4, 6):  # each tile size's cached transform is renewed
        _close(winograd.conv3x3(kernel, x, conv, tile=tile), F.conv2d(x, conv.weight), tile)


def test_supports_only_what_the_kernel_runs(kernel) -> None:
    width = kernel.vector_width
    assert winograd.supports(nn.Conv2d(2 * width, width, 3), kernel)
    assert not winograd.supports(nn.Conv2d(3, 32, 3), kernel)  # the RGB input conv
    assert not winograd.supports(nn.Conv2d(32, 1, 3), kernel)  # the light-map conv
    assert not winograd.supports(nn.Conv2d(32, 32, 3, stride=2), kernel)
    assert not winograd.supports(nn.Conv2d(32, 32, 5), kernel)


def test_too_small_input_is_refused(kernel) -> None:
    with pytest.raises(ValueError, match="at least 3x3"):
        winograd.conv3x3(kernel, torch.rand(1, 32, 2, 8), nn.Conv2d(32, 32, 3))


@pytest.mark.parametrize("tile", ["4", "6"])
def test_network_on_winograd_backend_equals_reference(kernel, monkeypatch, tile) -> None:
    monkeypatch.setenv("RAVE_CONV_BACKEND", "winograd")
    monkeypatch.setenv("RAVE_WINOGRAD_TILE", tile)
    torch.manual_seed(0)
    net = EnhancementNet().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0 if p.ndim == 4 else 1.0)
        net.cond_add1.bias.fill_(0.5)
        image = torch.rand(1, 3, 83, 121, generator=torch.Generator().manual_seed(8))
        reference = net(image)
    assert reference.std() > 1e-2
    for tile in (None, 30):
        light = predict_light_map(net, image, tile=tile)
        assert (light - reference).abs().max().item() <= 1e-4


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction sets only"
)
@pytest.mark.parametrize(
    ("flags", "width"),
    [
        (("-march=x86-64",), 4),
        (("-mavx2", "-mfma", "-mno-avx512f"), 8),
        (("-mavx2", "-mfma", "-mavx512f"), 16),
    ],
    ids=["sse2", "avx2", "avx512"],
)
def test_portable_builds_are_exact(tmp_path, flags, width) -> None:
    """The source also compiles for other vector widths and register blockings than this
    CPU's best, and gives the same results there with both tile sizes, at every tile
    remainder and border. The AVX-512 build is only compiled on CPUs without AVX-512."""
    assert COMPILER is not None  # the module is skipped without one
    if width == 16 and not _has_avx512():
        done = subprocess.run(
            [COMPILER, *winograd._BASE_FLAGS, *flags, "-o", str(tmp_path / "w16.so"),
             "-x", "c", "-"],
            input=winograd._source(), capture_output=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()
        pytest.skip("compiled for AVX-512; this CPU cannot run it")
    built = winograd.build_kernel(COMPILER, tmp_path / f"w{width}.so", [flags])
    assert built.vector_width == width
    for tile in (4, 6):
        for cin, cout in [(32, 64), (64, 32), (16, 16)]:
            conv = _conv(cin, cout, True, seed=cin + cout)
            x = torch.randn(1, cin, 23, 18).contiguous(memory_format=torch.channels_last)
            _close(winograd.conv3x3(built, x, conv, slope=0.2, tile=tile),
                   _leaky(F.conv2d(x, conv.weight, conv.bias), 0.2), tile)  # fmt: skip
        # 7 vectors of output channels: every register blocking of the products in turn
        # (4, 2 and 1 vectors per row; 2, 2, 2 and 1 where there are too few registers).
        _tile_remainders(built, tile, width, 7 * width)


def test_built_once_then_reused(fresh_loader, isolated_model_cache) -> None:
    first = winograd.load_kernel()
    assert first is not None and first.path.parent == isolated_model_cache / "kernels"
    built_at = first.path.stat().st_mtime_ns
    winograd.load_kernel.cache_clear()
    second = winograd.load_kernel()
    assert second is not None and second.path == first.path
    assert second.path.stat().st_mtime_ns == built_at
    assert "loaded from" in winograd.kernel_status()


def test_without_a_compiler_the_engine_falls_back(fresh_loader, monkeypatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert winograd.load_kernel() is None
    assert "no C compiler" in winograd.kernel_status()
    assert select_backend("cpu") == "channels_last"
    monkeypatch.setenv("RAVE_CONV_BACKEND", "winograd")
    with pytest.raises(ValueError, match=r"RAVE_CONV_BACKEND=winograd.*no C compiler"):
        select_backend("cpu")


def test_a_failing_compiler_falls_back(
    fresh_loader, monkeypatch, tmp_path, isolated_model_cache
) -> None:
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho 'fatal: no' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CC", str(broken))
    assert winograd.load_kernel() is None
    assert "failed: fatal: no" in winograd.kernel_status()
    assert select_backend("cpu") == "channels_last"
    assert not list(Path(isolated_model_cache).glob("**/*.so"))  # nothing half-built left


def test_damaged_cached_library_is_rebuilt(isolated_model_cache) -> None:
    # In subprocesses: a process that has loaded a library must not see it damaged.
    script = (
        "from rave.inference import winograd; k = winograd.load_kernel(); "
        "print(k.path if k else winograd.kernel_status())"
    )

    def load() -> Path:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        return Path(done.stdout.strip())

    path = load()
    assert path.parent == isolated_model_cache / "kernels"
    path.write_bytes(b"\x7fELF truncated")  # e.g. a copy cut short by a full disk
    assert load() == path
    assert path.stat().st_size > 1000


def test_unwritable_cache_falls_back_and_says_where(fresh_loader, monkeypatch, tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("RAVE_HOME", str(blocker))
    assert winograd.load_kernel() is None
    assert "RAVE_HOME" in winograd.kernel_status()
    assert select_backend("cpu") == "channels_last"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 only")
def test_x86_build_without_avx_is_not_used(fresh_loader, monkeypatch) -> None:
    # As if -march=native were refused: only the portable flags compile.
    monkeypatch.setattr(winograd, "_NATIVE_FLAG_SETS", (("-march=x86-64",),))
    assert winograd.load_kernel() is None
    assert "without AVX" in winograd.kernel_status()
    assert select_backend("cpu") == "channels_last"


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86 only")
def test_kernel_flags_select_the_instruction_set(fresh_loader, monkeypatch) -> None:
    """RAVE_KERNEL_FLAGS builds another instruction set than this CPU's best (the suite runs
    the network through an AVX2 build that way on AVX-512 machines), cached apart from it."""
    native = winograd.load_kernel()
    assert native is not None
    winograd.load_kernel.cache_clear()
    monkeypatch.setenv("RAVE_KERNEL_FLAGS", "-march=x86-64")  # SSE2: 4 floats per vector
    forced = winograd.load_kernel()
    assert forced is not None and forced.vector_width == 4
    assert forced.path != native.path
    assert "RAVE_KERNEL_FLAGS=-march=x86-64" in winograd.kernel_status()
    torch.manual_seed(0)  # a random network's light map may be all zero: not left to chance
    net = EnhancementNet().eval()
    assert net.cond_add1.bias is not None
    with torch.no_grad():
        net.cond_add1.bias.fill_(0.5)
    image = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        reference = net(image)
    light = predict_light_map(net, image, tile=20)
    assert select_backend("cpu") == "winograd"
    assert (light - reference).abs().max().item() <= 1e-4
