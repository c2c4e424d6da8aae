"""One prepared check of the CUDA path, for a session that has a GPU.

Run it once on a machine with one or more NVIDIA GPUs (it takes a few minutes)::

    .venv/bin/python benchmarks/gpu_check.py --out gpu_check.json

It checks, printing one line per result and writing them all to ``--out``:

1. ``golden``: the authors' checkpoints reproduce the reference implementation's golden
   outputs on CUDA, whole-image and tiled (max difference <= 1e-3; TF32 off);
2. ``tiled``: tiled == whole image on CUDA at odd sizes and tile sizes (<= 1e-3);
3. ``speed``: seconds per megapixel at 12 and 48 MP with ``tile="auto"`` (uint8 photo on the
   GPU, enhanced in place), and peak GPU memory against the bound: half of the memory that
   was free when the run started (the engine budgets a quarter per tile and a quarter for
   its feature cache);
4. ``half``: float16 and bfloat16 light maps against float32 (<= 1e-3), and that rave's
   engine refuses a network in a dtype that misses this;
5. ``ddp``: 5 training iterations of each method (rave, clip-lit, clip-lit-latent) with
   DistributedDataParallel over every GPU (NCCL), with a tiny random CLIP (no download),
   ending with identical weights on every rank.

``--cpu`` runs the same parts on the CPU at small sizes (gloo instead of NCCL): a smoke
test of the script itself on a machine without a GPU; its figures mean nothing.
The exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = REPO_ROOT.parent / "shared" / "reference"
TOLERANCE = 1e-3
METHODS = ("rave", "clip-lit", "clip-lit-latent")
PARTS = ("golden", "tiled", "speed", "half", "ddp")


class Report:
    """Results as ``{part: [{"check", "ok", ...figures}]}``; prints each as it comes."""

    def __init__(self) -> None:
        self.results: dict[str, list[dict]] = {}

    def add(self, part: str, check: str, ok: bool | None, **figures: object) -> None:
        self.results.setdefault(part, []).append({"check": check, "ok": ok, **figures})
        status = {True: "ok  ", False: "FAIL", None: "info"}[ok]
        shown = ", ".join(f"{k}={_show(v)}" for k, v in figures.items())
        print(f"[{status}] {part}: {check}  {shown}", flush=True)

    @property
    def failed(self) -> bool:
        return any(r["ok"] is False for rows in self.results.values() for r in rows)


def _show(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _net(name: str, device: torch.device):
    from rave.network import build_enhancer, extract_state_dict, load_checkpoint_file

    path = REFERENCE / "checkpoints" / f"{name}.pth"
    return build_enhancer(extract_state_dict(load_checkpoint_file(path))).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_golden(report: Report, device: torch.device, small: bool) -> None:
    from rave.inference import predict_light_map

    goldens = sorted((REFERENCE / "golden").glob("*.npz"))
    if not goldens:
        report.add("golden", f"no golden outputs in {REFERENCE / 'golden'}", False)
    for path in goldens:
        golden = np.load(path)
        net = _net(str(golden["checkpoint"]), device)
        image = torch.from_numpy(golden["input"]).permute(2, 0, 1)[None].to(device)
        for tile in (None, 64):
            light = predict_light_map(net, image, tile=tile)[0, 0].cpu().numpy()
            diff = float(np.abs(light - golden["light_map"]).max())
            report.add("golden", f"{path.name} tile={tile}", diff <= TOLERANCE, max_diff=diff)


def check_tiled(report: Report, device: torch.device, small: bool) -> None:
    from rave.inference import predict_light_map

    net = _net("rave_unpaired", device)
    generator = torch.Generator().manual_seed(0)
    sizes = [(517, 333), (97, 1203)] if small else [(517, 333), (2049, 1537), (97, 1203)]
    for height, width in sizes:
        image = torch.rand(1, 3, height, width, generator=generator).to(device)
        whole = predict_light_map(net, image, tile=None)
        for tile in (64, 200, "auto"):
            diff = float((predict_light_map(net, image, tile=tile) - whole).abs().max())
            report.add("tiled", f"{height}x{width} tile={tile}", diff <= TOLERANCE, max_diff=diff)


def check_speed(report: Report, device: torch.device, small: bool) -> None:
    from rave.inference import enhance_tensor
    from rave.inference.tiled import auto_tile_size

    net = _net("rave_unpaired", device)
    sizes = [(600, 800)] if small else [(3000, 4000), (6000, 8000)]
    for height, width in sizes:
        megapixels = height * width / 1e6
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
        photo = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, device=device)
        tile = auto_tile_size(height, width, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        enhance_tensor(net, photo[..., :64, :64].clone())  # warm-up (kernels, cuDNN plans)
        _sync(device)
        start = time.perf_counter()
        enhance_tensor(net, photo, tile="auto", out=photo)
        _sync(device)
        seconds = time.perf_counter() - start
        figures: dict[str, object] = {"s_per_mp": seconds / megapixels, "tile": tile}
        ok: bool | None = None
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) - base
            bound = free / 2
            figures.update(peak_gb=peak / 2**30, bound_gb=bound / 2**30)
            ok = peak <= bound
        report.add("speed", f"{megapixels:.0f} MP tile=auto", ok, **figures)
        del photo


def check_half(report: Report, device: torch.device, small: bool) -> None:
    from rave.inference import predict_light_map

    golden = np.load(REFERENCE / "golden" / "rave_unpaired__05_384x256.npz")
    image = torch.from_numpy(golden["input"]).permute(2, 0, 1)[None].to(device).float() / 255
    if small:  # CPU float16 convolutions are very slow
        image = image[..., :48, :64]
    net = _net("rave_unpaired", device)
    with torch.inference_mode():
        reference = net(image)
    for dtype in (torch.float16, torch.bfloat16):
        try:
            with torch.inference_mode():
                light = net.to(dtype)(image.to(dtype)).float()
            diff = float((light - reference).abs().max())
        except RuntimeError as err:  # no kernel for this dtype on this device
            report.add("half", f"{dtype} whole image", None, error=str(err)[:80])
            continue
        finally:
            net.float()
        close = diff <= TOLERANCE
        report.add("half", f"{dtype} whole image within {TOLERANCE}", None, max_diff=diff)
        try:
            predict_light_map(net.to(dtype), image)
            refused = False
        except ValueError:
            refused = True
        finally:
            net.float()
        # Within tolerance: the engine may run it; beyond: it must refuse.
        report.add("half", f"engine with a {dtype} network", close or refused, refused=refused)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, method: str, cpu: bool) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _tiny_clip import register_tiny_clip
    from rave.encoders import create_encoder
    from rave.training.config import TrainConfig
    from rave.training.loop import train

    tiny = register_tiny_clip(Path(root) / "clip_cfg")
    options = {}
    if method != "rave":
        # No extensions: with a random CLIP the ranking loss stays above the authors'
        # extension threshold, which added 30 x 100 prompt steps of 256-px images per round.
        options = {
            "prompt_init_iterations": 2,
            "refine_iterations": 2,
            "prompt_extend_iterations": 0,
            "prompt_image_size": 0,
        }
    config = TrainConfig(
        method=method,
        method_options=options,
        backlit_dir=str(Path(root) / "backlit"),
        well_lit_dir=str(Path(root) / "well"),
        guidance_encoder=tiny,
        identity_encoder=tiny,
        identity_layer_weights=(1.0, 1.0),
        crop_size=32,
        batch_size=2,
        iterations=5,
        reconstruction_iterations=2,
        round_iterations=3,
        output_dir=str(Path(root) / f"run_{method}"),
        checkpoint_every=0,
        sample_every=0,
        log_every=1,
        tensorboard=False,
        device="cpu" if cpu else "cuda",
        max_reinits=0,
    )

    def factory(name: str, device: torch.device):
        torch.manual_seed(0)
        return create_encoder(name, device=device)

    result = train(config, encoder_factory=factory)
    weights = {k: v.cpu() for k, v in result.model.state_dict().items()}
    torch.save(weights, Path(root) / f"{method}_rank{rank}.pt")


def check_ddp(report: Report, device: torch.device, small: bool) -> None:
    import torch.multiprocessing as mp
    from PIL import Image

    world = torch.cuda.device_count() if device.type == "cuda" else 1
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        for folder, gain in (("backlit", 0.2), ("well", 0.9)):
            (Path(root) / folder).mkdir()
            for index in range(8):
                image = np.kron(rng.random((4, 4, 3)), np.ones((16, 16, 1))) * gain
                Image.fromarray((image * 255).astype(np.uint8)).save(
                    Path(root) / folder / f"{index}.png"
                )
        for method in METHODS:
            start = time.perf_counter()
            try:
                mp.spawn(
                    _ddp_worker,
                    args=(world, _free_port(), root, method, device.type != "cuda"),
                    nprocs=world,
                    join=True,
                )
            except Exception as err:  # report and go on with the next method
                report.add("ddp", f"{method}, {world} process(es)", False, error=str(err)[-300:])
                continue
            weights = [torch.load(Path(root) / f"{method}_rank{r}.pt") for r in range(world)]
            same = all(
                torch.equal(weights[0][key], other[key]) for other in weights[1:] for key in other
            )
            report.add(
                "ddp",
                f"{method}: 5 iterations, {world} process(es), identical weights",
                same,
                seconds=time.perf_counter() - start,
            )


CHECKS: dict[str, Callable[[Report, torch.device, bool], None]] = {
    "golden": check_golden,
    "tiled": check_tiled,
    "speed": check_speed,
    "half": check_half,
    "ddp": check_ddp,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    parser.add_argument(
        "--cpu", action="store_true", help="smoke-test the script on the CPU at small sizes"
    )
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu for a smoke test of this script", file=sys.stderr)
        return 2
    if not (REFERENCE / "checkpoints").is_dir():
        print(f"reference material not found at {REFERENCE}", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    # TF32 would change float32 results by about 1e-3 on its own.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = Report()
    if device.type == "cuda":
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        report.add("device", ", ".join(names), None, torch=torch.__version__)
    for part in args.parts:
        try:
            CHECKS[part](report, device, args.cpu)
        except Exception as err:  # one broken part must not hide the others' results
            report.add(part, "crashed", False, error=f"{type(err).__name__}: {err}"[:300])
    if args.out:
        args.out.write_text(json.dumps(report.results, indent=2))
    print("FAILED" if report.failed else "all checks passed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
