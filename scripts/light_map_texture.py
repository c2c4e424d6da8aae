"""How much a model's light map follows texture, and how far it lifts, per photo.

The enhanced image is ``I / L``: wherever the light map ``L`` follows fine detail, that
detail is divided out and local contrast flattens. Two figures per photo and model, on
``log L`` (so that they measure ratios of gain, as ``I / L`` shows them):

- ``texture``: standard deviation of ``log L`` minus its Gaussian blur (sigma ``--sigma``
  pixels, 4 by default): the part of the light map finer than a few pixels;
- ``tv``: ``rave.losses.light_map_total_variation`` (mean absolute neighbour difference),
  the quantity the offline recipe's ``light_tv_weight`` penalises in training;
- ``loss``: the share of the photo's own fine-scale contrast that ``I / L`` removes: the
  regression slope of the fine part of ``log L`` on the fine part of the input's log
  luminance (Rec. 709 luma, same blur). 0 for a light map blind to detail, 1 for one
  that divides all of it out (negative: ``I / L`` sharpens);
- ``max gain`` and ``dark gain``: the largest gain ``1 / L`` in the photo and its mean
  over the photo's darkest tenth (by largest channel), what the offline recipe's
  ``gain_limit_weight`` bounds.

All at full resolution (up to ``--max-pixels``).

The baseline ``rave-unpaired`` (CLIP-trained) comes first, as in evaluate_default.py::

    python scripts/light_map_texture.py runs/data/v3/val_backlit --model runs/v16/last.pt
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_default import photos_or_notes, read_rgb, reference_model_source

LIGHT_FLOOR = 1e-3  # as light_map_total_variation's eps: a zero light map is a blown pixel


def _fine_part(values: np.ndarray, sigma: float) -> np.ndarray:
    return values - gaussian_filter(values, sigma, mode="reflect")


def texture_figures(light: np.ndarray, pixels: np.ndarray, sigma: float) -> tuple[float, ...]:
    """``(texture, tv, loss)`` of one ``(H, W)`` light map of the ``(H, W, 3)`` photo
    ``pixels`` in [0, 1] (see the module docstring)."""
    from rave.losses import light_map_total_variation

    fine_light = _fine_part(np.log(np.maximum(light, LIGHT_FLOOR)).astype(np.float64), sigma)
    luma = pixels.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    fine_luma = _fine_part(np.log(np.maximum(luma, LIGHT_FLOOR)), sigma)
    tv = float(light_map_total_variation(torch.from_numpy(light)[None, None], eps=LIGHT_FLOOR))
    loss = float((fine_light * fine_luma).sum() / max((fine_luma**2).sum(), 1e-12))
    return float(np.std(fine_light)), tv, loss


def gain_figures(light: np.ndarray, pixels: np.ndarray) -> tuple[float, float]:
    """``(max gain, dark gain)`` of one ``(H, W)`` light map of the ``(H, W, 3)`` photo
    ``pixels`` in [0, 1] (see the module docstring)."""
    gain = 1.0 / np.maximum(light.astype(np.float64), LIGHT_FLOOR)
    value = pixels.max(axis=2)
    darkest = value <= np.quantile(value, 0.1)  # <=: a photo with a black tenth has ties
    return float(gain.max()), float(gain[darkest].mean())


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="folder of photos")
    parser.add_argument("--model", action="append", default=[], help="zoo name or checkpoint")
    parser.add_argument("--sigma", type=float, default=4.0, help="blur of the smooth part, px")
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(None if argv is None else list(argv))
    torch.set_num_threads(args.threads)

    from rave.api import light_map_array
    from rave.zoo import load_enhancer

    photos = photos_or_notes(None, args.images)
    if not photos:
        print(f"error: no photos in {args.images}", file=sys.stderr)
        return 1
    sources = [reference_model_source(), *args.model]
    nets = {source: load_enhancer(source) for source in sources}
    figures = np.zeros((len(photos), len(sources), 5))
    for i, photo in enumerate(photos):
        pixels = read_rgb(photo, args.max_pixels)
        cells = []
        for j, (source, net) in enumerate(nets.items()):
            light = light_map_array(net, pixels)
            figures[i, j, :3] = texture_figures(light, pixels, args.sigma)
            figures[i, j, 3:] = gain_figures(light, pixels)
            cells.append(f"{Path(source).stem}: " + " / ".join(f"{v:.4f}" for v in figures[i, j]))
        print(f"{photo.name:24s} texture / tv / loss / max gain / dark gain  " + "  ".join(cells))
    for j, source in enumerate(sources):
        texture, tv, loss, max_gain, dark_gain = figures[:, j].mean(axis=0)
        print(
            f"mean over {len(photos)} photos, {source}: texture {texture:.4f}, tv {tv:.4f}, "
            f"contrast loss {loss:.3f}, max gain {max_gain:.2f}, dark gain {dark_gain:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
