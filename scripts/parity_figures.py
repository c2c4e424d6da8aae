"""Before/after figures of the parity choices of issue 16 (quoted in docs/method.md).

Random CLIP weights (OpenCLIP architectures built offline, seed 0) stand in for OpenAI's,
which cannot be downloaded here; the figures measure how far two code paths drift apart,
which does not need trained weights.

    python scripts/parity_figures.py --photos ../shared/data/dicm [--items 1 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F


def _photos(folder: Path, count: int, size: int) -> torch.Tensor:
    from rave.training.data import list_images, load_image

    files = list_images(folder)[:count]
    return torch.stack([load_image(p, size).float() / 255.0 for p in files])


def item1_loss_resize(photos: Path) -> None:
    """RAVE's L_res and its gradient with and without antialiasing in the 512 -> 224 squash."""
    from rave.encoders import create_encoder
    from rave.losses.guidance import residual_loss

    torch.manual_seed(0)
    encoder = create_encoder("clip:ViT-B-32@random")
    images = _photos(photos, 16, 512)
    backlit, well_lit = images[:8], images[8:].clamp(0, 1) ** 0.5  # brightened: a "well-lit" set
    with torch.no_grad():
        v_b = F.normalize(encoder.embed(backlit, resize="center_crop").mean(0), dim=0)
        v_w = F.normalize(encoder.embed(well_lit, resize="center_crop").mean(0), dim=0)
    r = F.normalize(v_w - v_b, dim=0)
    thr = float(v_w @ r)
    results = {}
    for antialias in (False, True):
        encoder.squash_antialias = antialias
        x = backlit.clone().requires_grad_(True)
        loss = residual_loss(encoder.embed(x), r, thr)
        loss.backward()
        results[antialias] = (float(loss.detach()), x.grad.flatten().double())
    (l0, g0), (l1, g1) = results[False], results[True]
    cos = float(F.cosine_similarity(g0, g1, dim=0))
    print("item 1 (ViT-B-32 random weights, 8 photos at 512 px):")
    print(f"  L_res authors' (no antialias) {l0:.6f}, antialiased {l1:.6f}, rel. diff {abs(l1 - l0) / l0:.2%}")
    print(f"  gradient cosine {cos:.4f}, |g_aa - g| / |g| = {float((g1 - g0).norm() / g0.norm()):.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/dicm"))
    parser.add_argument("--items", type=int, nargs="*", default=[1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    items = {1: lambda: item1_loss_resize(args.photos)}
    for item in args.items:
        items[item]()


if __name__ == "__main__":
    main()
