"""Image quality metrics for enhancement results.

Paired metrics take ``(pred, target)``: numpy ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in
[0, 1] or uint8, of the same size. Two protocols (see ``rave.evaluation.paired``):

* standard: :func:`psnr` (RGB), :func:`psnr_y`, :func:`ssim` (RGB), :func:`ssim_y`,
  :func:`lpips` (AlexNet, input in [-1, 1]);
* reference (the RAVE/CLIP-LIT evaluation code, quirks included): :func:`psnr_reference`,
  :func:`ssim_reference`, :func:`lpips_reference`.

No-reference: :func:`niqe`, :func:`brisque` (published LIVE models, shipped), and the
exposure statistics :func:`exposure_stats`, :func:`shadow_lift`, :func:`luma`.

Example:
    >>> import numpy as np
    >>> from rave import metrics
    >>> a = np.zeros((8, 8, 3)); b = a + 0.1
    >>> round(metrics.psnr(b, a), 6)
    20.0
"""

from __future__ import annotations

from rave.evaluation.brisque import brisque
from rave.evaluation.exposure import ExposureStats, ShadowLift, exposure_stats, luma, shadow_lift
from rave.evaluation.niqe import niqe
from rave.evaluation.paired import (
    psnr,
    psnr_reference,
    psnr_y,
    reference_grey,
    ssim,
    ssim_reference,
    ssim_y,
)
from rave.evaluation.perceptual import (
    MetricUnavailableError,
    load_lpips,
    lpips,
    lpips_reference,
)

__all__ = [
    "ExposureStats",
    "MetricUnavailableError",
    "ShadowLift",
    "brisque",
    "exposure_stats",
    "load_lpips",
    "lpips",
    "lpips_reference",
    "luma",
    "niqe",
    "psnr",
    "psnr_reference",
    "psnr_y",
    "reference_grey",
    "shadow_lift",
    "ssim",
    "ssim_reference",
    "ssim_y",
]
