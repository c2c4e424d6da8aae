"""The prepared GPU check (benchmarks/gpu_check.py) runs through on the CPU.

A session lent a GPU has 15 minutes of device time for it, so the script must work the first
time: its ``--cpu`` mode runs every part at small sizes (gloo instead of NCCL). Each part's
verdict is its own independent check (golden outputs, tiled == whole, identical DDP
weights); here we only require that all of them ran and passed, within a time that leaves
the GPU run its budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_gpu_check_smoke_on_cpu(shared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    script = REPO_ROOT / "benchmarks" / "gpu_check.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        run = subprocess.run(
            [sys.executable, str(script), "--cpu", "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=480,  # the DDP part once ran 3,000 prompt steps a round (over 25 minutes)
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"gpu_check.py --cpu still running after {err.timeout} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) >= {"golden", "tiled", "speed", "half", "ddp"}
    ddp = results["ddp"]
    for method in ("rave", "clip-lit", "clip-lit-latent"):
        entries = [entry for entry in ddp if entry["check"].startswith(f"{method}:")]
        assert entries and all(entry["ok"] for entry in entries), ddp
    failed = [entry for part in results.values() for entry in part if entry["ok"] is False]
    assert not failed, failed
