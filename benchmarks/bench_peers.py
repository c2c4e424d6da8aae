"""rave's engine against the runtimes a user would try instead, side by side in one run.

Every variant runs in its own child process (so peak resident memory is its own), one after
the other, on the same photo-like image, weights and thread count:

- ``eager``: the authors' way, the whole image through the PyTorch module (float32, NCHW);
  the same code as ``benchmarks/bench_inference.py``'s reference variant;
- ``onnxruntime``: the model of ``rave export`` (whole image), CPU execution provider, all
  graph optimisations;
- ``openvino``: the same ONNX model in OpenVINO's CPU plugin, float32 inference precision,
  reshaped to the image's static size;
- ``rave-winograd`` / ``rave-onednn``: ``predict_light_map(tile="auto")``, after the
  allocator policy of rave's entry points (``--allocator``), with rave's
  Winograd kernel (its default F(6x6, 3x3) tiles) / PyTorch's channels-last oneDNN
  convolutions; ``rave-winograd-f4``: the Winograd kernel with F(4x4, 3x3) tiles
  (``RAVE_WINOGRAD_TILE=4``), the kernel's tile size before F(6x6), for the ratio between
  the two in the same run.

It prints seconds per megapixel, peak RSS and the largest difference of the enhanced image
``clamp(I / L, 0, 1)`` to the eager output, and the "Winograd limit" of this CPU: the
multiplications F(6x6, 3x3) Winograd must do (16/81 of the direct convolution's: 64
products per 36 outputs instead of 324; input and output transforms not counted) at this
CPU's float32 FMA peak as measured here (``fma_peak.c``: the same threads running chains of
vector FMAs from registers, so at the clock the cores really run at). No implementation of
this algorithm can be faster than that. For comparison it also prints the peak that
/proc/cpuinfo's nominal clock implies (lower on turbo-boosted CPUs: the limit was stated
at that peak until 2026-12-02, which flattered rave by about 1.3x on the Xeon VM measured
then) and the float32 matrix-multiply rate (torch.mm, 2048x2048).

    .venv/bin/python benchmarks/bench_peers.py                    # 2048x1536, 2 threads
    .venv/bin/python benchmarks/bench_peers.py --size 6000x4000   # 24 MP, where peers fit
    .venv/bin/python benchmarks/bench_peers.py --memory-scan      # ONNX Runtime at 0.2-3 MP
    .venv/bin/python benchmarks/bench_peers.py --allocator default  # glibc's defaults
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_inference as shared  # the eager reference, test image, FLOP count

RAVE_BACKENDS = {
    "rave-winograd": "winograd",
    "rave-winograd-f4": "winograd",
    "rave-onednn": "channels_last",
}
# Winograd output tile side per variant (RAVE_WINOGRAD_TILE), where not the default.
WINOGRAD_TILES = {"rave-winograd-f4": "4"}
PEERS = ("onnxruntime", "openvino")
VARIANTS = ("eager", *PEERS, *RAVE_BACKENDS)


def _peer_child(
    kind: str, model_path: str, image_path: str, out_path: str, threads: int, queue
) -> None:
    pixels = (np.load(image_path).astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    if kind == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        start = time.perf_counter()
        (light,) = session.run(None, {"image": pixels})
    else:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(model_path)
        model.reshape({"image": list(pixels.shape)})
        compiled = core.compile_model(
            model,
            "CPU",
            {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"},
        )
        start = time.perf_counter()
        light = compiled({"image": pixels})[compiled.output(0)]
    seconds = time.perf_counter() - start
    np.save(out_path, np.asarray(light)[0, 0])
    queue.put((seconds, shared.peak_rss_mb()))


def _run_peer(kind: str, model_path: Path, image_path: str, threads: int, tmp: Path):
    out_path = str(tmp / f"{kind}.npy")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_peer_child, args=(kind, str(model_path), image_path, out_path, threads, queue)
    )
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{kind} failed (exit status {proc.exitcode}; out of memory?)")
    seconds, peak_mb = queue.get()
    return seconds, peak_mb, np.load(out_path)


def _run(
    variant: str,
    model_path: Path,
    image_path: str,
    threads: int,
    tmp: Path,
    allocator: str = "default",
):
    """``(seconds, peak RSS in MB, light map (H, W))`` of one variant, in a child process."""
    if variant == "eager":
        return shared._run("reference", image_path, threads, None, "cpu", tmp)
    if variant in RAVE_BACKENDS:
        backend = RAVE_BACKENDS[variant]
        tile_side = WINOGRAD_TILES.get(variant)
        if tile_side:
            os.environ["RAVE_WINOGRAD_TILE"] = tile_side  # inherited by the child process
        try:
            return shared._run("tiled", image_path, threads, "auto", "cpu", tmp, backend, allocator)
        finally:
            os.environ.pop("RAVE_WINOGRAD_TILE", None)
    return _run_peer(variant, model_path, image_path, threads, tmp)


def _export(tmp: Path) -> Path:
    from rave.export import export_onnx

    path = tmp / "model.onnx"
    export_onnx(shared.CHECKPOINT if shared.CHECKPOINT.is_file() else "default", path)
    return path


def _matmul_gflops(threads: int) -> float:
    """float32 matrix-multiply rate of this CPU with ``threads`` threads (best of 5)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _fma_gflops(threads: int) -> float | None:
    """float32 FMA rate of ``threads`` threads at once (``fma_peak.c``, built here with
    rave's C compiler); None without a compiler."""
    from rave.inference import winograd

    compiler = winograd._compiler()
    if compiler is None:
        return None
    source = Path(__file__).resolve().parent / "fma_peak.c"
    with tempfile.TemporaryDirectory() as tmp:
        program = Path(tmp) / "fma_peak"
        base = [compiler, "-O2", "-ffp-contract=fast", "-std=gnu11", "-pthread"]
        for native in (["-march=native"], ["-mcpu=native"], []):
            built = subprocess.run(
                [*base, *native, str(source), "-o", str(program)], capture_output=True
            )
            if built.returncode == 0:
                break
        else:
            return None
        result = subprocess.run(
            [str(program), str(threads)], capture_output=True, text=True, check=True
        )
    return float(result.stdout.split()[0])


def _spec_gflops(threads: int) -> tuple[float, str]:
    """float32 peak of ``threads`` cores from /proc/cpuinfo: 2 FMA units per core (Zen 2-4,
    Intel since Haswell) x vector lanes (16 with AVX-512, 8 with AVX2) x 2 FLOPs x clock."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = next((float(line.split(":")[1]) for line in info.splitlines() if "MHz" in line), 0.0)
    lanes = 16 if "avx512f" in flags else 8 if "fma" in flags else 4
    gflops = threads * 2 * lanes * 2 * mhz / 1000
    return gflops, f"{threads} cores x 2 FMA x {lanes} lanes x 2 FLOP x {mhz / 1000:.2f} GHz"


def _timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _available_mb() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _memory_scan(threads: int) -> None:
    """ONNX Runtime's peak RSS at growing sizes, and the fitted line at 12 and 24 MP."""
    sizes = [(512, 384), (1024, 768), (1448, 1086), (2048, 1536)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = _export(tmp)
        points = []
        for width, height in sizes:
            image_path = str(tmp / "image.npy")
            np.save(image_path, shared._test_image(height, width))
            _, peak, _ = _run_peer("onnxruntime", model, image_path, threads, tmp)
            megapixels = width * height / 1e6
            points.append((megapixels, peak))
            print(f"onnxruntime {width}x{height} ({megapixels:.2f} MP): peak RSS {peak:,.0f} MB")
    slope, intercept = np.polyfit(*zip(*points, strict=True), deg=1)
    print(f"fit: {intercept:,.0f} MB + {slope:,.0f} MB per MP")
    for megapixels in (12, 24):
        print(f"  {megapixels} MP: about {(intercept + slope * megapixels) / 1024:.1f} GB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2048x1536", help="WIDTHxHEIGHT (default 2048x1536)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--memory-scan", action="store_true", help="only ONNX Runtime's memory against size"
    )
    parser.add_argument(
        "--allocator",
        choices=("rave", "default"),
        default="rave",
        help="rave variants: the allocator policy rave's entry points apply (rave enhance, "
        "rave.enhance, rave.Enhancer, rave serve: rave.inference.memory.tune_allocator; "
        "default), or glibc as left for a direct call of predict_light_map",
    )
    args = parser.parse_args()
    if args.memory_scan:
        _memory_scan(args.threads)
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    megapixels = width * height / 1e6
    from rave.inference import winograd

    winograd.load_kernel()  # built once here, so that no timed child compiles it
    gemm = _matmul_gflops(args.threads)
    nominal, how = _spec_gflops(args.threads)
    measured = _fma_gflops(args.threads)
    peak = measured if measured is not None else nominal
    winograd_flops = shared.FLOPS_PER_PIXEL * 16 / 81  # per pixel: 64 products per 36 outputs
    limit = winograd_flops * 1e6 / (peak * 1e9)

    def s_per_mp(gflops: float) -> str:
        return f"{winograd_flops * 1e6 / (gflops * 1e9):.2f} s/MP"

    print(f"image {width}x{height} ({megapixels:.2f} MP), {args.threads} threads")
    print(f"allocator policy of the rave variants: {args.allocator}")
    print(f"weights: {'authors rave-unpaired' if shared.CHECKPOINT.is_file() else 'default'}")
    print(f"Winograd kernel: {winograd.kernel_status()}")
    source = "FMA peak measured now (fma_peak.c)" if measured else f"nominal peak ({how})"
    print(
        f"Winograd limit {limit:.2f} s/MP: {winograd_flops / 1e6:.3f} MFLOP per pixel of "
        f"transformed-domain products at {peak:.0f} GFLOP/s, the {source}; nominal peak "
        f"{nominal:.0f} GFLOP/s ({how}: {s_per_mp(nominal)}); float32 matmul measured now "
        f"{gemm:.0f} GFLOP/s ({s_per_mp(gemm)})"
    )
    rows = []
    fma_around: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = _export(tmp)
        image = shared._test_image(height, width)
        image_path = str(tmp / "image.npy")
        np.save(image_path, image)
        pixels = image.astype(np.float32) / 255.0
        reference = None
        for variant in args.variants:
            # Whole-image runs: eager 1.85 GB per MP, ONNX Runtime 0.95 (--memory-scan).
            needed_mb = {"eager": 1850, **dict.fromkeys(PEERS, 950)}.get(variant, 0) * megapixels
            if needed_mb + 600 > 0.8 * _available_mb():
                print(f"{variant}: skipped, needs about {needed_mb / 1024:.0f} GB")
                continue
            # The host's speed drifts within minutes: the FMA peak is measured again just
            # before and after rave's run, so that its ratio to the limit is of one moment.
            around = [_fma_gflops(args.threads)] if variant == "rave-winograd" else []
            try:
                seconds, peak, light = _run(
                    variant, model, image_path, args.threads, tmp, args.allocator
                )
            except RuntimeError as err:
                print(err)
                continue
            if around:
                around.append(_fma_gflops(args.threads))
                if None not in around:
                    fma_around = cast("list[float]", around)
            enhanced = np.clip(pixels / light[..., None], 0, 1)
            if variant == "eager":
                reference = enhanced
            diff = float(np.abs(enhanced - reference).max()) if reference is not None else np.nan
            rows.append((variant, seconds / megapixels, peak, diff))
            print(f"  {variant}: {seconds / megapixels:.2f} s/MP", flush=True)
    fastest_peer = min((r[1] for r in rows if r[0] not in RAVE_BACKENDS), default=None)
    print(f"{'variant':16s} {'s/MP':>6s} {'peak RSS':>10s} {'max|diff|':>9s} {'vs peer':>8s}")
    for name, s_per_mp, peak, diff in rows:
        ratio = f"{fastest_peer / s_per_mp:7.2f}x" if fastest_peer else "    n/a"
        print(f"{name:16s} {s_per_mp:6.2f} {peak:8,.0f}MB {diff:9.1e} {ratio}")
    print(f"Winograd limit {limit:.2f} s/MP; 'vs peer': speed relative to the fastest peer")
    for name, seconds_per_mp, *_ in rows:
        if name != "rave-winograd":  # F(6x6), the tiles the limit counts
            continue
        print(f"{name}: {seconds_per_mp / limit:.2f}x the Winograd limit above")
        if fma_around:
            limits = [winograd_flops * 1e6 / (gflops * 1e9) for gflops in fma_around]
            print(
                f"{name}: {seconds_per_mp / max(limits):.2f}x to "
                f"{seconds_per_mp / min(limits):.2f}x the limit at the FMA peak measured just "
                f"before and after it ({fma_around[0]:.0f} and {fma_around[1]:.0f} GFLOP/s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
