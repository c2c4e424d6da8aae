"""Batch throughput of ``rave enhance`` on a folder: photos one after another, and with the
next photo decoded and the previous one encoded while the current one is enhanced.

Both runs use the same folder of photo-like JPEGs (quality 95) and the same model, each as
its own ``rave enhance`` process (``RAVE_OVERLAP=0`` for the sequential one); the script
prints photos per minute and each process's peak resident memory.

    .venv/bin/python benchmarks/bench_batch.py                     # 20 photos of 12 MP
    .venv/bin/python benchmarks/bench_batch.py --count 6 --size 4000x3000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_inference as shared  # test image and the authors' checkpoint


def _make_photos(folder: Path, count: int, width: int, height: int) -> None:
    from PIL import Image

    folder.mkdir()
    first = folder / "photo_000.jpg"
    Image.fromarray(shared._test_image(height, width)).save(first, quality=95)
    for index in range(1, count):  # same content: every photo costs the same
        shutil.copyfile(first, folder / f"photo_{index:03d}.jpg")


def _run(photos: Path, output: Path, model: str, threads: int, overlap: bool):
    """``(seconds, peak RSS in MB)`` of one ``rave enhance`` process."""
    env = dict(os.environ, RAVE_OVERLAP="1" if overlap else "0", OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-c", "from rave.cli import main; main()"]
    command += ["enhance", str(photos), "-o", str(output)]
    command += ["--model", model, "--device", "cpu", "-q"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:  # interrupted or terminated: an orphan would skew the next run
        process.kill()
        process.wait()
        raise
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"rave enhance failed (status {status})")
    return seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT (default 12 MP)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    # SIGTERM (kill, pkill) as an exception, so that the running `rave enhance` is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    width, height = (int(v) for v in args.size.lower().split("x"))
    model = str(shared.CHECKPOINT) if shared.CHECKPOINT.is_file() else "default"
    print(f"{args.count} JPEGs of {width}x{height} ({width * height / 1e6:.1f} MP), {model}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _make_photos(tmp / "photos", args.count, width, height)
        for overlap in (False, True):
            output = tmp / f"out_{overlap}"
            seconds, peak = _run(tmp / "photos", output, model, args.threads, overlap)
            label = "overlapped" if overlap else "sequential"
            rate = args.count / seconds * 60
            print(
                f"{label:11s} {seconds:7.1f} s  {rate:6.2f} photos/min  peak RSS {peak:,.0f} MB",
                flush=True,
            )
            shutil.rmtree(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
