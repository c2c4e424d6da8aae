"""The engine of an earlier commit against this checkout's, in alternate processes.

The shared machine's speed drifts by 10-30% within minutes, so two versions are only
comparable when timed in turns: this script checks the earlier commit out into a temporary
git worktree and runs ``predict_light_map`` (``tile="auto"``, after the allocator policy of
rave's entry points) on the 2048x1536 test image of ``bench_inference.py``, each version in
its own process, old and new in turn, ``--pairs`` times. Each process prints the best of
``--repeats`` runs in seconds per megapixel and the light map's largest difference to the
whole-image eager forward.

    .venv/bin/python benchmarks/bench_versions.py f6d3b3d            # 3 pairs, 2 threads
    .venv/bin/python benchmarks/bench_versions.py HEAD~3 --pairs 5 --threads 1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _child(source: Path, threads: int, repeats: int, height: int, width: int) -> None:
    sys.path.insert(0, str(source))
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import bench_inference as shared
    import torch

    import rave
    from rave.inference import memory, tiled

    if not Path(rave.__file__).resolve().is_relative_to(source.resolve()):
        raise SystemExit(f"imported rave from {rave.__file__}, not from {source}")
    torch.set_num_threads(threads)
    memory.tune_allocator(False)
    net = shared._load_net("cpu")
    pixels = torch.from_numpy(shared._test_image(height, width)).permute(2, 0, 1)[None]
    megapixels = height * width / 1e6
    with torch.inference_mode():
        light = tiled.predict_light_map(net, pixels.contiguous(), tile="auto")  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tiled.predict_light_map(net, pixels.contiguous(), tile="auto")
            best = min(best, time.perf_counter() - start)
        reference = net(pixels.float().div(255.0))
    difference = float((light - reference).abs().max())
    print(f"{best / megapixels:.3f} s/MP (best of {repeats}), max diff to eager {difference:.1e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revision", nargs="?", help="the earlier commit (any git revision)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="2048x1536", help="WIDTHxHEIGHT")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))
    if args.child is not None:
        _child(args.child, args.threads, args.repeats, height, width)
        return 0
    if args.revision is None:
        parser.error("give the earlier commit to compare with")
    common = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--size", args.size]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "earlier"
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "-q", str(tree),
             args.revision],
            check=True,
        )  # fmt: skip
        try:
            versions = {args.revision: tree / "src", "this checkout": REPO_ROOT / "src"}
            for pair in range(1, args.pairs + 1):
                for name, source in versions.items():
                    result = subprocess.run(
                        [sys.executable, __file__, "--child", str(source), *common],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    line = result.stdout.strip().splitlines()[-1:] or [result.stderr.strip()]
                    print(f"pair {pair}, {name}: {line[0]}", flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
