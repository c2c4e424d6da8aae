"""Peak memory and time of the paired SSIMs (reference and standard) on one 12 MP pair.

Run from the repository root, on this commit and an older one, to compare:

    python benchmarks/bench_ssim_memory.py

Prints both scores (they must not change between versions), the time and the process's
peak resident memory before and after scoring.
"""

from __future__ import annotations

import resource
import time

import numpy as np

from rave.evaluation import paired


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    rng = np.random.default_rng(0)
    enhanced = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    noise = rng.integers(-20, 20, enhanced.shape)
    reference = np.clip(enhanced.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    before = _peak_mb()
    started = time.perf_counter()
    score_reference = paired.ssim_reference(enhanced, reference)
    score_standard = paired.ssim(enhanced, reference)
    print(
        f"12 MP pair: reference SSIM {score_reference:.10f}, standard SSIM "
        f"{score_standard:.10f} in {time.perf_counter() - started:.1f} s; peak RSS "
        f"{_peak_mb():.0f} MB ({before:.0f} MB before scoring)"
    )


if __name__ == "__main__":
    main()
