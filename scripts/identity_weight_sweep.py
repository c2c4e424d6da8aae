"""How the guided objective trades guidance against identity as a photo gets brighter.

For gamma-brightened copies (``x ** g``) of augmented training batches, prints
``1920 L_res``, ``L_id`` and the total ``1920 L_res + w L_id`` for several identity
weights ``w``: where the total is lowest is how far training is pushed. This is how the
built-in model's identity weight was chosen (docs/model_card.md).

    python scripts/identity_weight_sweep.py runs/default_model/residual.pt \\
        --backlit runs/data/default/train_backlit
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from rave.encoders import create_encoder
from rave.guidance.residual import load_residual
from rave.losses import residual_loss
from rave.losses.guidance import IDENTITY_LAYER_WEIGHTS, identity_loss
from rave.training.data import AugmentParams, FolderImages, TrainingImages, batch_keys, list_images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("residual", type=Path, help="residual file (rave residual / rave train)")
    parser.add_argument("--backlit", type=Path, required=True, help="training backlit folder")
    parser.add_argument("--encoder", default="effnet-lite0")
    parser.add_argument("--size", type=int, default=128, help="training image size")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--first-iteration", type=int, default=100, help="of the run's batches")
    parser.add_argument("--residual-weight", type=float, default=1920.0)
    parser.add_argument("--weights", type=float, nargs="+", default=[5.0, 2.0, 1.0, 0.5])
    parser.add_argument(
        "--gammas", type=float, nargs="+", default=[1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    )
    args = parser.parse_args()

    rv = load_residual(args.residual)
    encoder = create_encoder(args.encoder)
    residual = rv.residual.float()
    images = TrainingImages(FolderImages(list_images(args.backlit), args.size), AugmentParams())
    batches = [
        torch.stack([images[key] for key in batch_keys(len(images), args.batch, 0, it)])
        for it in range(args.first_iteration, args.first_iteration + args.batches)
    ]
    scales = tuple(getattr(encoder, "feature_scales", ()) or ()) or None
    header = "gamma  w_res*L_res    L_id  " + "  ".join(f"total w={w:g}" for w in args.weights)
    print(header)
    with torch.no_grad():
        for gamma in args.gammas:
            l_res = l_id = 0.0
            for batch in batches:
                brighter = batch.clamp(0, 1) ** gamma
                l_res += float(residual_loss(encoder.embed(brighter), residual, rv.threshold))
                l_id += float(
                    identity_loss(
                        encoder.features(brighter),
                        encoder.features(batch),
                        IDENTITY_LAYER_WEIGHTS,
                        scales,
                    )
                )
            l_res = args.residual_weight * l_res / len(batches)
            l_id /= len(batches)
            totals = "  ".join(f"{l_res + w * l_id:11.1f}" for w in args.weights)
            print(f"{gamma:5.2f}  {l_res:11.1f}  {l_id:6.2f}  {totals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
