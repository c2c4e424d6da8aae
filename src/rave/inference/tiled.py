"""Exact tiled inference of the enhancement network in bounded memory.

Whole-image inference holds 64-channel feature maps of the full photo (about 5.7 GB for
2048x1536 in float32). Plain overlapping tiles are not exact here because the pyramid-pooling
block averages over the *whole* image. This module is exact in two passes:

1. **Pooled statistics.** The pyramid pooling input depends only on a 5-pixel neighbourhood
   (``cond1`` and two residual blocks: five 3x3 convs). Tile by tile (with a 5-pixel halo),
   compute it and accumulate its sums over every adaptive-pooling bin (1, 2, 3 and 6 per
   side), giving the exact pooled context of the whole image.
2. **Tiles with a halo.** Each output tile is computed from its input grown by a 17-pixel
   halo (the network's receptive radius: 17 3x3 convs). Every conv pads only on sides where
   the tile touches the image border (reflection or zeros, as the whole-image network does
   there) and is "valid" elsewhere, so the tile sees exactly what the whole image would.
   The pooled branches are upsampled for the tile's own coordinates with the same
   ``align_corners=True`` bilinear weights as ``F.interpolate``.

The result equals whole-image inference to float32 rounding (about 1e-6), for any tile size.

On CPU, tiles run one per thread and their 3x3 convolutions go through rave's Winograd
kernel (:mod:`rave.inference.winograd`, with bias, residual and activation fused) when it
can be built, else through oneDNN (:func:`select_backend`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rave.inference import winograd
from rave.network.enhancer import (
    FEATURE_LAYERS,
    HEAD_LAYERS,
    LEAKY_SLOPE,
    EnhancementNet,
    PyramidPooling,
    ResidualBlock,
    apply_light_map,
    bin_membership,
    check_strength,
)

__all__ = [
    "FEATURE_HALO",
    "FULL_HALO",
    "DeadlineExceeded",
    "auto_tile_size",
    "enhance_tensor",
    "is_memory_bound",
    "predict_light_map",
    "select_backend",
]

Deadline = float | Callable[[], bool] | None
"""A ``time.monotonic()`` value, or a function that says when to give up (e.g. on Ctrl-C)."""

FEATURE_HALO = 5  # 3x3 convs before the pyramid pooling: cond1 + 2 residual blocks x 2
FULL_HALO = 17  # all 3x3 convs of the network
_BACKENDS = ("winograd", "nnpack", "channels_last", "default")
_CHANNELS_LAST_BACKENDS = ("winograd", "channels_last")
# Working-set budget of one tile on the CPU: about 14 live tensors of 32 channels in float32.
# Peak working set of one tile, in bytes per pixel of its crop (tile + halo), measured
# with glibc returning freed blocks (see rave.cli.enhance): NNPACK keeps Winograd-transformed
# copies of its input and output, so it needs more than oneDNN. rave's Winograd kernel
# transforms a block of tiles at a time: under 1 MB of scratch per call (0.8 MB with its
# default F(6x6) tiles, 64->64 channels; 0.9 MB with F(4x4)), whatever the crop size. With
# its residual blocks written in place and the head read without a concatenation, the rise
# of peak RSS over one whole-image tile of 500 to 900 px (feature cache off, one thread)
# was 590-690 bytes per pixel (690-780 before those two changes); 800 leaves a margin.
_BYTES_PER_CROP_PIXEL = {"winograd": 800, "nnpack": 1900, "channels_last": 1150, "default": 1150}
# CPU budget of the working sets of the tiles in flight (one per thread). Photos too large
# for the feature cache get the smaller one, so that a 24-megapixel photo stays within
# 1 GB of resident memory in all (about 0.7 GB of which is PyTorch itself). Tiles of about
# 256 px were the fastest on 2048x1536 (benchmarks/bench_inference.py): larger ones leave
# the cache, smaller ones recompute more halo.
# (136 MB at 800 bytes per pixel: tiles of 274 px at 2048x1536 on 2 threads, about what 192
# MB at the former 1150 gave; 192 MB now would give 338 px tiles: tiles of 256 to 768 px were
# no faster in two rounds, and the peak was 1.22 GB instead of 1.14 in bench_peers.py.)
_CPU_TILE_BUDGET_BYTES = 136 * 2**20
# 24 MP, 2 threads: 96 MB gives tiles of 216 px instead of 136 (64 MB at 1150 bytes per
# pixel): 0.87x the network's time, as the 17-pixel halos are recomputed less; peak RSS of a
# JPEG through `rave enhance` / `Enhancer.enhance_file` / `rave serve` 752 / 751 / 799 MB
# (752 / 750 / 775 before), of a 16-bit TIFF through the first two 803 / 815 MB (694 before;
# `benchmarks/bench_enhance_memory.py --format tiff16`). 128 MB (255 px tiles) took 0.75x
# the time but 840 MB in `rave serve` with a JPEG: too close to 1 GB for 16-bit uploads.
_CPU_TILE_BUDGET_LARGE_IMAGE_BYTES = 96 * 2**20
# Full-size pyramid-pooling input kept between the passes when at most this large
# (2048x1536 needs 400 MB; a 24 MP photo would need 3 GB and recomputes instead).
_CPU_FEATURE_CACHE_BYTES = 512 * 2**20


# Columns per block of the light-map refinement (plus its reach on each side): the guided
# filter's temporaries are a dozen single-channel maps of the block.
_REFINE_BLOCK_COLUMNS = 1024


@dataclass(frozen=True)
class _Region:
    """A rectangle ``[top, bottom) x [left, right)`` of the full image, with its size."""

    top: int
    bottom: int
    left: int
    right: int
    height: int  # full image height
    width: int  # full image width

    def padding(self) -> tuple[int, int, int, int]:
        """``(left, right, top, bottom)`` padding of 1 on the sides lying on the image border."""
        return (
            int(self.left == 0),
            int(self.right == self.width),
            int(self.top == 0),
            int(self.bottom == self.height),
        )

    def grow(self, halo: int) -> _Region:
        """This region extended by ``halo`` pixels per side, clipped to the image."""
        return _Region(
            max(0, self.top - halo),
            min(self.height, self.bottom + halo),
            max(0, self.left - halo),
            min(self.width, self.right + halo),
            self.height,
            self.width,
        )

    def shrink(self) -> _Region:
        """The region a padded-on-border, valid-elsewhere 3x3 conv produces from this one."""
        pad_l, pad_r, pad_t, pad_b = self.padding()
        return _Region(
            self.top + 1 - pad_t,
            self.bottom - 1 + pad_b,
            self.left + 1 - pad_l,
            self.right - 1 + pad_r,
            self.height,
            self.width,
        )


def _conv3x3(
    x: Tensor,
    region: _Region,
    conv: nn.Conv2d,
    mode: str,
    backend: str,
    *,
    slope: float | None = None,
    residual: Tensor | None = None,
    more_channels: Tensor | None = None,
    out: Tensor | None = None,
) -> tuple[Tensor, _Region]:
    """``act(conv(x) + residual)`` on a crop of the image, padding only on image-border sides.

    ``mode`` is the padding ("reflect" or "zeros"); ``slope`` the leaky-ReLU slope of the
    activation (``None``: no activation); ``residual`` is shaped like the output, and the
    Winograd kernel writes the result over it (it must not share memory with ``x``).
    ``more_channels``: the conv's input is ``cat([x, more_channels], dim=1)``; the Winograd
    kernel reads both in place, other backends get the concatenation. ``out``: a tensor of
    the output's shape (e.g. a crop of the feature cache) to write the result into instead
    of over the residual or into a new tensor; it is returned.
    """
    pad = region.padding()
    kernel = winograd.load_kernel() if backend == "winograd" else None
    if kernel is not None and not winograd.supports(conv, kernel):
        kernel = None
    if more_channels is not None and (
        kernel is None
        or x.shape[1] % kernel.vector_width
        or more_channels.shape[1] % kernel.vector_width
    ):
        x = _concatenate(x, more_channels, backend in _CHANNELS_LAST_BACKENDS)
        more_channels = None
    if kernel is not None:
        result = winograd.conv3x3(
            kernel,
            x,
            conv,
            padding=pad,
            pad_mode="reflect" if mode == "reflect" else "zeros",
            slope=1.0 if slope is None else slope,
            residual=residual,
            threads=torch.get_num_threads(),
            into_residual=residual is not None and out is None,
            x2=more_channels,
            out=out,
        )
        return result, region.shrink()
    if backend in _CHANNELS_LAST_BACKENDS and _runs_by_taps(conv):
        result = _conv3x3_by_taps(x, conv, pad, mode)
    else:
        result = _conv3x3_library(x, conv, pad, mode, backend)
    if residual is not None:
        result += residual
    if slope is not None:
        result = (
            F.leaky_relu_(result, slope)
            if slope >= 0
            else F.prelu(result, result.new_tensor(slope))
        )
    if out is not None:
        result = out.copy_(result)
    return result, region.shrink()


def _conv3x3_library(
    x: Tensor, conv: nn.Conv2d, pad: tuple[int, int, int, int], mode: str, backend: str
) -> Tensor:
    """``conv(pad(x))`` through PyTorch's convolutions (oneDNN, NNPACK or the device's)."""
    if backend == "winograd":
        x = x.contiguous(memory_format=torch.channels_last)
    if any(pad):
        x = F.pad(x, pad, mode="reflect" if mode == "reflect" else "constant")
    if backend == "nnpack":
        bias = conv.bias if conv.bias is not None else _zero_bias(conv)
        # A private op torch's stubs do not export (the NNPACK backend has no public name).
        out = torch._nnpack_spatial_convolution(  # pyright: ignore[reportPrivateImportUsage]
            x.contiguous(), conv.weight, bias, [0, 0]
        )
    elif backend in _CHANNELS_LAST_BACKENDS:
        # oneDNN writes a channels-last result when input or weight is channels-last; the
        # input alone did not make it so for the 3-channel first conv (its NCHW output was
        # converted by the next conv and its residual: 2% of the engine's CPU time).
        out = F.conv2d(x, conv.weight.contiguous(memory_format=torch.channels_last), conv.bias)
    else:
        out = F.conv2d(x, conv.weight, conv.bias)
    return out


# 3x3 convs with at most this many output channels run as per-tap products on CPU: on a
# 386x344 crop of 32 channels (Xeon, one thread) 3.1 ms against oneDNN's 15.1 for 1 output,
# 8.6 vs 14.5 for 3, 8.2 vs 11.6 for 4, but 31.1 vs 11.5 for 8.
_TAPS_MAX_OUTPUTS = 4


def _runs_by_taps(conv: nn.Conv2d) -> bool:
    return conv.out_channels <= _TAPS_MAX_OUTPUTS and winograd.is_plain_3x3(conv)


def _conv3x3_by_taps(
    x: Tensor, conv: nn.Conv2d, pad: tuple[int, int, int, int], mode: str
) -> Tensor:
    """``conv(pad(x))`` for a 3x3 conv with few output channels: one matrix product, then
    nine shifted sums.

    ``x``: ``(B, C_in, H, W)``, best channels-last (crops are read in place). Returns
    ``(B, C_out, H', W')``, contiguous.

    oneDNN runs the network's last conv (32 -> 1) at about 3 GFLOP/s, a quarter of the
    engine's time outside the Winograd kernel at 2048x1536. Here every pixel's channels are
    multiplied by the ``(9 C_out, C_in)`` matrix of the taps (one matrix product; PyTorch
    copies a cropped input into one matrix first), giving one plane per tap and output
    channel; padding, a per-pixel choice of source, commutes with that linear map, so the
    9 C_out planes are padded instead of the C_in channels, then shifted and summed: 0.3x
    oneDNN's time, 0.3x with reflection padding too (a 386x344 crop, 32 -> 1).
    """
    cout = conv.out_channels
    taps = conv.weight.permute(0, 2, 3, 1).reshape(cout * 9, x.shape[1])  # rows (o, ky, kx)
    planes = torch.matmul(taps, x.permute(0, 2, 3, 1).transpose(-1, -2))  # (B, H, 9 C_out, W)
    planes = planes.permute(0, 2, 1, 3)
    if any(pad):
        planes = F.pad(planes, pad, mode="reflect" if mode == "reflect" else "constant")
    out_height, out_width = planes.shape[-2] - 2, planes.shape[-1] - 2
    out = planes[:, 0::9, :out_height, :out_width].clone()
    for tap in range(1, 9):
        dy, dx = divmod(tap, 3)
        out += planes[:, tap::9, dy : dy + out_height, dx : dx + out_width]
    if conv.bias is not None:
        out += conv.bias.view(1, cout, 1, 1)
    return out


def _concatenate(x: Tensor, more: Tensor, channels_last: bool) -> Tensor:
    """``cat([x, more], dim=1)``, channels-last if ``channels_last``."""
    if not channels_last:
        return torch.cat([x, more], dim=1)
    # Written straight into a channels-last result: torch.cat left to choose the layout
    # wrote a contiguous one here and a conversion copied it again (15% of the engine's
    # single-thread CPU time at 2048x1536; cat with out=: 0.4x their time).
    batch, _, height, width = x.shape
    joined = torch.empty(
        (batch, x.shape[1] + more.shape[1], height, width),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last,
    )
    return torch.cat([x, more], dim=1, out=joined)


def _zero_bias(conv: nn.Conv2d) -> Tensor:
    # NNPACK needs a bias tensor; the residual-block convs have none.
    return torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)


def select_backend(device: torch.device | str) -> str:
    """How 3x3 convolutions run: ``"winograd"``, ``"channels_last"``, ``"nnpack"`` or
    ``"default"``.

    On CPU, rave's own Winograd kernel (``"winograd"``, :mod:`rave.inference.winograd`)
    when it can be built here, since it does a fifth of the multiplications; otherwise
    channels-last oneDNN convolutions (``"channels_last"``), the fastest of PyTorch's own.
    NNPACK's Winograd convolutions (``"nnpack"``) were no faster than oneDNN on an AVX-512
    CPU and need 1.7x the memory (benchmarks/bench_inference.py). On other devices the
    framework's default layout is used. The environment variable ``RAVE_CONV_BACKEND``
    overrides the choice.
    """
    forced = os.environ.get("RAVE_CONV_BACKEND")
    if forced:
        if forced not in _BACKENDS:
            raise ValueError(f"RAVE_CONV_BACKEND must be one of {_BACKENDS}, got {forced!r}")
        # is_available() also initialises NNPACK, which its convolution needs first.
        if forced == "nnpack" and not torch.backends.nnpack.is_available():
            raise ValueError("RAVE_CONV_BACKEND=nnpack, but this PyTorch build has no NNPACK")
        if forced == "winograd" and winograd.load_kernel() is None:
            raise ValueError(
                f"RAVE_CONV_BACKEND=winograd, but the kernel is {winograd.kernel_status()}"
            )
        return forced
    if torch.device(device).type != "cpu":
        return "default"
    return "winograd" if winograd.load_kernel() is not None else "channels_last"


def _crop_to(x: Tensor, region: _Region, inner: _Region) -> Tensor:
    return x[
        ...,
        inner.top - region.top : inner.bottom - region.top,
        inner.left - region.left : inner.right - region.left,
    ]


def _residual_block(
    block: ResidualBlock, x: Tensor, region: _Region, backend: str, out: Tensor | None = None
) -> tuple[Tensor, _Region]:
    y, inner = _conv3x3(x, region, block.conv1, "reflect", backend, slope=LEAKY_SLOPE)
    return _conv3x3(
        y, inner, block.conv2, "reflect", backend,
        slope=LEAKY_SLOPE, residual=_crop_to(x, region, inner.shrink()), out=out,
    )  # fmt: skip


# Slope of the activation that follows a "conv:NAME" layer of FEATURE_LAYERS/HEAD_LAYERS
# (fused into the convolution); None: no activation.
_ACTIVATION_SLOPES: dict[str, float | None] = {"": None, "lrelu": LEAKY_SLOPE, "relu": 0.0}


def _run_layers(
    net: EnhancementNet,
    layers: tuple[tuple[str, str], ...],
    x: Tensor,
    region: _Region,
    backend: str,
    out: Tensor | None = None,
) -> tuple[Tensor, _Region]:
    """``layers`` of the network (its own declared order) on a crop, shrinking ``region``;
    the last one writes into ``out`` if given (shaped like the result)."""
    for index, (name, kind) in enumerate(layers):
        layer = getattr(net, name)
        target = out if index == len(layers) - 1 else None
        if kind == "block":
            x, region = _residual_block(layer, x, region, backend, out=target)
        else:
            slope = _ACTIVATION_SLOPES[kind.partition(":")[2]]
            x, region = _conv3x3(
                x, region, layer, layer.padding_mode, backend, slope=slope, out=target
            )
    return x, region


def _features(
    net: EnhancementNet, image: Tensor, region: _Region, backend: str, out: Tensor | None = None
) -> tuple[Tensor, _Region]:
    """The pyramid-pooling input for a crop of the image (shrunk by up to 5 px per side),
    written into ``out`` if given."""
    return _run_layers(net, FEATURE_LAYERS, image, region, backend, out=out)


def _after_convs(region: _Region, convs: int) -> _Region:
    """The region ``convs`` padded-on-border 3x3 convs leave of ``region``."""
    for _ in range(convs):
        region = region.shrink()
    return region


def _cumulative(sizes: tuple[int, ...]) -> list[int]:
    """Start offsets of consecutive blocks of the given sizes."""
    starts, total = [], 0
    for size in sizes:
        starts.append(total)
        total += size
    return starts


def _membership(length: int, bins: tuple[int, ...], start: int, stop: int, like: Tensor) -> Tensor:
    """``(sum(bins), stop - start)`` 0/1 matrix: does coordinate ``start + j`` fall in bin
    ``i`` (the bins of every grid size, one after another)."""
    coords = torch.arange(start, stop, device=like.device)
    return torch.cat([bin_membership(coords, length, b) for b in bins]).to(like.dtype)


def _bin_sizes(length: int, bins: int) -> Tensor:
    """``(bins,)`` number of coordinates in each adaptive-pooling bin (float64)."""
    return bin_membership(torch.arange(length), length, bins).sum(dim=1).double()


def _upsample_weights(out_size: int, in_size: int, start: int, stop: int, like: Tensor) -> Tensor:
    """``(stop - start, in_size)`` bilinear weights of ``align_corners=True`` upsampling.

    Rows are the output coordinates ``start..stop-1`` of an ``in_size -> out_size`` upsample,
    computed in float32 as ``F.interpolate`` does, so tiles reproduce it exactly.
    """
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    src = torch.arange(start, stop, device=like.device, dtype=torch.float32) * scale
    lower = src.floor().long().clamp_(max=in_size - 1)
    frac = src - lower.float()
    upper = (lower + 1).clamp_(max=in_size - 1)
    weights = torch.zeros(stop - start, in_size, device=like.device, dtype=torch.float32)
    rows = torch.arange(stop - start, device=like.device)
    weights.index_put_((rows, lower), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, upper), frac, accumulate=True)
    return weights.to(like.dtype)


def _to_unit_float(x: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """Integer (uint8/uint16) or float pixels -> float32 in [0, 1] on ``device``."""
    if x.dtype == torch.uint8:
        x = x.to(device).float().div_(255.0)
    elif x.dtype in (torch.uint16, torch.int32, torch.int64):
        # uint16 photos: divide in float32 straight from 16 bits (no 8-bit detour).
        x = x.to(device).float().div_(65535.0)
    else:
        x = x.to(device, torch.float32)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _tiles(length: int, tile: int) -> list[tuple[int, int]]:
    count = max(1, math.ceil(length / tile))
    step = math.ceil(length / count)  # equal tiles: no thin sliver at the end
    return [(s, min(s + step, length)) for s in range(0, length, step)]


def auto_tile_size(
    height: int,
    width: int,
    device: torch.device | str = "cpu",
    *,
    backend: str | None = None,
    cached_features: bool | None = None,
) -> int | None:
    """Tile side that keeps one tile's working set within a memory budget.

    Args:
        height, width: image size in pixels.
        device: where the network runs; on CUDA the budget is a quarter of free memory.
        backend: convolution backend (default: :func:`select_backend` for ``device``).
        cached_features: whether pass 2 reads the features from pass 1 (smaller halo);
            default: whether they fit the cache budget.

    Returns:
        the tile side in pixels, or ``None`` when the whole image fits in one tile.
    """
    device = torch.device(device)
    backend = backend or select_backend(device)
    if cached_features is None:
        cached_features = _feature_cache_fits(height * width, device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 4
    else:
        budget = _CPU_TILE_BUDGET_BYTES if cached_features else _CPU_TILE_BUDGET_LARGE_IMAGE_BYTES
        budget //= max(1, torch.get_num_threads())  # one tile in flight per thread
    halo = FULL_HALO - FEATURE_HALO if cached_features else FULL_HALO
    side = int(math.sqrt(budget / _BYTES_PER_CROP_PIXEL[backend])) - 2 * halo
    side = max(64, side)
    return None if height * width <= side * side else side


class _PooledContext:
    """Exact pyramid-pooling branches of a whole image, evaluated at any tile."""

    def __init__(self, ppm: PyramidPooling, sums: list[Tensor], height: int, width: int) -> None:
        self.height, self.width = height, width
        self.branches: list[Tensor] = []  # (B, 8, b, b) after the 1x1 conv and PReLU
        for branch, bins, total in zip(ppm.features, ppm.bins, sums, strict=True):
            rows, cols = _bin_sizes(height, bins), _bin_sizes(width, bins)
            counts = (rows[:, None] * cols[None, :]).to(total.device, total.dtype)
            pooled = (total / counts).float()
            _, conv, act = cast(nn.Sequential, branch)  # (pool, 1x1 conv, PReLU)
            self.branches.append(act(conv(pooled)))

    def at(self, region: _Region, channels_last: bool = False) -> Tensor:
        """The branches upsampled over ``region`` and concatenated: ``(B, 8 * branches, h,
        w)``, channels-last if ``channels_last`` (the same values either way).

        Bilinear upsampling is separable: ``up[y, x] = sum_i wy[y, i] sum_j pooled[i, j]
        wx[x, j]``. The inner sums of every branch go into one ``(sum of bins, w, C)``
        matrix, zero outside the branch's own rows and channels, so a single matrix product
        with the branches' stacked row weights writes every channel of every pixel at once
        (the zero terms add nothing); four products and a concatenation took longer.
        """
        first = self.branches[0]
        batch, per_branch = first.shape[:2]
        total_bins = sum(pooled.shape[-1] for pooled in self.branches)
        channels = per_branch * len(self.branches)
        width = region.right - region.left
        columns = first.new_zeros(batch, total_bins, width, channels)
        row_weights = []
        offset = 0
        for index, pooled in enumerate(self.branches):
            bins = pooled.shape[-1]
            row_weights.append(
                _upsample_weights(self.height, bins, region.top, region.bottom, pooled)
            )
            wx = _upsample_weights(self.width, bins, region.left, region.right, pooled)
            span = slice(index * per_branch, (index + 1) * per_branch)
            columns[:, offset : offset + bins, :, span] = torch.einsum("bcij,wj->biwc", pooled, wx)
            offset += bins
        rows = torch.cat(row_weights, dim=1)  # (h, total_bins)
        pixels = torch.matmul(rows, columns.view(batch, total_bins, width * channels))
        upsampled = pixels.view(batch, -1, width, channels).permute(0, 3, 1, 2)
        return upsampled if channels_last else upsampled.contiguous()


def _pooled_context(
    net: EnhancementNet,
    image: Tensor,
    tile: int,
    backend: str,
    feature_cache: Tensor | None = None,
    workers: int = 1,
    deadline: Deadline = None,
) -> _PooledContext:
    """Pass 1: sums of the pyramid-pooling input over every bin, tile by tile.

    If ``feature_cache`` (``(B, 32, H, W)``) is given, the features are also stored there so
    that pass 2 need not recompute them.
    """
    _, _, height, width = image.shape
    device = next(net.parameters()).device
    bins = net.PPM1.bins
    # Diagonal blocks of the all-bins sum matrix: rows/cols of bin size b.
    blocks = [slice(start, start + b) for start, b in zip(_cumulative(bins), bins, strict=True)]
    # (B, C, n_bins, n_bins) float64 sum over the tiles done so far. One running sum, not a
    # list of per-tile sums: a 24 MP photo has about 1,300 tiles of 37 KB each (48 MB).
    sums: Tensor | None = None
    sums_lock = threading.Lock()

    def run_tile(inner: _Region, /) -> None:  # positional-only: the wrappers call it so
        nonlocal sums
        _check_deadline(deadline)
        crop = inner.grow(FEATURE_HALO)
        x = _to_unit_float(
            image[..., crop.top : crop.bottom, crop.left : crop.right],
            device,
            channels_last=backend in _CHANNELS_LAST_BACKENDS,
        )
        cached = None
        if feature_cache is not None:
            cached = feature_cache[..., inner.top : inner.bottom, inner.left : inner.right]
        if cached is not None and _after_convs(crop, FEATURE_HALO) == inner:
            # The last conv writes straight into the cache (a copy of the features less).
            feats, _ = _features(net, x, crop, backend, out=cached)
        else:
            feats, region = _features(net, x, crop, backend)
            feats = _crop_to(feats, region, inner)
            if cached is not None:
                cached.copy_(feats)
        # One pair of matmuls sums every bin of every grid size at once (float32 within a
        # tile); tiles add up in float64, as a 24 MP image adds millions of terms.
        rows = _membership(height, bins, inner.top, inner.bottom, feats)
        cols = _membership(width, bins, inner.left, inner.right, feats)
        partial = _bin_sums(rows, feats, cols).double()
        with sums_lock:  # tiles finish in any order, as they did when listed
            sums = partial if sums is None else sums.add_(partial)

    tiles = _tile_grid(height, width, tile)
    run_tile = _trimming_if_memory_bound(run_tile, tiles, height, width, device)
    _for_each_tile(run_tile, tiles, workers)
    assert sums is not None  # at least one tile
    per_grid = [sums[..., block, block] for block in blocks]
    return _PooledContext(net.PPM1, per_grid, height, width)


def _bin_sums(rows: Tensor, x: Tensor, cols: Tensor) -> Tensor:
    """``rows @ x @ cols.T``: ``(B, C, n, m)`` sums of ``x`` (``(B, C, h, w)``) weighted by
    ``rows`` (``(n, h)``) and ``cols`` (``(m, w)``).

    A channels-last crop is read as one ``(h, w * C)`` matrix per image (a view, no copy):
    two plain matrix products, 5x faster than the batched per-channel products PyTorch runs
    on that layout (3% of the engine's CPU time at 2048x1536 before).
    """
    if x.stride(1) != 1:
        return torch.matmul(torch.matmul(rows, x), cols.T)
    batch, channels, height, width = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(batch, height, width * channels)
    by_rows = torch.matmul(rows, pixels).view(batch, -1, width, channels)  # (B, n, w, C)
    return torch.matmul(cols, by_rows).permute(0, 3, 1, 2)  # (B, n, m, C) -> (B, C, n, m)


def _head(
    net: EnhancementNet, x: Tensor, region: _Region, context: _PooledContext, backend: str
) -> tuple[Tensor, _Region]:
    """From the pyramid-pooling input to the light map (shrinks by up to 12 px per side)."""
    context_here = context.at(region, backend in _CHANNELS_LAST_BACKENDS)
    fuse_conv, fuse_act = net.PPM1.fuse
    fuse_conv, fuse_act = cast(nn.Conv2d, fuse_conv), cast(nn.PReLU, fuse_act)
    x, region = _conv3x3(
        x, region, fuse_conv, "zeros", backend,
        slope=_prelu_slope(fuse_act), more_channels=context_here,
    )  # fmt: skip
    del context_here
    return _run_layers(net, HEAD_LAYERS, x, region, backend)


class DeadlineExceeded(TimeoutError):
    """The computation passed its deadline (``time.monotonic()``) and was abandoned."""


def _check_deadline(deadline: Deadline) -> None:
    # Checked once per tile: a caller's time budget (rave serve) ends the run within a tile.
    if deadline is None:
        return
    if deadline() if callable(deadline) else time.monotonic() > deadline:
        raise DeadlineExceeded("the time budget ran out")


def _prelu_slope(prelu: nn.PReLU) -> float:
    if prelu.weight.numel() != 1:
        raise ValueError("the pyramid-pooling PReLU must have a single slope (num_parameters=1)")
    return float(prelu.weight)


def _quantize(values: Tensor, dtype: torch.dtype) -> Tensor:
    """Float values in [0, 1] as ``dtype``: ``round(v * 255)`` / ``round(v * 65535)`` for
    integers, unchanged for floats."""
    if dtype == torch.uint8:
        return values.mul(255.0).round_().to(dtype)
    if dtype == torch.uint16:
        return values.mul(65535.0).round_().to(dtype)
    return values


def _write(out: Tensor, region: _Region, values: Tensor) -> None:
    """Store values (float in [0, 1], or already quantised) into ``out``."""
    target = out[..., region.top : region.bottom, region.left : region.right]
    target.copy_(_quantize(values, out.dtype) if values.is_floating_point() else values)


def _aliases(out: Tensor, image: Tensor) -> bool:
    """Whether ``out`` is ``image`` itself (enhancement in place); refuses partial overlap."""
    if out.device != image.device:
        return False

    def byte_range(x: Tensor) -> tuple[int, int]:
        last = sum((size - 1) * stride for size, stride in zip(x.shape, x.stride(), strict=True))
        return x.data_ptr(), x.data_ptr() + (last + 1) * x.element_size()

    (out_start, out_end), (image_start, image_end) = byte_range(out), byte_range(image)
    if out_end <= image_start or image_end <= out_start:
        return False
    if out.data_ptr() == image.data_ptr() and out.stride() == image.stride():
        if out.dtype != image.dtype:
            raise ValueError("out is the image's memory with another dtype")
        return True
    raise ValueError("out overlaps image without being the same tensor")


# Float pixels beyond this are not photo values on any scale (0-1, 0-255 or 0-65535).
_MAX_PIXEL_MAGNITUDE = 1e6


def _check_light_map(light: Tensor) -> None:
    """Refuse a light map with NaN or infinity (broken weights or input), never an image."""
    if not bool(torch.isfinite(light).all()):
        raise ValueError(
            "the network's light map is not finite (NaN or infinity): the model's weights "
            "are broken"
        )


def _check_image(image: Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(image.shape)}")
    if min(image.shape[-2:]) < 2:
        raise ValueError(
            f"image of {image.shape[-1]}x{image.shape[-2]} pixels (width x height) is too "
            "small: the network needs at least 2x2 pixels"
        )
    if image.is_floating_point():
        # One NaN, infinity or huge value spreads through the pyramid pooling (an average
        # over the whole image) and turns every output pixel black.
        low, high = torch.aminmax(image)
        if not (bool(torch.isfinite(low)) and bool(torch.isfinite(high))):
            raise ValueError("image has non-finite pixel values (NaN or infinity)")
        if max(-float(low), float(high)) > _MAX_PIXEL_MAGNITUDE:
            raise ValueError(
                f"image has pixel values up to {max(-float(low), float(high)):.3g}; "
                "float pixels must be in [0, 1]"
            )


def _run_tiled(
    net: EnhancementNet,
    image: Tensor,
    tile: int | str | None,
    *,
    light_out: Tensor | None,
    enhanced_out: Tensor | None,
    cache_features: bool | str = "auto",
    progress: Callable[[int, int], None] | None = None,
    strength: float = 1.0,
    light_in: Tensor | None = None,
    deadline: Deadline = None,
    refine: bool = True,
    light_sink: Callable[[_Region, Tensor], None] | None = None,
    row_done: Callable[[int, int], None] | None = None,
) -> None:
    """Run the network tile by tile into ``light_out`` and/or ``enhanced_out``.

    ``light_sink(tile, light)`` also receives each tile's light map (from any worker), and
    ``row_done(top, bottom)`` is called after each row of tiles ``[top, bottom)`` is done,
    the rows in order (both for :func:`_run_refined`).
    """
    _check_image(image)
    if refine and net.light_refinement is not None and light_in is None:
        _run_refined(
            net,
            image,
            tile,
            light_out=light_out,
            enhanced_out=enhanced_out,
            cache_features=cache_features,
            progress=progress,
            strength=strength,
            deadline=deadline,
        )
        return
    batch, _, height, width = image.shape
    device = next(net.parameters()).device
    dtype = next(net.parameters()).dtype
    if dtype != torch.float32:
        # Unmeasured on GPUs so far (benchmarks/gpu_check.py measures it): refuse rather
        # than return a light map of unknown accuracy.
        raise ValueError(f"the network's weights are {dtype}; rave's engine runs float32 only")
    backend = select_backend(device)
    channels_last = backend in _CHANNELS_LAST_BACKENDS
    if light_in is not None:
        cache_features = False  # the light map is given: no network pass at all
    if cache_features == "auto":
        cache_features = _feature_cache_fits(batch * height * width, device)
    if tile == "auto":
        tile = auto_tile_size(
            height, width, device, backend=backend, cached_features=bool(cache_features)
        )
    if tile is None:
        tile = max(height, width)
    if not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive int, 'auto' or None, got {tile!r}")
    feature_cache = None
    if cache_features:
        # Keeping the pyramid-pooling input from pass 1 saves recomputing 14% of the FLOPs.
        # Allocated in its final layout: converting an empty NCHW tensor would copy (and
        # page in) 400 MB of garbage for a 3-megapixel photo, 8% of the whole run.
        layout = torch.channels_last if channels_last else torch.contiguous_format
        feature_cache = torch.empty(
            (batch, 32, height, width), dtype=torch.float32, device=device, memory_format=layout
        )
    workers = _tile_workers(device, height, width, tile)
    context = None
    if light_in is None:
        context = _pooled_context(net, image, tile, backend, feature_cache, workers, deadline)
    halo = FULL_HALO if feature_cache is None else FULL_HALO - FEATURE_HALO
    positive_seen: list[bool] = []  # appended to by the tile workers (list.append is atomic)

    def run_tile(tile_region: _Region, /) -> None:  # positional-only: _counting wraps it
        _check_deadline(deadline)
        if light_in is not None:
            light = light_in[
                ..., tile_region.top : tile_region.bottom, tile_region.left : tile_region.right
            ]
            emit(tile_region, light.to(device=device, dtype=torch.float32))
            return
        assert context is not None
        crop = tile_region.grow(halo)
        if feature_cache is None:
            pixels = _to_unit_float(
                image[..., crop.top : crop.bottom, crop.left : crop.right],
                device,
                channels_last,
            )
            feats, region = _features(net, pixels, crop, backend)
            del pixels
        else:
            feats = feature_cache[..., crop.top : crop.bottom, crop.left : crop.right]
            region = crop
        light, region = _head(net, feats, region, context, backend)
        del feats
        # Crops clipped at the image border do not shrink there, so the result may extend
        # past the tile; keep the tile itself.
        emit(tile_region, _crop_to(light, region, tile_region))

    def emit(tile_region: _Region, light: Tensor) -> None:
        _check_light_map(light)
        if bool((light > 0).any()):
            positive_seen.append(True)
        if light_out is not None:
            _write(light_out, tile_region, light.to(light_out.device))
        if light_sink is not None:
            light_sink(tile_region, light)
        if enhanced_out is not None:
            source = image[
                ..., tile_region.top : tile_region.bottom, tile_region.left : tile_region.right
            ]
            enhanced = apply_light_map(
                _to_unit_float(source, device, False), light, strength=strength
            )
            enhanced = _quantize(enhanced.to(enhanced_out.device), enhanced_out.dtype)
            if in_place:
                pending.append((tile_region, enhanced))
            else:
                _write(enhanced_out, tile_region, enhanced)

    tiles = _tile_grid(height, width, tile)
    if progress is not None:
        run_tile = _counting(run_tile, len(tiles), progress)
    if light_in is None:
        run_tile = _trimming_if_memory_bound(run_tile, tiles, height, width, device)
    in_place = enhanced_out is not None and _aliases(enhanced_out, image)
    if light_in is not None:
        halo = 0  # tiles read only their own pixels
    if not in_place and row_done is None:
        _for_each_tile(run_tile, tiles, workers)
        _check_some_light(positive_seen)
        return
    # Row by row. Writing into the image itself: a tile's result is held back until no
    # later tile reads the pixels under it (their crops reach `halo` pixels above their rows).
    pending: list[tuple[_Region, Tensor]] = []
    rows = sorted({(t.top, t.bottom) for t in tiles})
    for top, bottom in rows:
        _for_each_tile(run_tile, [t for t in tiles if t.top == top], workers)
        if row_done is not None:
            row_done(top, bottom)
        if not in_place:
            continue
        assert enhanced_out is not None  # in_place implies it
        still_read_from = max(0, top - halo)  # later rows start lower, read from lower
        done = [(r, v) for r, v in pending if r.bottom <= still_read_from]
        pending = [(r, v) for r, v in pending if r.bottom > still_read_from]
        for region, values in done:
            _write(enhanced_out, region, values)
    if enhanced_out is not None:
        for region, values in pending:
            _write(enhanced_out, region, values)
    _check_some_light(positive_seen)


def _run_refined(
    net: EnhancementNet,
    image: Tensor,
    tile: int | str | None,
    *,
    light_out: Tensor | None,
    enhanced_out: Tensor | None,
    cache_features: bool | str,
    progress: Callable[[int, int], None] | None,
    strength: float,
    deadline: Deadline,
) -> None:
    """:func:`_run_tiled` for a model with a light-map refinement.

    The refinement reads ``2 r`` pixels of light map around each output pixel. Growing every
    network tile by that much would recompute the network on the overlaps (41% more work
    with the 136 px tiles of a 24 MP photo), and keeping the network's whole light map would
    cost 4 bytes per pixel (96 MB at 24 MP). Instead the network runs row of tiles by row of
    tiles, and after each row the rows of light map that now have ``2 r`` rows below them
    are refined and applied; only the rows still needed are kept. In place, a band's output
    is held back until neither a later row of tiles nor the next band reads the pixels
    under it.
    """
    refinement = net.light_refinement
    assert refinement is not None
    device = next(net.parameters()).device
    batch = image.shape[0]
    height, width = image.shape[-2:]
    reach = refinement.halo
    in_place = enhanced_out is not None and _aliases(enhanced_out, image)
    chunks: dict[int, tuple[int, Tensor]] = {}  # top -> (bottom, network light of those rows)
    allocating = threading.Lock()
    pending: list[tuple[int, int, Tensor]] = []  # enhanced rows held back (in place)
    done = 0  # rows [0, done) are refined and applied

    def keep(region: _Region, light: Tensor) -> None:
        with allocating:
            if region.top not in chunks:
                rows = torch.empty(
                    (batch, 1, region.bottom - region.top, width),
                    dtype=torch.float32,
                    device=device,
                )
                chunks[region.top] = (region.bottom, rows)
        chunks[region.top][1][..., region.left : region.right] = light

    def rows_of_light(first: int, last: int) -> Tensor:
        parts = [
            rows[..., max(first, top) - top : min(last, bottom) - top, :]
            for top, (bottom, rows) in sorted(chunks.items())
            if top < last and bottom > first
        ]
        return torch.cat(parts, dim=-2)

    def refine_rows(top: int, bottom: int) -> None:
        nonlocal done
        # rows up to `bottom` of network light are known; refine those that have `reach` below
        limit = height if bottom == height else bottom - reach
        if limit <= done:
            return
        _check_deadline(deadline)
        first, last = max(0, done - reach), min(height, limit + reach)
        raw = rows_of_light(first, last)
        enhanced = None
        if enhanced_out is not None:
            enhanced = torch.empty(
                (batch, 3, limit - done, width),
                dtype=enhanced_out.dtype,
                device=enhanced_out.device,
            )
        # in blocks of columns that overlap by `reach`: the filter's temporaries stay small
        for left in range(0, width, _REFINE_BLOCK_COLUMNS):
            right = min(width, left + _REFINE_BLOCK_COLUMNS)
            west, east = max(0, left - reach), min(width, right + reach)
            pixels = _to_unit_float(image[..., first:last, west:east], device, False)
            light = refinement(raw[..., west:east], pixels)
            light = light[..., done - first : limit - first, left - west : right - west]
            if light_out is not None:
                light_out[..., done:limit, left:right].copy_(light.to(light_out.device))
            if enhanced is not None:
                own = pixels[..., done - first : limit - first, left - west : right - west]
                values = _quantize(apply_light_map(own, light, strength=strength), enhanced.dtype)
                enhanced[..., left:right].copy_(values.to(enhanced.device))
        if enhanced is not None:
            pending.append((done, limit, enhanced))
        done = limit
        # In place, later rows of tiles read pixels from FULL_HALO above their own rows and
        # the next band from `reach` above `done`: rows above both can be written.
        safe = min(bottom - FULL_HALO, done - reach) if in_place and bottom < height else height
        while pending and pending[0][1] <= safe:
            start, end, values = pending.pop(0)
            assert enhanced_out is not None
            enhanced_out[..., start:end, :].copy_(values)
        for chunk_top in [t for t, (b, _) in chunks.items() if b <= done - reach]:
            del chunks[chunk_top]

    _run_tiled(
        net,
        image,
        tile,
        light_out=None,
        enhanced_out=None,
        cache_features=cache_features,
        progress=progress,
        deadline=deadline,
        refine=False,
        light_sink=keep,
        row_done=refine_rows,
    )
    assert done == height and not pending


def _check_some_light(positive_seen: list[bool]) -> None:
    if not positive_seen:
        raise ValueError(
            "the network's light map is zero or negative everywhere (the result would be "
            "blank): the model's weights are degenerate"
        )


def _after_each_tile(
    run: Callable[[_Region], None], then: Callable[[int], None]
) -> Callable[[_Region], None]:
    """``run`` that calls ``then(tiles done so far)`` after each tile (from any worker).

    ``then`` runs under a lock, so the counts it sees are increasing.
    """
    lock = threading.Lock()
    done = 0

    def run_then(tile_region: _Region) -> None:
        nonlocal done
        run(tile_region)
        with lock:
            done += 1
            then(done)

    return run_then


def _counting(
    run: Callable[[_Region], None], total: int, progress: Callable[[int, int], None]
) -> Callable[[_Region], None]:
    """``run`` that reports ``progress(done, total)`` after each tile (from any worker)."""
    return _after_each_tile(run, lambda done: progress(done, total))


def _trimming_if_memory_bound(
    run: Callable[[_Region], None],
    tiles: list[_Region],
    height: int,
    width: int,
    device: torch.device,
) -> Callable[[_Region], None]:
    """``run`` that returns freed heap memory to the OS after each row of ``tiles`` when the
    photo is bound by memory on a CPU (:func:`is_memory_bound`); else ``run`` itself.

    For such photos the allocator keeps freed tile memory
    (:func:`rave.inference.memory.tune_allocator`); tiles of varying sizes, and results
    held back for in-place writes, leave it fragmented, so the kept free memory grew through
    the run (8 MP JPEG, AMD EPYC: 28 MB after the first row of tiles, 156 MB at the end,
    with 120 MB in use throughout). Trimmed once per row of tiles: each trim costs page
    faults when the next tiles reuse the memory (about 16,000 for a 64 MB working set),
    small next to a row's computation.
    """
    from rave.inference.memory import return_freed_memory

    if device.type != "cpu" or not is_memory_bound(height, width, device):
        return run
    every = _tiles_per_row(tiles)

    def trim_when_due(done: int) -> None:
        if done % every == 0:
            return_freed_memory()

    return _after_each_tile(run, trim_when_due)


def _tiles_per_row(tiles: list[_Region]) -> int:
    """Tiles in the first row of a grid from :func:`_tile_grid` (all rows have as many)."""
    return sum(1 for t in tiles if t.top == tiles[0].top)


def _tile_grid(height: int, width: int, tile: int) -> list[_Region]:
    return [
        _Region(top, bottom, left, right, height, width)
        for top, bottom in _tiles(height, tile)
        for left, right in _tiles(width, tile)
    ]


def _tile_workers(device: torch.device, height: int, width: int, tile: int) -> int:
    """How many tiles run at once: one per CPU thread when there are enough tiles.

    One single-threaded tile per core keeps each core's working set small and local,
    which is markedly faster here than splitting every convolution across the cores.
    """
    if device.type != "cpu":
        return 1
    tiles = math.ceil(height / tile) * math.ceil(width / tile)
    return max(1, min(torch.get_num_threads(), tiles))


def _for_each_tile(run: Callable[[_Region], None], tiles: list[_Region], workers: int) -> None:
    if workers <= 1:
        for tile_region in tiles:
            run(tile_region)
        return

    def run_in_worker(tile_region: _Region) -> None:
        # Inference mode is thread-local: enter it again in each worker thread.
        with torch.inference_mode():
            run(tile_region)

    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            # list() re-raises the first exception of any tile.
            list(pool.map(run_in_worker, tiles))
    finally:
        torch.set_num_threads(threads)


def is_memory_bound(height: int, width: int, device: torch.device | str = "cpu") -> bool:
    """Whether a photo is too large for the pyramid-pooling feature cache.

    Such photos run with smaller tiles and recompute features, to stay within the memory
    budget; callers may also tune their allocator for memory rather than speed.
    """
    return not _feature_cache_fits(height * width, torch.device(device))


def _feature_cache_fits(pixels: int, device: torch.device) -> bool:
    """Whether a full-size copy of the 32-channel features of ``pixels`` fits the budget."""
    needed = pixels * 32 * 4
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return needed <= free // 4
    return needed <= _CPU_FEATURE_CACHE_BYTES


@torch.inference_mode()
def predict_light_map(
    net: EnhancementNet,
    image: Tensor,
    *,
    tile: int | str | None = "auto",
    cache_features: bool | str = "auto",
    progress: Callable[[int, int], None] | None = None,
    deadline: Deadline = None,
) -> Tensor:
    """Light map of an image batch, tiled exactly when large.

    Args:
        net: the enhancement network (its device is where the computation runs).
        image: ``(B, 3, H, W)``: float in [0, 1], uint8 (value / 255) or uint16
            (value / 65535); any device and memory layout.
        tile: ``"auto"`` picks a tile size that bounds memory, an int forces tiles of that
            side, ``None`` runs the whole image as one tile. The output is the same (to
            float32 rounding) in every case.
        cache_features: keep the pyramid-pooling input of pass 1 for pass 2 (``True``),
            recompute it (``False``), or keep it when it fits a memory budget (``"auto"``).
        progress: called as ``progress(done, total)`` after each output tile (possibly from
            a worker thread), e.g. for ``rave serve``'s progress bar.
        deadline: a ``time.monotonic()`` value, or a function returning True when the run
            must stop; then :class:`DeadlineExceeded` is raised at the start of the next tile.

    Returns:
        ``(B, 1, H, W)`` float32 light map on ``image``'s device, non-negative.
    """
    _check_image(image)
    batch, _, height, width = image.shape
    light = torch.empty(batch, 1, height, width, dtype=torch.float32, device=image.device)
    _run_tiled(
        net,
        image,
        tile,
        light_out=light,
        enhanced_out=None,
        cache_features=cache_features,
        progress=progress,
        deadline=deadline,
    )
    return light


@torch.inference_mode()
def enhance_tensor(
    net: EnhancementNet,
    image: Tensor,
    *,
    tile: int | str | None = "auto",
    out: Tensor | None = None,
    cache_features: bool | str = "auto",
    progress: Callable[[int, int], None] | None = None,
    strength: float = 1.0,
    light_map: Tensor | None = None,
    deadline: Deadline = None,
) -> Tensor:
    """Enhanced image ``clamp(image / L**strength, 0, 1)``, computed tile by tile.

    Args:
        net: the enhancement network (its device is where the computation runs).
        image: ``(B, 3, H, W)``: float in [0, 1], uint8 or uint16 (see
            :func:`predict_light_map`); may be a non-contiguous view, e.g.
            ``torch.from_numpy(hwc).permute(2, 0, 1)[None]``.
        tile, cache_features: as in :func:`predict_light_map`.
        out: optional ``(B, 3, H, W)`` tensor (uint8, uint16 or float32, any layout) to fill;
            integer outputs hold ``round(value * 255)`` or ``round(value * 65535)``. With
            integer ``image`` and ``out`` no full-size float copy is ever made. ``out`` may
            be ``image`` itself (same dtype): it is then enhanced in place, each tile's
            result held back until no later tile reads the pixels under it.
        progress: called as ``progress(done, total)`` after each output tile (possibly from
            a worker thread), for progress bars within one large photo.
        strength: ``S >= 0``; 0 returns the image, 1 (default) the network's output exactly,
            larger values relight more (:func:`rave.network.apply_light_map`). The light
            map is computed once whatever the strength.
        light_map: a ``(B, 1, H, W)`` light map from :func:`predict_light_map` for this
            image: the network is not run, only ``clamp(image / L**S, 0, 1)`` (e.g. to
            render another strength). Equal to running the network with the same ``tile``.
        deadline: as in :func:`predict_light_map`.

    Returns:
        ``out`` if given, else a new ``(B, 3, H, W)`` float32 tensor in [0, 1] on
        ``image``'s device.
    """
    _check_image(image)
    if out is None:
        out = torch.empty(image.shape, dtype=torch.float32, device=image.device)
    elif out.shape != image.shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, image {tuple(image.shape)}")
    strength = check_strength(strength)
    if light_map is not None and (
        light_map.ndim != 4 or light_map.shape[1] != 1 or light_map.shape[-2:] != image.shape[-2:]
    ):
        raise ValueError(
            f"light_map has shape {tuple(light_map.shape)}, image {tuple(image.shape)}"
        )
    _run_tiled(
        net,
        image,
        tile,
        light_out=None,
        enhanced_out=out,
        cache_features=cache_features,
        progress=progress,
        strength=strength,
        light_in=light_map,
        deadline=deadline,
    )
    return out
