"""Resident memory of a long-lived process: ``rave.enhance`` in a loop, or ``rave serve``.

``api``: ``rave.enhance`` on random sizes (16-400 px; uint8 RGB, float RGB, grey), RSS
printed every 100 calls. ``server``: real HTTP requests to an in-process ``rave serve``
(uploads of random sizes as PNG/JPEG, each followed by a download at a random strength).
Prints RSS after the first 100 and every 100 after; the bound to hold is the growth after
the first 100. Before ``rave.enhance`` handed freed heap memory back after each call
(``malloc_trim``), the api loop grew 979 -> 1043 -> 1112 MB at 100/200/300 calls; with a
trim after each call it stayed at 852/847/848 MB: glibc keeping freed memory, not a leak.

    python benchmarks/soak_memory.py api --count 700
    python benchmarks/soak_memory.py server --count 1000
"""

from __future__ import annotations

import argparse
import io
import threading
import time
import urllib.request

import numpy as np
from PIL import Image


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def random_image(rng: np.random.Generator) -> np.ndarray:
    height, width = rng.integers(16, 401, size=2)
    kind = rng.integers(0, 3)
    pixels = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    if kind == 1:
        return pixels.astype(np.float32) / 255
    if kind == 2:
        return pixels[:, :, 0]
    return pixels


def soak_api(count: int, rng: np.random.Generator) -> None:
    import rave

    for i in range(1, count + 1):
        rave.enhance(random_image(rng))
        if i % 100 == 0 or i == 1:
            print(f"api {i:5d} calls: RSS {rss_mb():7.1f} MB", flush=True)


def soak_server(count: int, rng: np.random.Generator) -> None:
    from rave.api import get_model
    from rave.server import make_server

    httpd = make_server(get_model("default"), "127.0.0.1", 0, log_line=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    started = time.perf_counter()
    for i in range(1, count + 1):
        pixels = random_image(rng)
        if pixels.dtype != np.uint8:
            pixels = (pixels * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG" if i % 2 else "JPEG")
        request = urllib.request.Request(
            f"{base}/enhance?name=p{i}", data=buffer.getvalue(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            result_id = response.read().split(b'"id": "')[1].split(b'"')[0].decode()
        strength = rng.uniform(0, 2)
        url = f"{base}/result/{result_id}/download?strength={strength:.2f}"
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
        if i % 100 == 0 or i == 1:
            print(
                f"server {i:5d} requests: RSS {rss_mb():7.1f} MB "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    httpd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["api", "server"])
    parser.add_argument("--count", type=int, default=700)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.mode == "api":
        soak_api(args.count, rng)
    else:
        soak_server(args.count, rng)


if __name__ == "__main__":
    main()
