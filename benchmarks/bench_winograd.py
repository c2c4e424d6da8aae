"""F(4x4, 3x3) against F(6x6, 3x3) Winograd tiles in rave's C kernel, interleaved in one run.

On a shared or loaded machine absolute times mean little; this benchmark alternates the
two tile sizes (4, 6, 4, 6, ...) so that both see the same load, and reports the ratio of
their median times. Two parts:

- ``layers``: one conv of each channel count of the network (32->32, 64->64, 32->64,
  64->32) on a crop of the size the tiled engine runs (290x290 by default), single
  thread, CPU time of the calling thread (``time.thread_time``: time the thread was
  descheduled by other processes does not count);
- ``network``: ``predict_light_map(tile="auto")`` on a photo-like 2048x1536 image with
  the given threads, every Winograd layer on one tile size (``RAVE_WINOGRAD_TILE``), CPU
  time of the whole process and wall time.

    .venv/bin/python benchmarks/bench_winograd.py                  # both parts
    .venv/bin/python benchmarks/bench_winograd.py --part layers --repeats 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

LAYERS = ((32, 32), (64, 64), (32, 64), (64, 32))
TILES = (4, 6)


def _layers(size: int, repeats: int) -> None:
    from rave.inference import winograd

    kernel = winograd.load_kernel()
    if kernel is None:
        raise SystemExit(f"no Winograd kernel: {winograd.kernel_status()}")
    print(f"layers: {size}x{size} crop, 1 thread, {repeats} interleaved repeats, thread CPU time")
    for cin, cout in LAYERS:
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(cin, cout, 3)
        x = torch.randn(1, cin, size, size).contiguous(memory_format=torch.channels_last)
        times: dict[int, list[float]] = {tile: [] for tile in TILES}
        for tile in TILES:  # warm up: build, transform the weights, page in
            winograd.conv3x3(kernel, x, conv, slope=0.2, tile=tile)
        for _ in range(repeats):
            for tile in TILES:
                start = time.thread_time()
                winograd.conv3x3(kernel, x, conv, slope=0.2, tile=tile)
                times[tile].append(time.thread_time() - start)
        f4, f6 = (statistics.median(times[tile]) for tile in TILES)
        print(f"  {cin:2d}->{cout:2d}: F(4x4) {f4 * 1e3:7.1f} ms  F(6x6) {f6 * 1e3:7.1f} ms  "
              f"F(6x6) / F(4x4) = {f6 / f4:.3f}")  # fmt: skip


def _network(threads: int, repeats: int, height: int, width: int) -> None:
    import bench_inference as shared

    from rave.inference import predict_light_map

    torch.set_num_threads(threads)
    net = shared._load_net("cpu")
    image = torch.from_numpy(shared._test_image(height, width)).permute(2, 0, 1)[None]
    print(f"network: {width}x{height}, {threads} threads, {repeats} interleaved repeats")
    cpu: dict[int, list[float]] = {tile: [] for tile in TILES}
    wall: dict[int, list[float]] = {tile: [] for tile in TILES}
    lights = {}
    for round_ in range(repeats + 1):  # round 0 warms up
        for tile in TILES:
            os.environ["RAVE_WINOGRAD_TILE"] = str(tile)
            start_cpu, start = time.process_time(), time.perf_counter()
            lights[tile] = predict_light_map(net, image, tile="auto")
            if round_:
                cpu[tile].append(time.process_time() - start_cpu)
                wall[tile].append(time.perf_counter() - start)
    os.environ.pop("RAVE_WINOGRAD_TILE")
    with torch.no_grad():
        reference = net(image.float() / 255.0)
    for tile in TILES:
        diff = (lights[tile] - reference).abs().max().item()
        print(f"  F({tile}x{tile}): CPU {statistics.median(cpu[tile]):6.2f} s  wall "
              f"{statistics.median(wall[tile]):6.2f} s  max diff to eager {diff:.1e}")  # fmt: skip
    ratio_cpu = statistics.median(cpu[6]) / statistics.median(cpu[4])
    ratio_wall = statistics.median(wall[6]) / statistics.median(wall[4])
    print(f"  F(6x6) / F(4x4): CPU time {ratio_cpu:.3f}, wall time {ratio_wall:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", choices=("layers", "network", "both"), default="both")
    parser.add_argument("--size", type=int, default=290, help="crop side of the layer part")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.part in ("layers", "both"):
        torch.set_num_threads(1)
        _layers(args.size, args.repeats)
    if args.part in ("network", "both"):
        _network(args.threads, max(1, args.repeats // 2), 1536, 2048)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
