"""How the guided objective trades guidance against identity as a photo gets brighter.

For gamma-brightened copies (``x ** g``) of augmented training batches, prints
``1920 L_res``, ``L_id`` and the total ``1920 L_res + w L_id`` for several identity
weights ``w``: where the total is lowest is how far training is pushed. This is how the
built-in model's identity weight was chosen (docs/model_card.md).

With ``--highlights`` it answers a second question: does the objective prefer clipped
highlights? For each gamma it compares two outputs with the same shadows: ``kept`` is
``x ** g`` (a tone curve that leaves near-white pixels where they are) and ``clipped`` is
the same image with the pixels whose input is bright pushed to white
(:func:`clip_highlights`). If ``clipped`` scores lower or about the same, nothing in the
objective keeps training from blowing highlights.

    python scripts/identity_weight_sweep.py runs/default_model/residual.pt \\
        --backlit runs/data/default/train_backlit
    python scripts/identity_weight_sweep.py runs/default_model/residual.pt \\
        --backlit runs/data/default/train_backlit --highlights --weights 0.5
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

CLIP_LEVEL = 0.99  # as scripts/evaluate_default.py: a pixel is clipped if a channel >= this


def clip_highlights(
    brighter: torch.Tensor, inputs: torch.Tensor, low: float, high: float
) -> torch.Tensor:
    """``brighter`` with the pixels whose input is bright blended to white.

    The blend weight is a smoothstep of the input's largest channel from ``low`` (0, the
    pixel is unchanged) to ``high`` (1, the pixel is white), so shadows and mid-tones stay
    exactly as in ``brighter`` and no hard edge is introduced.

    Args:
        brighter: ``(B, 3, H, W)`` in [0, 1].
        inputs: ``(B, 3, H, W)`` in [0, 1], the images ``brighter`` was made from.
        low: input level in (0, 1) where the push to white starts.
        high: input level in (low, 1] where pixels become white.

    Returns:
        ``(B, 3, H, W)`` in [0, 1].
    """
    t = ((inputs.amax(dim=1, keepdim=True) - low) / (high - low)).clamp(0, 1)
    weight = t * t * (3 - 2 * t)
    return brighter + (1 - brighter) * weight


def clipped_share(images: torch.Tensor) -> float:
    """Share of pixels of ``(B, 3, H, W)`` images whose largest channel is >= 0.99."""
    return float((images.amax(dim=1) >= CLIP_LEVEL).float().mean())


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
    parser.add_argument(
        "--highlights",
        action="store_true",
        help="compare highlights kept vs clipped (pushed to white) at each gamma",
    )
    parser.add_argument(
        "--clip-from",
        type=float,
        nargs=2,
        default=[0.6, 0.85],
        metavar=("LOW", "HIGH"),
        help="input levels where the push to white starts and ends (--highlights)",
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

    def objective(outputs: list[torch.Tensor]) -> tuple[float, float, float]:
        """Mean ``w_res * L_res``, ``L_id`` and clipped share over the batches."""
        l_res = l_id = clipped = 0.0
        for out, batch in zip(outputs, batches, strict=True):
            l_res += float(residual_loss(encoder.embed(out), residual, rv.threshold))
            l_id += float(
                identity_loss(
                    encoder.features(out), encoder.features(batch), IDENTITY_LAYER_WEIGHTS, scales
                )
            )
            clipped += clipped_share(out)
        n = len(batches)
        return args.residual_weight * l_res / n, l_id / n, clipped / n

    variants = ("kept", "clipped") if args.highlights else ("",)
    header = "gamma  " + ("variant  clipped  " if args.highlights else "")
    print(header + "w_res*L_res    L_id  " + "  ".join(f"total w={w:g}" for w in args.weights))
    with torch.no_grad():
        for gamma in args.gammas:
            brighter = [batch.clamp(0, 1) ** gamma for batch in batches]
            for variant in variants:
                outputs = brighter
                if variant == "clipped":
                    low, high = args.clip_from
                    outputs = [
                        clip_highlights(out, batch.clamp(0, 1), low, high)
                        for out, batch in zip(brighter, batches, strict=True)
                    ]
                l_res, l_id, clipped = objective(outputs)
                totals = "  ".join(f"{l_res + w * l_id:11.1f}" for w in args.weights)
                label = f"{variant:>7}  {100 * clipped:6.2f}%  " if args.highlights else ""
                print(f"{gamma:5.2f}  {label}{l_res:11.1f}  {l_id:6.2f}  {totals}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
