"""Choose the EfficientNet-Lite0 layers for guidance (``embed``) and identity (``features``).

Guidance: a residual vector r is computed (as ``rave residual`` does) from backlit photos
(even-numbered half of ``../shared/data/dicm``) and well-lit photos (scikit-image,
matplotlib and, when the Debian packages are installed, opencv-doc and libjxl-testdata sample
photos). Then, for each candidate embedding (channel statistics at a set of depths):

- ``rho_dim``: for each held-out dim photo (odd half of DICM + LIME), the Spearman
  correlation between how much it is brightened (gamma 1, 0.8, 0.65, 0.5, 0.4, then gains
  1.5, 2.2, 3.2 on the gamma-1 image, as two separate series) and its projection cos(e, r);
  averaged over photos and series. 1 means the projection orders exposures perfectly.
- ``rho_wl``: the same for well-lit photos darkened (gamma 2.5, 2, 1.6, 1.25, 1), each with r
  recomputed without that photo (leave-one-out).
- ``d``: effect size of brightening a dim photo: mean over photos of
  cos(e(gamma 0.4), r) - cos(e(gamma 1), r), divided by the spread (std) of cos(e, r) across
  the original photos. Exposure signal over content noise: the guidance loss needs it large.

Identity: per depth, ``mse_exp`` = median over all photos of the MSE between the maps of a
photo and of its gamma-0.8 copy (the ``feature_scales`` an identity loss divides by), and
``ratio`` = median MSE for a structural change (Gaussian blur sigma 1.5 px + noise 0.02) over
``mse_exp``: a good identity layer reacts to structure more than to exposure. One depth is
chosen per resolution (112, 56, 28, 14, 7 px) by the largest ratio.

Run: ``nice .venv/bin/python scripts/choose_effnet_layers.py`` (about a minute on 1 thread).

Results on 2026-11-25 (32 backlit, 41 held-out dim, 22 well-lit photos; selected rows)::

    candidate embedding (mean+std per channel)       dim  rho_dim  rho_wl     d
    pooled head (1280-d)                            1280    0.640   0.709  0.55
    FINDINGS: stem,b2,b4,b10,head                   2976    0.833   1.000  0.84
      same, parts not L2-normalised                 2976    0.802   1.000  0.71
      same, mean only / std only                    1488  0.783/0.740     0.82/0.85
    stage ends: stem,b0,b2,b4,b7,b10,b14,b15,head   4192    0.890   1.000  1.06  <- chosen
    stem,b0,b2,b7,b12 (picked after the fact)        688    0.899   1.000  1.14
    single stem / block10 / head                           0.878/0.472/0.624

The stage ends were chosen a priori (the last block of each stage) and are within noise of
the best subset found by looking at the table; every depth contributes, so the embedding is
not only colour statistics (the stem alone). Identity: block0, block2, block3, block5 and
block15 (ratios 14, 38, 44, 45, 44; the stem's is 6.8 and the head's 35), whose exposure MSEs
(1.03, 0.977, 0.552, 0.470, 0.093) span a factor of 11: hence ``feature_scales``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor

from rave.encoders.base import center_crop_resize
from rave.encoders.effnet import TAP_NAMES, EfficientNetLite0Encoder
from rave.guidance.residual import list_image_files, read_image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_PHOTOS = [
    "aero1.jpg",
    "aloeL.jpg",
    "apple.jpg",
    "baboon.jpg",
    "building.jpg",
    "butterfly.jpg",
    "fruits.jpg",
    "graf1.png",
    "home.jpg",
    "licenseplate_motion.jpg",
    "messi5.jpg",
    "orange.jpg",
    "rubberwhale1.png",
    "squirrel_cls.jpg",
]
LIBJXL_500 = Path("/usr/share/libjxl-testdata/external/wesaturate/500px")

BRIGHTEN_GAMMAS = (1.0, 0.8, 0.65, 0.5, 0.4)
GAINS = (1.0, 1.5, 2.2, 3.2)
DARKEN_GAMMAS = (2.5, 2.0, 1.6, 1.25, 1.0)
SIZE = 224

# name -> ((tap, stat), ...) where stat is "mean" or "std"
Config = tuple[tuple[str, str], ...]


def both(*taps: str) -> Config:
    return tuple((t, s) for t in taps for s in ("mean", "std"))


def candidates() -> dict[str, tuple[Config, bool]]:
    """Candidate embeddings: name -> (parts, normalise each part)."""
    findings = ("stem", "block2", "block4", "block10", "head")
    out: dict[str, tuple[Config, bool]] = {
        "pooled head (1280-d)": ((("head", "mean"),), True),
        "FINDINGS: stem,b2,b4,b10,head mean+std": (both(*findings), True),
        "  same, mean only": (tuple((t, "mean") for t in findings), True),
        "  same, std only": (tuple((t, "std") for t in findings), True),
        "  same, parts not normalised": (both(*findings), False),
        "shallow: stem,b0,b2,b4 mean+std": (both("stem", "block0", "block2", "block4"), True),
        "deep: b7,b10,b15,head mean+std": (both("block7", "block10", "block15", "head"), True),
        "stage ends: stem,b0,b2,b4,b7,b10,b14,b15,head": (
            both("stem", "block0", "block2", "block4", "block7", "block10", "block14", "block15",
                 "head"),
            True,
        ),
        "stage ends without head": (
            both("stem", "block0", "block2", "block4", "block7", "block10", "block14", "block15"),
            True,
        ),
        "stem,b0,b2,b4,b7,b12,b15": (
            both("stem", "block0", "block2", "block4", "block7", "block12", "block15"), True
        ),
        "stem,b0,b2,b7,b12": (both("stem", "block0", "block2", "block7", "block12"), True),
        "stem,b0,b2,b4,b7 (no deep)": (both("stem", "block0", "block2", "block4", "block7"), True),
        "stem,b2,b4,b10 mean+std (no head)": (both("stem", "block2", "block4", "block10"), True),
        "stem,b4,b10,head mean+std": (both("stem", "block4", "block10", "head"), True),
    }  # fmt: skip
    for tap in TAP_NAMES:
        out[f"single {tap} mean+std"] = (both(tap), True)
    return out


def well_lit_photos() -> list[tuple[str, Callable[[], Tensor]]]:
    """(name, loader) of the well-lit photos available on this machine."""
    import matplotlib.cbook
    import skimage.data

    def from_array(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)

    out: list[tuple[str, Callable[[], Tensor]]] = [
        (f"skimage.{n}", lambda n=n: from_array(getattr(skimage.data, n)()))
        for n in ("astronaut", "coffee", "chelsea", "rocket")
    ]
    hopper = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    out.append(("matplotlib.grace_hopper", lambda: read_image(hopper)))
    for name in OPENCV_PHOTOS:
        if (OPENCV_DATA / name).is_file():
            out.append((f"opencv.{name}", lambda p=OPENCV_DATA / name: read_image(p)))
    if LIBJXL_500.is_dir():
        for p in sorted(LIBJXL_500.glob("*_srgb8.png")):
            out.append((f"libjxl.{p.name}", lambda p=p: read_image(p)))
    return out


def crop(image: Tensor) -> Tensor:
    return center_crop_resize(image[None], SIZE)[0]


def structural(x: Tensor, seed: int) -> Tensor:
    """Blur (sigma 1.5 px) plus Gaussian noise (0.02): a content change at equal exposure."""
    from torchvision.transforms.v2.functional import gaussian_blur

    g = torch.Generator().manual_seed(seed)
    noisy = gaussian_blur(x, kernel_size=[9, 9], sigma=[1.5, 1.5]) + 0.02 * torch.randn(
        x.shape, generator=g
    )
    return noisy.clamp(0, 1)


class Measured:
    """Per-photo channel statistics of every tap for a list of variants, and identity MSEs."""

    def __init__(self, encoder: EfficientNetLite0Encoder) -> None:
        self.encoder = encoder

    @torch.inference_mode()
    def run(self, variants: Sequence[Tensor]) -> tuple[dict, dict]:
        x = torch.stack(list(variants))
        maps = self.encoder.taps(self.encoder.preprocess(x, "squash"), TAP_NAMES)
        stats = {}
        for tap, m in maps.items():
            var, mean = torch.var_mean(m, dim=(2, 3), correction=0)
            stats[(tap, "mean")] = mean.double()
            stats[(tap, "std")] = (var + 1e-6).sqrt().double()
        return stats, maps


def embed(stats: dict, config: Config, normalise_parts: bool) -> Tensor:
    parts = [stats[p] for p in config]
    if normalise_parts:
        parts = [F.normalize(p, dim=-1) for p in parts]
    return F.normalize(torch.cat(parts, dim=-1), dim=-1)


def residual(backlit: Tensor, well_lit: Tensor) -> Tensor:
    v_b = F.normalize(backlit.mean(0), dim=0)
    v_w = F.normalize(well_lit.mean(0), dim=0)
    return F.normalize(v_w - v_b, dim=0)


def spearman_rows(proj: np.ndarray, levels: Sequence[float]) -> float:
    """Mean over rows of the Spearman correlation between a row and ``levels``."""
    rhos = [spearmanr(row, levels).statistic for row in proj]
    return float(np.nanmean(rhos))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not SHARED_DATA.is_dir():
        raise SystemExit(f"needs the photos in {SHARED_DATA}")

    encoder = EfficientNetLite0Encoder().eval()
    measure = Measured(encoder)
    dicm = list_image_files(SHARED_DATA / "dicm")
    backlit_files, held_files = dicm[0::2], dicm[1::2] + list_image_files(SHARED_DATA / "lime")

    backlit_stats, dim_stats, wl_stats = [], [], []
    exp_mse: dict[str, list[float]] = {t: [] for t in TAP_NAMES}
    struct_mse: dict[str, list[float]] = {t: [] for t in TAP_NAMES}

    def identity_terms(maps: dict, base: int, exp: int, struct: int) -> None:
        for tap, m in maps.items():
            exp_mse[tap].append(float((m[exp] - m[base]).pow(2).mean()))
            struct_mse[tap].append(float((m[struct] - m[base]).pow(2).mean()))

    for path in backlit_files:
        backlit_stats.append(measure.run([crop(read_image(path))])[0])
    for i, path in enumerate(held_files):
        x = crop(read_image(path))
        variants = [x.pow(g) for g in BRIGHTEN_GAMMAS] + [(x * a).clamp(0, 1) for a in GAINS[1:]]
        variants.append(structural(x, i))
        stats, maps = measure.run(variants)
        dim_stats.append(stats)
        identity_terms(maps, 0, 1, len(variants) - 1)
    wl = well_lit_photos()
    for i, (_, load) in enumerate(wl):
        x = crop(load())
        variants = [x.pow(g) for g in DARKEN_GAMMAS] + [x.pow(0.8), structural(x, 1000 + i)]
        stats, maps = measure.run(variants)
        wl_stats.append(stats)
        identity_terms(maps, len(DARKEN_GAMMAS) - 1, len(variants) - 2, len(variants) - 1)

    n_b, n_d, n_w = len(backlit_stats), len(dim_stats), len(wl_stats)
    print(f"backlit (residual): {n_b} DICM photos; held-out dim: {n_d} (DICM odd + LIME); "
          f"well-lit: {n_w} ({', '.join(n for n, _ in wl)})\n")  # fmt: skip

    print(f"{'candidate embedding':50s} {'dim':>5s} {'rho_dim':>8s} {'rho_wl':>7s} {'d':>6s}")
    rows = []
    n_gamma = len(BRIGHTEN_GAMMAS)
    for name, (config, norm_parts) in candidates().items():
        eb = torch.stack([embed(s, config, norm_parts)[0] for s in backlit_stats])
        ed = torch.stack([embed(s, config, norm_parts) for s in dim_stats])  # (n, V, D)
        ew = torch.stack([embed(s, config, norm_parts) for s in wl_stats])
        wl_orig = ew[:, len(DARKEN_GAMMAS) - 1]
        r = residual(eb, wl_orig)
        proj = (ed @ r).numpy()
        gamma_series = proj[:, :n_gamma]
        gain_series = np.concatenate([proj[:, :1], proj[:, n_gamma : n_gamma + len(GAINS) - 1]], 1)
        rho_dim = 0.5 * (spearman_rows(gamma_series, [-g for g in BRIGHTEN_GAMMAS])
                         + spearman_rows(gain_series, GAINS))  # fmt: skip
        d = float((proj[:, n_gamma - 1] - proj[:, 0]).mean() / proj[:, 0].std())
        loo = []
        for k in range(n_w):
            keep = [j for j in range(n_w) if j != k]
            r_k = residual(eb, wl_orig[keep])
            loo.append((ew[k, : len(DARKEN_GAMMAS)] @ r_k).numpy())
        rho_wl = spearman_rows(np.stack(loo), [-g for g in DARKEN_GAMMAS])
        rows.append((name, eb.shape[1], rho_dim, rho_wl, d))
        print(f"{name:50s} {eb.shape[1]:5d} {rho_dim:8.3f} {rho_wl:7.3f} {d:6.2f}")

    print("\nidentity features per depth (median over", n_d + n_w, "photos)")
    print(f"{'tap':8s} {'size':>5s} {'mse_exp':>10s} {'mse_struct':>10s} {'ratio':>6s}")
    sizes = {}
    with torch.inference_mode():
        probe = encoder.taps(torch.zeros(1, 3, SIZE, SIZE), TAP_NAMES)
    best: dict[int, tuple[float, str]] = {}
    for tap in TAP_NAMES:
        e, s = float(np.median(exp_mse[tap])), float(np.median(struct_mse[tap]))
        sizes[tap] = probe[tap].shape[-1]
        ratio = s / e
        best[sizes[tap]] = max(best.get(sizes[tap], (-1.0, "")), (ratio, tap))
        print(f"{tap:8s} {sizes[tap]:5d} {e:10.4g} {s:10.4g} {ratio:6.2f}")
    chosen = [best[k][1] for k in sorted(best, reverse=True)]
    scales = [float(np.median(exp_mse[t])) for t in chosen]
    print("\nidentity layers (best ratio per resolution):", chosen)
    print("their feature_scales:", ", ".join(f"{s:.4g}" for s in scales))
    findings_scales = [float(np.median(exp_mse[t])) for t in ("stem", "block2", "block4",
                                                              "block10", "head")]  # fmt: skip
    print("feature_scales of stem,b2,b4,b10,head:", ", ".join(f"{s:.4g}" for s in findings_scales))
    print("os.cpu_count:", os.cpu_count(), "threads:", torch.get_num_threads())


if __name__ == "__main__":
    main()
