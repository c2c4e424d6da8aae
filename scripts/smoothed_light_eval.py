"""What smoothing a model's light map does to its outputs, before training anything.

Evaluates, on a folder of photos and with evaluate_default.py's figures (lift, clipping,
colour, NIQE, BRISQUE), a model's light map ``L`` applied as it is and filtered at full
resolution: a Gaussian blur of ``log L`` (sigma in pixels, not edge-aware), the target
of the ``smooth-light`` training stage (:func:`rave.training.methods.smooth_light.
smoothed_log_light`: the guided filter by the log of the largest channel, with no
highlights beyond the teacher's), and the light-map refinement a model can record
(:class:`rave.network.LightRefinement`: its highlight guard alone, then filter and guard).
The model's own refinement, if its file records one, is not applied to ``L`` first. The
reference ``rave-unpaired`` comes first, as in evaluate_default.py::

    python scripts/smoothed_light_eval.py runs/RUN/snapshots/iter_000200.pt \\
        --images runs/data/v3/val_backlit --out runs/exp/smoothed
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_default import (  # sibling script, not a package
    Model,
    evaluate,
    load_model,
    no_reference_scorers,
    photos_or_notes,
    reference_model_source,
)


def filtered_model(
    source: str, label: str, smooth: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> Model:
    """``source``'s light map, ``smooth(log L, image)``, applied as ``clamp(I / L, 0, 1)``."""
    from rave.api import light_map_array
    from rave.training.methods.smooth_light import LIGHT_FLOOR
    from rave.zoo import load_enhancer

    net = load_enhancer(source)
    net.light_refinement = None  # the network's own light map is what gets filtered here

    def run(image: np.ndarray) -> np.ndarray:
        log_light = np.log(np.maximum(light_map_array(net, image), LIGHT_FLOOR))
        light = np.exp(smooth(log_light.astype(np.float64), image))
        return np.clip(image / light[..., None], 0, 1).astype(np.float32)

    return Model(label, run)


def gaussian(sigma: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda log_light, _image: gaussian_filter(log_light, sigma, mode="reflect")


def stage_target(
    radius: int, eps: float, knee: float
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    from rave.training.methods.smooth_light import smoothed_log_light

    def smooth(log_light: np.ndarray, image: np.ndarray) -> np.ndarray:
        light = torch.from_numpy(np.exp(log_light)).float()[None, None]
        pixels = torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None]
        target = smoothed_log_light(light, pixels, radius=radius, eps=eps, knee=knee)
        return target[0, 0].double().numpy()

    return smooth


def refinement(
    radius: int, eps: float, knee: float
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A model's light-map refinement (:class:`rave.network.LightRefinement`) of ``log L``."""
    from rave.network import LightRefinement

    refine = LightRefinement(radius, eps, knee)

    def smooth(log_light: np.ndarray, image: np.ndarray) -> np.ndarray:
        light = torch.from_numpy(np.exp(log_light)).float()[None, None]
        pixels = torch.from_numpy(image.transpose(2, 0, 1).copy()).float()[None]
        return torch.log(refine(light, pixels))[0, 0].double().numpy()

    return smooth


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="zoo name or checkpoint whose light map is filtered")
    parser.add_argument("--images", type=Path, required=True, help="folder of photos")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--sigma", type=float, action="append", default=None,
        help="Gaussian blur of log L, pixels (repeatable; default 2, 4)",
    )  # fmt: skip
    parser.add_argument("--radius", type=int, default=8, help="guided filter radius, pixels")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--knee", type=float, default=0.9)
    parser.add_argument("--max-pixels", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(None if argv is None else list(argv))
    torch.set_num_threads(args.threads)

    photos = photos_or_notes(None, args.images)
    if not photos:
        print(f"error: no photos in {args.images}", file=sys.stderr)
        return 1
    models = [
        Model("identity", lambda image: image),
        load_model(reference_model_source(), "rave-unpaired"),
    ]
    models.append(load_model(args.model, "model"))
    for sigma in args.sigma or [2.0, 4.0]:
        models.append(filtered_model(args.model, f"model, gauss {sigma:g}", gaussian(sigma)))
    label = f"model, guided r {args.radius} eps {args.eps:g} knee {args.knee:g}"
    models.append(filtered_model(args.model, label, stage_target(args.radius, args.eps, args.knee)))
    models.append(
        filtered_model(
            args.model, f"model, guard knee {args.knee:g}", refinement(0, 1.0, args.knee)
        )
    )
    label = f"model, refinement r {args.radius} eps {args.eps:g} knee {args.knee:g}"
    models.append(filtered_model(args.model, label, refinement(args.radius, args.eps, args.knee)))
    scorers, note = no_reference_scorers()
    if note:
        print(note, file=sys.stderr)
    _, table = evaluate(photos, models, args.out, max_pixels=args.max_pixels, scorers=scorers,
                        log=lambda _line: None)  # fmt: skip
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
