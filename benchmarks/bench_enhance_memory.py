"""Peak memory and time of enhancing a large JPEG (default 6000x4000, 24 MP).

Makes a synthetic photo (smooth dim gradient plus sensor-like noise) in a temporary folder,
enhances it in a child process and prints the child's peak resident memory (``ru_maxrss``
from ``os.wait4``, i.e. ``getrusage(RUSAGE_CHILDREN)`` for that one child) and wall time.
The budget is 1.0 GB peak RSS for a 24-megapixel JPEG. ``--via`` picks the entry point:

* ``cli``: ``rave enhance PHOTO -o OUT``;
* ``api``: ``rave.Enhancer(model).enhance_file(PHOTO, OUT)`` in a fresh interpreter;
* ``server``: ``rave serve`` in the child; this process uploads the photo (the network runs
  once), downloads the result at strength 1 and at 0.5 (the kept light map applied again)
  and stops the server with Ctrl-C (SIGINT). Times are printed per request.

Usage::

    nice .venv/bin/python benchmarks/bench_enhance_memory.py            # 6000x4000, cli
    nice .venv/bin/python benchmarks/bench_enhance_memory.py --size 1500x1000 --threads 2
    .venv/bin/python benchmarks/bench_enhance_memory.py --threads 2 --via cli api server
    .venv/bin/python benchmarks/bench_enhance_memory.py --format tiff16   # or png16

The model is ``../shared/reference/checkpoints/rave_unpaired.pth`` when present, else a
randomly initialised network saved to the temporary folder (memory and time do not depend
on the weights).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CHECKPOINT = REPO_ROOT.parent / "shared" / "reference" / "checkpoints" / "rave_unpaired.pth"
BUDGET_BYTES = 1.0e9


def make_photo(path: Path, width: int, height: int, seed: int = 0) -> None:
    """A dim, smooth-plus-noise RGB photo, built in row bands to keep this process small: a
    JPEG, or a 16-bit TIFF or PNG if ``path`` ends in ``.tif`` or ``.png``."""
    sixteen_bit = path.suffix in (".tif", ".png")
    scale = 65535 if sixteen_bit else 255
    rng = np.random.default_rng(seed)
    pixels = np.empty((height, width, 3), dtype=np.uint16 if sixteen_bit else np.uint8)
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    tint = np.array([1.0, 0.85, 0.7], dtype=np.float32)
    for top in range(0, height, 256):
        rows = np.linspace(top / height, min(top + 256, height) / height, 256, dtype=np.float32)
        rows = rows[: min(256, height - top)]
        # Backlit-like: a bright band near the top right, a dark foreground.
        light = 0.08 + 0.5 * np.exp(-((x[None, :] - 0.7) ** 2) / 0.05 - rows[:, None] / 0.3)
        band = light[:, :, None] * tint + rng.normal(0, 0.015, (len(rows), width, 3))
        pixels[top : top + len(rows)] = np.clip(band * scale + 0.5, 0, scale)
    if path.suffix == ".png":
        import cv2  # Pillow keeps 16-bit colour only as 8-bit

        cv2.imwrite(str(path), pixels[..., ::-1])  # OpenCV's channel order is BGR
    elif sixteen_bit:
        import tifffile

        tifffile.imwrite(path, pixels)
    else:
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
    parser.add_argument(
        "--format", choices=["jpeg", "tiff16", "png16"], default="jpeg",
        help="the test photo: an 8-bit JPEG, or a 16-bit TIFF or PNG",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="OMP/torch threads")
    parser.add_argument(
        "--via", nargs="+", choices=["cli", "api", "server"], default=["cli"],
        help="entry points to measure, each in its own child process",
    )  # fmt: skip
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="rave-bench-") as folder:
        folder_path = Path(folder)
        suffix = {"jpeg": ".jpg", "tiff16": ".tif", "png16": ".png"}[args.format]
        photo = folder_path / f"photo{suffix}"
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
        megapixels = width * height / 1e6
        kind = {"jpeg": "JPEG", "tiff16": "16-bit TIFF", "png16": "16-bit PNG"}[args.format]
        print(
            f"photo: {width}x{height} ({megapixels:.1f} MP), "
            f"{photo.stat().st_size / 1e6:.1f} MB {kind}"
        )
        for via in args.via:
            out = folder_path / f"out-{via}"
            if via == "server":
                wall, peak, status = run_server(photo, out, model, args.tile, env)
            else:
                wall, peak, status = run_child(_command(via, photo, out, model, args.tile), env)
            verdict = "within" if peak <= BUDGET_BYTES else "OVER"
            print(
                f"{via}: exit status {status}, output written: {(out / photo.name).is_file()}; "
                f"wall time {wall:.1f} s ({wall / megapixels:.2f} s/MP, start-up included); "
                f"peak RSS {peak / 1e6:.0f} MB ({verdict} the {BUDGET_BYTES / 1e9:.1f} GB budget)",
                flush=True,
            )


_LAUNCH_CLI = "import sys; from rave.cli import run; sys.exit(run())"  # the rave script
_LAUNCH_API = (
    "import sys, rave; rave.Enhancer(sys.argv[1], device='cpu', tile=sys.argv[2])"
    ".enhance_file(sys.argv[3], sys.argv[4])"
)


def _command(via: str, photo: Path, out: Path, model: str, tile: str) -> list[str]:
    if via == "cli":
        return [sys.executable, "-c", _LAUNCH_CLI, "enhance", str(photo), "-o", str(out),
                "--model", model, "--device", "cpu", "--tile", tile, "-q"]  # fmt: skip
    return [sys.executable, "-c", _LAUNCH_API, model, tile, str(photo), str(out / photo.name)]


def run_server(
    photo: Path, out: Path, model: str, tile: str, env: dict[str, str]
) -> tuple[float, int, int]:
    """``rave serve`` in a child: upload, download twice, Ctrl-C; its wall time and peak."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", _LAUNCH_CLI, "serve", "--port", str(port), "--model",
               model, "--device", "cpu", "--tile", tile, "--time-limit", "3600"]  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # wait for the model to load and the port to open
            try:
                urllib.request.urlopen(base + "/", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        tick = time.perf_counter()
        upload = urllib.request.Request(
            f"{base}/enhance?name={photo.name}", data=photo.read_bytes(), method="POST"
        )
        try:
            with urllib.request.urlopen(upload, timeout=3600) as response:
                result_id = response.read().split(b'"id": "')[1].split(b'"')[0].decode()
        except urllib.error.HTTPError as error:  # e.g. 413: over the server's upload limit
            print(f"server: upload refused: HTTP {error.code} {error.reason}", flush=True)
        else:
            print(f"server: upload to preview {time.perf_counter() - tick:.1f} s", flush=True)
            out.mkdir(parents=True, exist_ok=True)
            for strength, name in (("1", photo.name), ("0.5", f"{photo.stem}-0.5{photo.suffix}")):
                tick = time.perf_counter()
                url = f"{base}/result/{result_id}/download?strength={strength}"
                with urllib.request.urlopen(url, timeout=3600) as response:
                    (out / name).write_bytes(response.read())
                print(f"server: download at strength {strength} {time.perf_counter() - tick:.1f} s")
    finally:
        child.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    return wall, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    main()
