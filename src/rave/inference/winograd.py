"""Winograd F(4x4, 3x3) and F(6x6, 3x3) convolutions on CPU, through a small C kernel built
on first use.

The enhancement network is almost only 3x3 convolutions of 32 and 64 channels, which
oneDNN already runs at the CPU's float32 FMA rate; fewer multiplications is what is left.
``winograd.c`` (next to this file; the reasons are at its top) is compiled once per
machine with the system C compiler into rave's cache folder and loaded with ctypes. Where
there is no compiler (or it fails), :func:`load_kernel` returns ``None`` and the engine
keeps oneDNN: same results, slower.

Results equal ``F.conv2d`` to float32 rounding of the transforms (relative error about
1e-6 per layer with F(4x4) tiles, a few times that with F(6x6); the whole network stays
within 1e-5 of the reference). :func:`output_tile` says which tile size a layer gets.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "WinogradKernel",
    "build_kernel",
    "conv3x3",
    "is_plain_3x3",
    "kernel_status",
    "load_kernel",
    "output_tile",
    "supports",
    "transform_weight",
]

log = logging.getLogger(__name__)

# G of F(4x4, 3x3) (Lavin & Gray 2016): the kernel's transform, U = G g G^T (6x6 per pair).
_G4 = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)
# G of F(6x6, 3x3), interpolation points 0, 1, -1, 1/2, -1/2, 2, -2, infinity (Lavin &
# Gray 2016): 8x8 per pair. Must match B^T and A^T in winograd.c.
_G6 = (
    (1.0, 0.0, 0.0),
    (-2 / 9, -2 / 9, -2 / 9),
    (-2 / 9, 2 / 9, -2 / 9),
    (1 / 90, 1 / 45, 2 / 45),
    (1 / 90, -1 / 45, 2 / 45),
    (32 / 45, 16 / 45, 8 / 45),
    (32 / 45, -16 / 45, 8 / 45),
    (0.0, 0.0, 1.0),
)
_G = {4: _G4, 6: _G6}
_BASE_FLAGS = ["-O3", "-std=c11", "-shared", "-fPIC", "-ffp-contract=fast"]
# -march=native first (AVX-512, AVX2 or NEON, as this CPU has; the library is cached per
# CPU), -mcpu=native for compilers that spell it so, portable code otherwise.
_NATIVE_FLAG_SETS: tuple[tuple[str, ...], ...] = (("-march=native",), ("-mcpu=native",), ())
_COMPILE_TIMEOUT_S = 300
_status = "not loaded yet"


class WinogradKernel:
    """The loaded C library: ``conv`` runs output tiles ``[begin, end)`` of one image."""

    def __init__(self, library: ctypes.CDLL, path: Path) -> None:
        self.path = path
        self.vector_width = int(library.rave_winograd_vector_width())
        conv = library.rave_winograd_conv3x3
        long, ptr = ctypes.c_long, ctypes.c_void_p
        conv.argtypes = [
            ptr, long, long, long, long,  # input, height, width, row stride, channels
            long, long, long, long, ctypes.c_int,  # padding top, bottom, left, right, reflect
            ptr, ptr, long, ptr, long, ctypes.c_float,  # weights, bias, cout, residual, slope
            ptr, long, long, long,  # output, row stride, tiles begin, end
            ctypes.c_int,  # output tile side: 4 or 6
            ptr, long, long,  # second input (last channels), its row stride, channels
        ]  # fmt: skip
        conv.restype = ctypes.c_int
        # ctypes releases the GIL during the call, so threads run tiles in parallel.
        self.conv = conv


def _source() -> bytes:
    return resources.files("rave.inference").joinpath("winograd.c").read_bytes()


def _cpu_signature() -> str:
    """What -march=native compiles for: the CPU's feature flags where the OS lists them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    explicit = os.environ.get("CC")
    if explicit:
        return shutil.which(explicit)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _kernel_dir() -> Path:
    from rave.zoo.download import cache_dir

    return cache_dir() / "kernels"


def build_kernel(
    compiler: str, target: Path, flag_sets: Sequence[Sequence[str]] | None = None
) -> WinogradKernel:
    """Compile ``winograd.c`` into ``target`` atomically (concurrent builds are safe) and load it.

    Args:
        compiler: path of a C compiler that accepts GCC-style flags.
        target: the shared library to write.
        flag_sets: extra flags to try in turn, until one set compiles (default: native
            code first, portable code last).

    Raises:
        RuntimeError: every flag set failed (the message holds the compiler's last line).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source = Path(tmp) / "winograd.c"
        source.write_bytes(_source())
        built = Path(tmp) / target.name
        errors = []
        for extra in _NATIVE_FLAG_SETS if flag_sets is None else flag_sets:
            cmd = [compiler, *_BASE_FLAGS, *extra, "-o", str(built), str(source)]
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False
            )
            if result.returncode == 0:
                from rave.io.atomic import atomic_write

                atomic_write(target, built.read_bytes())  # verified, with the user's umask
                return WinogradKernel(ctypes.CDLL(str(target)), target)
            errors.append(result.stderr.strip().splitlines()[-1:] or ["(no output)"])
        raise RuntimeError(f"{compiler} failed: {errors[-1][0]}")


@functools.cache
def load_kernel() -> WinogradKernel | None:
    """The compiled kernel, building it on first use; ``None`` where it cannot be built.

    Set ``RAVE_CONV_BACKEND=channels_last`` to never build or use it, and
    ``RAVE_KERNEL_FLAGS`` (e.g. ``"-mavx2 -mfma -mno-avx512f"``) to build for another
    instruction set than this CPU's best: the test suite runs the network through an AVX2
    build that way on AVX-512 machines, so both code paths are checked wherever CI runs.
    """
    global _status
    if sys.platform == "win32":
        _status = "not built: Windows (MSVC has no GCC vector extensions)"
        return None
    compiler = _compiler()
    if compiler is None:
        _status = "not built: no C compiler found (set CC, or install gcc or clang)"
        log.info("Winograd kernel %s; using oneDNN convolutions", _status)
        return None
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        _status = f"not built: {compiler} --version failed ({error})"
        log.warning("Winograd kernel %s; using oneDNN convolutions (slower)", _status)
        return None
    forced_flags = os.environ.get("RAVE_KERNEL_FLAGS", "").split()
    key = hashlib.sha256()
    for part in (_source(), version.encode(), " ".join(_BASE_FLAGS + forced_flags).encode(),
                 platform.machine().encode(), _cpu_signature().encode()):  # fmt: skip
        key.update(part)
    target = _kernel_dir() / f"winograd-{key.hexdigest()[:16]}{_library_suffix()}"
    try:
        kernel = _load_cached(target)
        if kernel is None:
            log.info("building the Winograd kernel into %s", target)
            kernel = build_kernel(compiler, target, [forced_flags] if forced_flags else None)
    except OSError as error:  # e.g. a read-only cache folder
        _status = f"not built in {target.parent}: {error} (RAVE_HOME moves that folder)"
        log.warning("Winograd kernel %s; using oneDNN convolutions (slower)", _status)
        return None
    except (RuntimeError, subprocess.SubprocessError) as error:
        _status = f"not built: {error}"
        log.warning("Winograd kernel %s; using oneDNN convolutions (slower)", _status)
        return None
    on_x86 = platform.machine().lower() in ("x86_64", "amd64", "i686")
    if not forced_flags and kernel.vector_width < 8 and on_x86:
        # Built without AVX (-march=native refused): slower than oneDNN on x86 (measured
        # 0.65x of it), unlike NEON builds, whose 4-float vectors are the native width.
        _status = f"built without AVX by {compiler}, slower than oneDNN here: not used"
        log.warning("Winograd kernel %s", _status)
        return None
    _status = f"loaded from {target} ({kernel.vector_width} floats per vector)"
    if forced_flags:
        _status += f", built with RAVE_KERNEL_FLAGS={' '.join(forced_flags)}"
    return kernel


def _load_cached(path: Path) -> WinogradKernel | None:
    """The library built earlier, or ``None`` if absent or unloadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        return WinogradKernel(ctypes.CDLL(str(path)), path)
    except (OSError, AttributeError) as error:  # truncated or foreign file
        log.warning("rebuilding the Winograd kernel: %s did not load (%s)", path, error)
        return None


def kernel_status() -> str:
    """One line: whether the kernel is loaded, and from where (or why not)."""
    return _status


def _library_suffix() -> str:
    return ".dylib" if sys.platform == "darwin" else ".so"


def is_plain_3x3(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a 3x3 conv of stride 1, no dilation and one group, on the CPU."""
    return (
        conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.weight.device.type == "cpu"
    )


def supports(conv: nn.Conv2d, kernel: WinogradKernel) -> bool:
    """Whether ``conv`` is a plain 3x3 float32 conv the kernel can run."""
    width = kernel.vector_width
    return (
        is_plain_3x3(conv)
        and conv.weight.dtype == torch.float32
        and conv.in_channels % width == 0
        and conv.out_channels % width == 0
    )


def output_tile(in_channels: int, out_channels: int) -> int:
    """Output tile side (4: F(4x4, 3x3), 6: F(6x6, 3x3)) the engine uses for a 3x3 conv.

    F(6x6) for every layer of the network: with 21% fewer multiplications, each of its
    channel counts (32->32, 64->64, 32->64, 64->32) took 12% to 16% less time than with
    F(4x4) on 290x290 crops (AMD EPYC Zen 3, AVX2, benchmarks/bench_winograd.py), and the
    whole network's light map stays as close to eager PyTorch as with F(4x4) (1.9e-6 for
    the authors' weights at 2048x1536). On a Xeon with AVX-512, once the kernel's products
    ran at full speed (its broadcast fix), the two were even: the network took 1.02x the
    time with F(6x6) (per layer 0.84x to 1.03x), so F(6x6) stays everywhere.
    ``RAVE_WINOGRAD_TILE=4`` (or 6) forces one size for every layer, e.g. to compare them.
    """
    forced = os.environ.get("RAVE_WINOGRAD_TILE")
    if forced:
        if forced not in ("4", "6"):
            raise ValueError(f"RAVE_WINOGRAD_TILE must be 4 or 6, got {forced!r}")
        return int(forced)
    del in_channels, out_channels  # every channel count of the network gains
    return 6


def transform_weight(weight: Tensor, tile: int = 4) -> Tensor:
    """Winograd-domain weights ``G g G^T``.

    Args:
        weight: ``(C_out, C_in, 3, 3)`` conv weight.
        tile: output tile side, 4 (F(4x4, 3x3)) or 6 (F(6x6, 3x3)).

    Returns:
        ``(T * T, C_in, C_out)`` float32, contiguous, ``T = tile + 2``; row ``T * i + j`` is
        position (i, j).
    """
    if tile not in _G:
        raise ValueError(f"tile must be 4 or 6, got {tile}")
    g = torch.tensor(_G[tile], dtype=torch.float64)
    u = torch.einsum("ik,ockl,jl->ijco", g, weight.detach().double().cpu(), g)
    return u.reshape(len(_G[tile]) ** 2, weight.shape[1], weight.shape[0]).float().contiguous()


# Transformed weights per conv module and tile size, recomputed if the weights change in
# place.
_weights: weakref.WeakKeyDictionary[nn.Conv2d, dict[int, tuple[int, int, Tensor]]] = (
    weakref.WeakKeyDictionary()
)


_weights_lock = threading.Lock()  # tiles run in threads; transform each conv once


def _transformed(conv: nn.Conv2d, tile: int) -> Tensor:
    stamp = (conv.weight._version, conv.weight.data_ptr())
    with _weights_lock:
        per_tile = _weights.setdefault(conv, {})
        cached = per_tile.get(tile)
        if cached is None or cached[:2] != stamp:
            cached = (*stamp, transform_weight(conv.weight, tile))
            per_tile[tile] = cached
    return cached[2]


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="rave-winograd")


def _is_pixel_major(x: Tensor) -> bool:
    """Channels-last with unit channel stride and pixel stride = channels (views allowed)."""
    _, channels, _, width = x.shape
    return x.stride(1) == 1 and x.stride(3) == channels and x.stride(2) >= width * channels


def conv3x3(
    kernel: WinogradKernel,
    x: Tensor,
    conv: nn.Conv2d,
    *,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    pad_mode: str = "zeros",
    slope: float = 1.0,
    residual: Tensor | None = None,
    threads: int = 1,
    tile: int | None = None,
    into_residual: bool = False,
    x2: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``act(conv(pad(x)) + residual)``, ``act(v) = v if v > 0 else slope * v``.

    Args:
        kernel: from :func:`load_kernel`.
        x: ``(B, C_in, H, W)`` float32 on CPU, channels-last (crops of a channels-last
            tensor are read in place; other layouts are copied first).
        conv: a conv that :func:`supports` accepts; its bias is added if it has one.
        padding: ``(left, right, top, bottom)`` pixels, as ``F.pad``; read in place.
        pad_mode: ``"zeros"`` or ``"reflect"`` (needs at least 2 pixels on padded axes).
        slope: leaky-ReLU slope; 1 applies no activation, 0 is ReLU.
        residual: optional tensor shaped like the output, added before the activation.
        threads: split each image's output tiles across this many threads.
        tile: output tile side, 4 (F(4x4, 3x3)) or 6 (F(6x6, 3x3)); default:
            :func:`output_tile` for the conv's channel counts.
        into_residual: write the result over ``residual`` (which must not share memory
            with ``x``) and return it: each output value is written after its own residual
            value is read, so no other memory is needed and the writes go to cache lines
            just read. A residual that is not pixel-major is copied first, and the copy is
            written and returned.
        x2: optional ``(B, C_2, H, W)``: the conv's input is ``cat([x, x2], dim=1)``,
            both read in place (no concatenation is made); the same layout rules as ``x``.
        out: optional pixel-major tensor shaped like the output (e.g. a crop of a larger
            channels-last tensor) to write the result into and return; it must not share
            memory with the inputs. Not together with ``into_residual``.

    Returns:
        ``(B, C_out, H + top + bottom - 2, W + left + right - 2)`` float32, channels-last.
    """
    batch, _, height, width = x.shape
    left, right, top, bottom = padding
    if tile is None:
        tile = output_tile(conv.in_channels, conv.out_channels)
    if tile not in _G:
        raise ValueError(f"tile must be 4 or 6, got {tile}")
    if pad_mode not in ("zeros", "reflect"):
        raise ValueError(f"pad_mode must be 'zeros' or 'reflect', got {pad_mode!r}")
    if not all(0 <= p <= 1 for p in padding):
        raise ValueError(f"padding must be 0 or 1 per side, got {padding}")
    out_height, out_width = height + top + bottom - 2, width + left + right - 2
    if out_height < 1 or out_width < 1:
        raise ValueError(
            f"a 3x3 conv needs at least 3x3 pixels, got {width}x{height} (width x height) + padding"
        )
    too_thin = ((top or bottom) and height < 2) or ((left or right) and width < 2)
    if pad_mode == "reflect" and too_thin:
        raise ValueError(
            f"reflection padding needs at least 2x2 pixels, got {width}x{height} (width x height)"
        )
    if not _is_pixel_major(x):
        x = x.contiguous(memory_format=torch.channels_last)
    in_channels = x.shape[1]
    if x2 is not None:
        if x2.shape[0] != batch or x2.shape[2:] != x.shape[2:]:
            raise ValueError(f"x2 {tuple(x2.shape)} does not match x {tuple(x.shape)}")
        if x2.dtype != x.dtype or x2.device != x.device:
            raise ValueError("x2 must have x's dtype and device")
        if x.shape[1] % kernel.vector_width or x2.shape[1] % kernel.vector_width:
            raise ValueError(
                f"x and x2 need multiples of {kernel.vector_width} channels each, got "
                f"{x.shape[1]} and {x2.shape[1]}"
            )
        if not _is_pixel_major(x2):
            x2 = x2.contiguous(memory_format=torch.channels_last)
        in_channels += x2.shape[1]
    if in_channels != conv.in_channels:
        raise ValueError(f"the conv takes {conv.in_channels} channels, got {in_channels}")
    out_channels = conv.out_channels
    out_shape = (batch, out_channels, out_height, out_width)
    if residual is not None:
        if tuple(residual.shape) != out_shape:
            raise ValueError(f"residual {tuple(residual.shape)} != output {out_shape}")
        if not _is_pixel_major(residual):
            residual = residual.contiguous(memory_format=torch.channels_last)
    if into_residual:
        if residual is None:
            raise ValueError("into_residual needs a residual")
        if out is not None:
            raise ValueError("into_residual writes over the residual: no out as well")
        out = residual
    elif out is not None:
        if tuple(out.shape) != out_shape or out.dtype != torch.float32 or out.device != x.device:
            raise ValueError(f"out must be a float32 {out_shape} tensor on {x.device}")
        if not _is_pixel_major(out):
            raise ValueError("out must be channels-last (a crop of a channels-last tensor)")
    else:
        out = torch.empty(out_shape, memory_format=torch.channels_last)
    weight = _transformed(conv, tile)
    bias = conv.bias.detach() if conv.bias is not None else None
    tiles = -(-out_height // tile) * -(-out_width // tile)
    calls = []
    for b in range(batch):
        args = (
            x[b].data_ptr(), height, width, x.stride(2), in_channels,
            top, bottom, left, right, int(pad_mode == "reflect"),
            weight.data_ptr(), None if bias is None else bias.data_ptr(), out_channels,
            None if residual is None else residual[b].data_ptr(),
            0 if residual is None else residual.stride(2),
            float(slope), out[b].data_ptr(), out.stride(2),
        )  # fmt: skip
        # At least 64 tiles of 4x4 pixels (1,024) per thread, as many pixels for 6x6.
        parts = max(1, min(threads, tiles * tile * tile // 1024))
        bounds = [tiles * i // parts for i in range(parts + 1)]
        second = (None, 0, 0) if x2 is None else (x2[b].data_ptr(), x2.stride(2), x2.shape[1])
        calls += [(*args, begin, end, tile, *second) for begin, end in itertools.pairwise(bounds)]
    if len(calls) == 1:
        codes = [kernel.conv(*calls[0])]
    else:
        codes = list(_pool(max(2, threads)).map(lambda call: kernel.conv(*call), calls))
    if any(code == -2 for code in codes):
        raise RuntimeError(f"the Winograd kernel at {kernel.path} has no {tile}x{tile} tiles")
    if any(codes):
        raise MemoryError("Winograd kernel could not allocate its scratch memory")
    return out
