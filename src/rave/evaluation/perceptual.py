"""LPIPS (AlexNet) through the ``lpips`` package, under both normalisations.

The ``lpips`` package ships its linear calibration layers but takes the AlexNet backbone from
torchvision, which downloads it into the torch hub cache. Nothing may be downloaded at run
time here, so the backbone file is looked for first and a :class:`MetricUnavailableError`
says how to get it when it is missing.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, cast

import numpy as np

__all__ = [
    "ALEXNET_WEIGHTS_FILE",
    "LPIPS_HOWTO",
    "MetricUnavailableError",
    "alexnet_weights_path",
    "load_lpips",
    "lpips",
    "lpips_reference",
]

ALEXNET_WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
"""File name of torchvision's ImageNet AlexNet weights in the torch hub cache."""

LPIPS_HOWTO = (
    "LPIPS not available offline: the AlexNet backbone weights "
    f"({ALEXNET_WEIGHTS_FILE}) are not in the torch hub cache; on a machine with internet run "
    "python -c \"import torchvision; torchvision.models.alexnet(weights='DEFAULT')\" "
    "and copy the file to {path}"
)

# ImageNet statistics used by the reference evaluation instead of LPIPS's own [-1, 1] input.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
REFERENCE_SHORT_SIDE = 1024


class MetricUnavailableError(RuntimeError):
    """A metric that cannot run on this machine; ``str()`` is one line saying how to fix it."""


def alexnet_weights_path() -> Path:
    """Where torchvision looks for (and would download) the AlexNet weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS_FILE


@functools.lru_cache(maxsize=2)
def load_lpips(*, pretrained_backbone: bool = True, device: Any = "cpu") -> Any:
    """The ``lpips.LPIPS(net="alex")`` module in eval mode, on ``device``.

    Args:
        pretrained_backbone: ``True`` loads torchvision's ImageNet AlexNet from the local
            torch hub cache (never downloads); ``False`` keeps a randomly initialised backbone,
            which only tests should use.
        device: where its forward passes run (a ``torch.device`` or its name); images are
            moved there one pair at a time.

    Raises:
        MetricUnavailableError: the ``lpips`` package or the backbone weights are missing.
    """
    try:
        import lpips as lpips_package
    except ImportError as error:
        raise MetricUnavailableError(
            "LPIPS not available: the 'lpips' package is not installed "
            "(pip install 'rave-enhance[eval]')"
        ) from error
    if pretrained_backbone and not alexnet_weights_path().is_file():
        raise MetricUnavailableError(LPIPS_HOWTO.format(path=alexnet_weights_path()))
    import warnings

    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated ``pretrained=`` argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_package.LPIPS(
            net="alex", pretrained=True, pnet_rand=not pretrained_backbone, verbose=False
        )
    return model.eval().to(device)


def _to_tensor(image: np.ndarray) -> Any:
    """``(H, W, 3)`` or ``(H, W)`` float in [0, 1] / uint8 / uint16 -> ``(1, 3, H, W)`` float32."""
    import torch

    from rave.evaluation.paired import _as_float

    image = _as_float(image)  # uint8 / 255, uint16 / 65535, floats checked to be in [0, 1]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]


def _distance(model: Any, pred: Any, target: Any) -> float:
    import torch

    # A network on a GPU scores there; any other callable gets the images as they are.
    weight = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if weight is not None:
        pred, target = pred.to(weight.device), target.to(weight.device)
    with torch.inference_mode():
        return float(model(pred, target, normalize=False).item())


def lpips(pred: np.ndarray, target: np.ndarray, *, model: Any | None = None) -> float:
    """Standard LPIPS (AlexNet, v0.1): images mapped from [0, 1] to [-1, 1], native size.

    Args:
        pred, target: ``(H, W, 3)`` float RGB in [0, 1] or uint8, same size.
        model: an ``lpips.LPIPS`` module; default :func:`load_lpips`.

    Returns:
        Distance >= 0 (0 for identical images); lower is more similar.
    """
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"image sizes differ: {pred.shape[:2]} vs {target.shape[:2]}")
    model = load_lpips() if model is None else model
    return _distance(model, _to_tensor(pred) * 2 - 1, _to_tensor(target) * 2 - 1)


def lpips_reference(pred: np.ndarray, target: np.ndarray, *, model: Any | None = None) -> float:
    """LPIPS as the reference evaluation computes it.

    As the authors' ``compute_metrics.py``: each image, as the 8-bit file it was read from,
    is resized by Pillow (bilinear, through torchvision's ``Resize`` on PIL images) so that
    the short side is 1024 pixels, then scaled to [0, 1] and normalised with ImageNet
    mean/std instead of LPIPS's [-1, 1] (LPIPS then applies its own input scaling on top).
    Resizing the float image with torch instead differs by about 1.5e-5 in LPIPS
    (docs/method.md, "Evaluation").
    """
    from PIL import Image
    from torchvision.transforms.functional import (
        InterpolationMode,
        normalize,
        resize,
        to_tensor,
    )

    from rave.evaluation.paired import to_uint8

    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(f"image sizes differ: {pred.shape[:2]} vs {target.shape[:2]}")
    model = load_lpips() if model is None else model
    tensors = []
    for image in (pred, target):
        rgb = to_uint8(image)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        # torchvision annotates `resize` for tensors only; PIL images (and an int size) are
        # documented and take the Pillow path this metric is defined by.
        pil = resize(
            Image.fromarray(rgb),  # pyright: ignore[reportArgumentType]
            REFERENCE_SHORT_SIDE,  # pyright: ignore[reportArgumentType]
            interpolation=InterpolationMode.BILINEAR,
        )
        pixels = to_tensor(cast(Image.Image, pil))
        tensors.append(normalize(pixels, list(_IMAGENET_MEAN), list(_IMAGENET_STD))[None])
    return _distance(model, tensors[0], tensors[1])
