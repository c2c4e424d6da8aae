"""Peak memory and time of ``rave enhance`` on a large JPEG (default 6000x4000, 24 MP).

Makes a synthetic photo (smooth dim gradient plus sensor-like noise) in a temporary folder,
runs ``rave enhance`` on it in a child process and prints the child's peak resident memory
(``ru_maxrss`` from ``os.wait4``, i.e. ``getrusage(RUSAGE_CHILDREN)`` for that one child)
and wall time. The issue's budget is 1.0 GB peak RSS for a 24-megapixel JPEG.

Usage::

    nice .venv/bin/python benchmarks/bench_enhance_memory.py            # 6000x4000
    nice .venv/bin/python benchmarks/bench_enhance_memory.py --size 1500x1000 --threads 2

The model is ``../shared/reference/checkpoints/rave_unpaired.pth`` when present, else a
randomly initialised network saved to the temporary folder (memory and time do not depend
on the weights).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CHECKPOINT = REPO_ROOT.parent / "shared" / "reference" / "checkpoints" / "rave_unpaired.pth"
BUDGET_BYTES = 1.0e9


def make_photo(path: Path, width: int, height: int, seed: int = 0) -> None:
    """A dim, smooth-plus-noise RGB JPEG, built in row bands to keep this process small."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    tint = np.array([1.0, 0.85, 0.7], dtype=np.float32)
    for top in range(0, height, 256):
        rows = np.linspace(top / height, min(top + 256, height) / height, 256, dtype=np.float32)
        rows = rows[: min(256, height - top)]
        # Backlit-like: a bright band near the top right, a dark foreground.
        light = 0.08 + 0.5 * np.exp(-((x[None, :] - 0.7) ** 2) / 0.05 - rows[:, None] / 0.3)
        band = light[:, :, None] * tint + rng.normal(0, 0.015, (len(rows), width, 3))
        pixels[top : top + len(rows)] = np.clip(band * 255 + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=92)


def random_checkpoint(path: Path) -> None:
    import torch

    from rave.network.enhancer import EnhancementNet

    torch.manual_seed(0)
    torch.save(EnhancementNet().state_dict(), path)


def run_child(command: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Wall time (s), peak RSS (bytes) and exit status of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss * 1024, child.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the test photo")
    parser.add_argument("--model", default=None, help="checkpoint (default: see module doc)")
    parser.add_argument("--tile", default="auto", help="--tile passed to rave enhance")
    parser.add_argument("--threads", type=int, default=None, help="OMP/torch threads")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="rave-bench-") as folder:
        folder_path = Path(folder)
        photo = folder_path / "photo.jpg"
        make_photo(photo, width, height)
        model = args.model
        if model is None and SHARED_CHECKPOINT.is_file():
            model = str(SHARED_CHECKPOINT)
        elif model is None:
            model = str(folder_path / "random.pth")
            random_checkpoint(Path(model))
        env = dict(os.environ)
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        launcher = "import sys; from rave.cli import main; sys.exit(main())"
        base = [sys.executable, "-c", launcher, "enhance"]
        common = ["--model", model, "--device", "cpu", "--tile", args.tile, "-q"]

        # Fixed cost: the same command on a tiny photo (interpreter, torch, network).
        tiny = folder_path / "tiny.jpg"
        make_photo(tiny, 64, 48)
        tiny_time, tiny_rss, _ = run_child(
            [*base, str(tiny), "-o", str(folder_path / "out-tiny"), *common], env
        )
        wall, peak, status = run_child(
            [*base, str(photo), "-o", str(folder_path / "out"), *common], env
        )
        output = folder_path / "out" / "photo.jpg"
        megapixels = width * height / 1e6
        print(
            f"photo: {width}x{height} ({megapixels:.1f} MP), "
            f"{photo.stat().st_size / 1e6:.1f} MB JPEG"
        )
        print(f"tiny 64x48 run: {tiny_time:.1f} s, peak RSS {tiny_rss / 1e6:.0f} MB (fixed cost)")
        print(f"rave enhance exit status: {status}; output written: {output.is_file()}")
        print(f"wall time: {wall:.1f} s ({wall / megapixels:.2f} s/MP)")
        verdict = "within" if peak <= BUDGET_BYTES else "OVER"
        print(f"peak RSS: {peak / 1e6:.0f} MB ({verdict} the {BUDGET_BYTES / 1e9:.1f} GB budget)")


if __name__ == "__main__":
    main()
