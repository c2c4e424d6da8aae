"""Training speed of RAVE on a CPU, and where an iteration's time goes.

One guided-stage iteration is what the training loop does: a batch from the data pipeline
(decoded images cached, augmentation on the fly), the enhancer's forward pass, the guidance
embedding and the identity features, one backward pass, one Adam step. The backward pass is
split by timing the enhancer's backward alone (from a fixed gradient on its output) and
taking the remainder as the encoders' share.

    python benchmarks/bench_train.py                      # 2 threads, crop 256, batch 4
    python benchmarks/bench_train.py --iters 5 --encoders effnet

CLIP towers have random weights (``clip:ARCH@random``): the speed does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rave.encoders import create_encoder
from rave.losses import identity_loss, residual_loss
from rave.network import EnhancementNet, apply_light_map
from rave.training.data import (
    AugmentParams,
    FolderImages,
    ResumableBatchSampler,
    TrainingImages,
    list_images,
)

SETUPS = {
    "effnet": ("effnet-lite0", "effnet-lite0"),
    "clip": ("clip:ViT-B-32@random", "clip:RN101@random"),
}


def _image_folder(root: Path, n: int) -> Path:
    """Photos from ../shared/data/dicm when present, else smooth random 640x480 images."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicm"
    if shared.is_dir():
        return shared
    rng = np.random.default_rng(0)
    for i in range(n):
        base = rng.random((6, 8, 3))
        img = np.kron(base, np.ones((80, 80, 1))) * 255
        Image.fromarray(img.astype(np.uint8)).save(root / f"{i:03d}.jpg")
    return root


def bench(setup: str, folder: Path, crop: int, batch: int, iters: int, warmup: int) -> None:
    guidance_name, identity_name = SETUPS[setup]
    guidance = create_encoder(guidance_name)
    identity = guidance if identity_name == guidance_name else create_encoder(identity_name)
    images = FolderImages(list_images(folder)[:16], crop)
    dataset = TrainingImages(images, AugmentParams())
    loader = iter(
        torch.utils.data.DataLoader(
            dataset,
            batch_sampler=ResumableBatchSampler(len(dataset), batch, 0, 0, iters + warmup),
        )
    )
    torch.manual_seed(1)
    residual = torch.nn.functional.normalize(torch.randn(guidance.embed_dim), dim=0)
    net = EnhancementNet(padding_mode="zeros")
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-5, weight_decay=1e-3)
    weights = (1.0, 1.0, 1.0, 1.0, 0.5)
    scales = tuple(identity.feature_scales) or None

    times: dict[str, list[float]] = {
        k: [] for k in ("data", "enhancer fwd", "encoders fwd", "backward", "adam", "total")
    }
    for i in range(iters + warmup):
        t0 = time.perf_counter()
        x = next(loader)
        t1 = time.perf_counter()
        enhanced = apply_light_map(x, net(x), eps=1e-9)
        t2 = time.perf_counter()
        l_res = residual_loss(guidance.embed(enhanced), residual, 0.3)
        with torch.no_grad():
            feats_in = identity.features(x)
        l_id = identity_loss(identity.features(enhanced), feats_in, weights, scales)
        total = 1920 * l_res + 22.5 * l_id
        t3 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        if i >= warmup:
            for key, dt in zip(
                times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0), strict=True
            ):
                times[key].append(dt)

    # the enhancer's share of the backward pass, alone
    enh_bwd = []
    x = next(
        iter(
            torch.utils.data.DataLoader(
                dataset, batch_sampler=ResumableBatchSampler(len(dataset), batch, 0, 0, 1)
            )
        )
    )
    grad = torch.rand(batch, 3, crop, crop) * 1e-3
    for i in range(max(2, iters // 2) + 1):
        enhanced = apply_light_map(x, net(x), eps=1e-9)
        t0 = time.perf_counter()
        enhanced.backward(grad)
        if i:
            enh_bwd.append(time.perf_counter() - t0)
        net.zero_grad(set_to_none=True)

    mean = {k: statistics.mean(v) for k, v in times.items()}
    enhancer_bwd = statistics.mean(enh_bwd)
    print(f"\n{setup}: guidance {guidance_name}, identity {identity_name}")
    print(
        f"  {1.0 / mean['total']:.3f} iterations/s ({mean['total']:.2f} s/iteration, {iters} timed)"
    )
    rows = [
        ("data loading (augment + collate)", mean["data"]),
        ("enhancer forward", mean["enhancer fwd"]),
        ("encoders forward (embed + 2x features)", mean["encoders fwd"]),
        ("enhancer backward (timed alone)", enhancer_bwd),
        ("encoders backward (backward - enhancer)", max(0.0, mean["backward"] - enhancer_bwd)),
        ("Adam step", mean["adam"]),
    ]
    for name, seconds in rows:
        print(f"  {name:42s} {seconds:7.3f} s  {100 * seconds / mean['total']:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--encoders", nargs="+", choices=sorted(SETUPS), default=["effnet", "clip"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, crop {args.crop}, batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = _image_folder(Path(tmp), 16)
        for setup in args.encoders:
            bench(setup, folder, args.crop, args.batch, args.iters, args.warmup)


if __name__ == "__main__":
    main()
