"""Before/after figures of the parity choices of issue 16 (quoted in docs/method.md).

Random CLIP weights (OpenCLIP architectures built offline, seed 0) stand in for OpenAI's,
which cannot be downloaded here; the figures measure how far two code paths drift apart,
which does not need trained weights.

    python scripts/parity_figures.py --photos ../shared/data/dicm [--items 1 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F


def _photos(folder: Path, count: int, size: int) -> torch.Tensor:
    from rave.training.data import list_images, load_image

    files = list_images(folder)[:count]
    return torch.stack([load_image(p, size).float() / 255.0 for p in files])


def _well_lit_photos(folder: Path) -> None:
    """Well-lit photos that scikit-image ships, written as PNGs into ``folder``."""
    from PIL import Image
    from skimage import data

    for name in ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")


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
    print(f"  L_res authors' (no antialias) {l0:.6f}, antialiased {l1:.6f}")
    print(f"  relative difference {abs(l1 - l0) / l0:.2%}")
    print(
        f"  gradient cosine {cos:.4f}, |g_aa - g| / |g| = {float((g1 - g0).norm() / g0.norm()):.2%}"
    )


def item5_shift(photos: Path) -> None:
    """The shifted residual with the authors' decoded vocabulary vs the token-id vocabulary."""
    from rave.encoders import create_encoder
    from rave.guidance.residual import compute_residual
    from rave.guidance.shift import build_vocabulary, shift_residual

    torch.manual_seed(0)
    encoder = create_encoder("clip:ViT-B-32@random")
    with tempfile.TemporaryDirectory() as well_lit:
        _well_lit_photos(Path(well_lit))
        rv = compute_residual(photos, well_lit, encoder, progress=False)
    r = F.normalize(rv.residual.double(), dim=0)
    out = {}
    for way in ("decoded", "token-ids"):
        vocab = build_vocabulary(encoder, way, progress=False)
        shifted = shift_residual(rv, encoder, 15, vocab=vocab)
        scores = vocab.embeddings.double() @ r
        top = [vocab.label(int(i)) for i in torch.topk(scores, 15).indices]
        out[way] = (F.normalize(shifted.residual.double(), dim=0), top, shifted.threshold)
    (r_dec, top_dec, thr_dec), (r_ids, top_ids, thr_ids) = out["decoded"], out["token-ids"]
    shift_angle = torch.arccos((r_dec @ r).clamp(-1, 1))
    between = torch.arccos((r_dec @ r_ids).clamp(-1, 1))
    norm = lambda t: t.strip("'\" ").rstrip("-")  # noqa: E731 - "star " vs star
    agree = len({norm(t) for t in top_dec} & {norm(t) for t in top_ids})
    print("item 5 (ViT-B-32 random weights, full vocabulary):")
    print(
        f"  shift angle {float(shift_angle):.4f} rad; r' apart by {float(between):.4f} rad "
        f"= {float(between / shift_angle):.1%} of it; thr {thr_dec:.4f} vs {thr_ids:.4f}"
    )
    print(f"  top-15 tokens in common: {agree} of 15")
    print("  decoded:  ", ", ".join(top_dec))
    print("  token-ids:", ", ".join(top_ids))


def item3_margin_order(photos: Path) -> None:
    """Refinement-3 margin loss with s1 = newest (the authors') vs s1 = older (before)."""
    from rave.encoders import create_encoder
    from rave.guidance.prompts import LatentPromptPair, margin_ranking_loss
    from rave.training.methods.clip_lit import PromptOptions, ranking_pairs

    torch.manual_seed(0)
    encoder = create_encoder("clip:ViT-B-32@random")
    backlit = _photos(photos, 16, 256)
    with tempfile.TemporaryDirectory() as folder:
        _well_lit_photos(Path(folder))
        well_lit = _photos(Path(folder), 16, 256)
    with torch.no_grad():
        emb = {
            "backlit": encoder.embed(backlit),
            "older": encoder.embed((backlit / 0.5).clamp(0, 1)),  # round r - 1: less bright
            "newest": encoder.embed((backlit / 0.35).clamp(0, 1)),  # round r
            "well": encoder.embed(well_lit.repeat(3, 1, 1, 1)[: len(backlit)]),
        }
    opts = PromptOptions()
    results = {}
    for label, order in (
        ("authors' (s1 newest)", ("newest", "older")),
        ("before", ("older", "newest")),
    ):
        prompts = LatentPromptPair(encoder.embed_dim, generator=torch.Generator().manual_seed(0))
        pairs = ranking_pairs("backlit", "well", list(order), opts)
        features = prompts()
        loss = opts.ranking_weight * sum(
            margin_ranking_loss(emb[a], emb[b], features, m, opts.logit_scale) for a, b, m in pairs
        )
        loss.backward()
        results[label] = (float(loss.detach()), prompts.vectors.grad.flatten().clone())
    (l_new, g_new), (l_old, g_old) = results.values()
    cos = float(F.cosine_similarity(g_new, g_old, dim=0))
    print("item 3 (ViT-B-32 random weights, 16 photos at 256 px, random latent prompts):")
    print(
        f"  refinement >= 2 loss: authors' order {l_new:.2f}, before {l_old:.2f}; "
        f"prompt-gradient cosine {cos:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/dicm"))
    parser.add_argument("--items", type=int, nargs="*", default=[1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    items = {
        1: lambda: item1_loss_resize(args.photos),
        3: lambda: item3_margin_order(args.photos),
        5: lambda: item5_shift(args.photos),
    }
    for item in args.items:
        items[item]()


if __name__ == "__main__":
    main()
