"""Export a training checkpoint as the package's built-in ``default`` model.

    python scripts/export_default_model.py runs/default_model/best.pt \
        --refine-radius 8 --refine-eps 0.1 --refine-knee 0.9

Writes ``src/rave/zoo/weights/default.safetensors``: the enhancement network's state_dict
(float32, the reference key names) plus metadata naming the source run, its config, the
export time and, with ``--refine-radius``, the light-map refinement every engine applies
after the network (:mod:`rave.network.refinement`). safetensors holds only tensors and
strings, so loading it never runs code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

from safetensors.torch import save

from rave.io import atomic_write
from rave.network import (
    LightRefinement,
    build_enhancer,
    extract_state_dict,
    load_checkpoint_file,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET = REPO_ROOT / "src" / "rave" / "zoo" / "weights" / "default.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by rave train")
    parser.add_argument("-o", "--output", type=Path, default=TARGET)
    parser.add_argument(
        "--refine-radius", type=int, default=None,
        help="record a light-map refinement with this guided-filter radius (0: guard only)",
    )  # fmt: skip
    parser.add_argument("--refine-eps", type=float, default=LightRefinement.eps)
    parser.add_argument("--refine-knee", type=float, default=LightRefinement.knee)
    args = parser.parse_args()

    raw = load_checkpoint_file(args.checkpoint)
    state = extract_state_dict(raw, str(args.checkpoint))
    build_enhancer(state, str(args.checkpoint))  # refuses anything that is not this network
    tensors = {k: v.detach().float().contiguous() for k, v in state.items()}
    metadata = {
        "format": "rave-enhancer",
        "source_checkpoint": args.checkpoint.name,
        "iteration": str(raw.get("iteration", "")),
        "config": json.dumps(raw.get("config", {}), default=str),
        "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if args.refine_radius is not None:
        refinement = LightRefinement(args.refine_radius, args.refine_eps, args.refine_knee)
        metadata["light_refinement"] = refinement.to_metadata()
    atomic_write(args.output, save(tensors, metadata=metadata))
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
