"""Inference speed and memory: the reference whole-image forward pass vs rave's tiled engine.

Each variant runs in its own child process (so peak resident memory is its own), one after
the other in one run, on the same image and weights; the script prints seconds per
megapixel, the speed ratio, peak RSS, achieved GFLOP/s against the network's FLOP count per
pixel (for the Winograd backend an effective rate: it does a quarter of those
multiplications), and the maximum difference between the outputs.

    .venv/bin/python benchmarks/bench_inference.py                 # 2048x1536, 2 threads
    .venv/bin/python benchmarks/bench_inference.py --size 6000x4000 --skip-reference
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO_ROOT.parent / "shared" / "reference" / "checkpoints" / "rave_unpaired.pth"
# Multiply-adds per output pixel of the enhancement network (3x3 convs; the pooled 1x1
# convs run on at most 6x6 grids and are negligible).
MACS_PER_PIXEL = 3 * 32 * 9 + 4 * 2 * 32 * 32 * 9 + 64 * 32 * 9 + 32 * 64 * 9 + 2 * 2 * 64 * 64 * 9
MACS_PER_PIXEL += 64 * 32 * 9 + 32 * 9
FLOPS_PER_PIXEL = 2 * MACS_PER_PIXEL


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux keeps ``ru_maxrss`` across ``execve``, so a
    spawned child would report at least its parent's size at the fork.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_net(device: str):
    import torch

    from rave.network import (
        EnhancementNet,
        build_enhancer,
        extract_state_dict,
        load_checkpoint_file,
    )

    if CHECKPOINT.is_file():
        net = build_enhancer(extract_state_dict(load_checkpoint_file(CHECKPOINT)))
    else:  # random weights: same cost, outputs still comparable between variants
        torch.manual_seed(0)
        net = EnhancementNet().eval()
    return net.to(device)


def _test_image(height: int, width: int) -> np.ndarray:
    """A photo-like uint8 image: smooth gradients and blobs plus sensor-like noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(xx / 97.0) * np.cos(yy / 61.0)
    image = np.stack([base * s for s in (0.9, 0.7, 0.5)], axis=-1)
    image += rng.normal(0, 0.03, size=image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _child(
    variant: str,
    image_path: str,
    out_path: str,
    threads: int,
    tile,
    device,
    backend,
    allocator: str,
    queue,
):
    import os

    import torch

    if allocator == "rave":
        # the policy `rave enhance` applies to a photo of this size (glibc only)
        from rave.inference import is_memory_bound
        from rave.inference.memory import tune_allocator as _tune_allocator

        height, width = np.load(image_path, mmap_mode="r").shape[:2]
        _tune_allocator(is_memory_bound(height, width, device))

    if backend != "auto":
        os.environ["RAVE_CONV_BACKEND"] = backend

    torch.set_num_threads(threads)
    from rave.inference import predict_light_map

    net = _load_net(device)
    image = torch.from_numpy(np.load(image_path)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        start = time.perf_counter()
        if variant == "reference":
            # The authors' way: the whole image as one float32 NCHW batch, eager forward.
            light = net(image.float().div(255.0).to(device)).cpu()
        else:
            light = predict_light_map(net, image, tile=tile)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    np.save(out_path, light[0, 0].numpy())
    queue.put((seconds, peak_rss_mb()))


def _run(
    variant: str,
    image_path: str,
    threads: int,
    tile,
    device: str,
    tmp: Path,
    backend="auto",
    allocator="default",
):
    out_path = str(tmp / f"{variant}_{tile}_{backend}.npy")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_child,
        args=(variant, image_path, out_path, threads, tile, device, backend, allocator, queue),
    )
    proc.start()
    seconds, peak_mb = queue.get()
    proc.join()
    return seconds, peak_mb, np.load(out_path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2048x1536", help="WIDTHxHEIGHT (default 2048x1536)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", default=["auto"], nargs="+", help="tile sizes to try")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--backend",
        default=["auto"],
        nargs="+",
        help="conv backends to try (RAVE_CONV_BACKEND); auto = the engine's own choice",
    )
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--allocator",
        choices=("default", "rave"),
        default="default",
        help="glibc allocation policy of BOTH variants: the C library's default, or the one "
        "`rave enhance` sets for a photo of this size",
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    megapixels = width * height / 1e6
    tiles = [t if t == "auto" else int(t) for t in args.tile]

    print(f"image {width}x{height} ({megapixels:.2f} MP), {args.threads} threads, {args.device}")
    print(f"network: {FLOPS_PER_PIXEL / 1e6:.3f} MFLOP per pixel ({MACS_PER_PIXEL:,} MACs)")
    print(f"weights: {'authors rave-unpaired' if CHECKPOINT.is_file() else 'random'}")
    print(f"allocator policy (both variants): {args.allocator}")
    if args.device == "cpu":
        from rave.inference import winograd

        winograd.load_kernel()  # built here once, so that no timed child compiles it
        print(f"Winograd kernel: {winograd.kernel_status()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        image = _test_image(height, width)
        image_path = str(tmp / "image.npy")
        np.save(image_path, image)
        pixels = image.astype(np.float32) / 255.0
        rows = []
        reference = None
        if not args.skip_reference:
            seconds, peak, light = _run(
                "reference",
                image_path,
                args.threads,
                None,
                args.device,
                tmp,
                allocator=args.allocator,
            )
            reference = np.clip(pixels / light[..., None], 0, 1)
            rows.append(("reference (whole image)", seconds, peak, 0.0))
        for backend in args.backend:
            for tile in tiles:
                seconds, peak, light = _run(
                    "tiled", image_path, args.threads, tile, args.device, tmp, backend,
                    args.allocator,
                )  # fmt: skip
                diff = float("nan")
                if reference is not None:
                    enhanced = np.clip(pixels / light[..., None], 0, 1)
                    diff = float(np.abs(enhanced - reference).max())
                rows.append((f"rave {backend} (tile={tile})", seconds, peak, diff))

    header = ("variant", "s/MP", "GFLOP/s", "peak RSS", "max|diff|", "speed-up")
    print("{:32s} {:>7s} {:>8s} {:>10s} {:>9s} {:>8s}".format(*header))
    base = None if args.skip_reference else rows[0][1]
    for name, seconds, peak, diff in rows:
        gflops = FLOPS_PER_PIXEL * width * height / seconds / 1e9
        ratio = f"{base / seconds:7.2f}x" if base else "    n/a"
        print(
            f"{name:32s} {seconds / megapixels:7.2f} {gflops:8.0f} {peak:8.0f}MB "
            f"{diff:9.1e} {ratio}"
        )
    print("max|diff|: largest difference of the enhanced image clamp(I / L, 0, 1) on [0, 1]")
    print("GFLOP/s: the network's direct-convolution FLOPs per second (Winograd does fewer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
