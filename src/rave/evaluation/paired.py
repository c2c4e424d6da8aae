"""Full-reference metrics (PSNR, SSIM) under the reference code's protocol and the standard one.

Images are numpy arrays ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1] (any float
dtype; values outside [0, 1] are refused, not clipped), uint8 or uint16 (divided by 257 for
the 8-bit reference protocol). The two protocols differ on purpose (see docs/method.md,
"Evaluation"):

* **reference** (what the RAVE / CLIP-LIT evaluation scripts compute): both images are
  quantised to 8 bits, put in BGR order (as ``cv2.imread`` returns them) and converted with
  ``cv2.COLOR_RGB2GRAY`` -- so the 0.299 weight lands on blue and 0.114 on red. PSNR is
  ``cv2.PSNR`` (data range 255); SSIM is scikit-image's default SSIM (7x7 uniform window) on
  those grey images with ``data_range = enhanced.max() - enhanced.min()``.
* **standard**: PSNR on RGB (data range 1) and on the BT.601 luma Y of ``rgb2ycbcr``
  (16..235, data range 255); SSIM with the Gaussian window of Wang et al. (sigma 1.5,
  population covariances), on RGB (averaged over channels) and on Y.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "luma_y",
    "psnr",
    "psnr_reference",
    "psnr_y",
    "psnr_y_batch",
    "reference_grey",
    "ssim",
    "ssim_reference",
    "ssim_y",
    "to_uint8",
]

logger = logging.getLogger(__name__)

# Pixels per row strip of an SSIM: scikit-image holds about a dozen float64 copies of what
# it is given (local means, variances, the map), 1.9 GB for a 12 MP pair at once. PSNR and
# the float64 views SSIM works on are made strip by strip too, so that memory stays bounded
# by a strip rather than growing with the photo (a 12 MP pair held 0.9 GB in PSNR alone).
_SSIM_STRIP_PIXELS = 1 << 20


def _structural_similarity(
    x: np.ndarray,
    y: np.ndarray,
    *,
    strip_rows: int | None = None,
    view: Callable[[np.ndarray], np.ndarray] | None = None,
    **options: Any,
) -> float:
    """scikit-image's ``structural_similarity(x, y, **options)``, computed in row strips.

    Its mean SSIM is the mean of a per-pixel map over the image less a border of half a
    window, and each map value depends only on the pixels within half a window: strips
    that overlap by that much give the same map, so the same mean (to float64 rounding),
    while memory stays bounded by a strip of about ``_SSIM_STRIP_PIXELS`` pixels instead
    of growing with the photo. Only the options used here are understood (the window of
    ``gaussian_weights`` and ``sigma``, or the default 7x7 one).

    ``view`` maps rows of ``x`` and ``y`` to what is compared (float64, grey or RGB), one
    strip at a time; by default the rows themselves.
    """
    from skimage.metrics import structural_similarity

    if options.get("gaussian_weights"):
        sigma = float(options.get("sigma", 1.5))
        window = 2 * int(3.5 * sigma + 0.5) + 1  # scikit-image's truncate of 3.5 sigmas
    else:
        window = 7
    half = (window - 1) // 2
    height, width = x.shape[:2]
    if min(height, width) < window:
        # scikit-image's own message asks for a win_size argument no caller here can pass.
        raise ValueError(
            f"SSIM needs images of at least {window}x{window} pixels (its window), "
            f"got {width}x{height}"
        )
    rows = strip_rows or max(4 * window, _SSIM_STRIP_PIXELS // max(width, 1))
    view = view or (lambda rows_of_image: rows_of_image)
    if height - 2 * half <= rows or width < window:
        return float(cast(float, structural_similarity(view(x), view(y), **options)))
    total, count = 0.0, 0
    for top in range(half, height - half, rows):
        bottom = min(top + rows, height - half)
        first, last = top - half, bottom + half  # the rows this strip's map values read
        # scikit-image is unannotated: pyright cannot tell full=True's pair from a float
        full: Any = structural_similarity(
            view(x[first:last]), view(y[first:last]), full=True, **options
        )
        ssim_map = cast(np.ndarray, full[1])
        inner = ssim_map[top - first : bottom - first, half : width - half]
        total += float(inner.sum(dtype=np.float64))
        count += inner.size
    return total / count


def _check_unit_range(image: np.ndarray) -> None:
    """Refuse float samples outside [0, 1] (or NaN): a [0, 255] float image would otherwise
    score silently on the wrong scale (PSNR off by 48 dB, SSIM's constants meaningless)."""
    if image.size and not (np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1):
        low, high = float(np.nanmin(image)), float(np.nanmax(image))
        raise ValueError(
            f"expected float samples in [0, 1], got values from {low:g} to {high:g}"
            + (" and NaN or infinity" if not np.isfinite(image).all() else "")
            + "; divide 8-bit values by 255 (or pass uint8)"
        )


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Image -> uint8 by rounding: float in [0, 1] times 255, uint16 divided by 257.

    uint8 input is returned unchanged.

    Raises:
        TypeError: another dtype.
        ValueError: float samples outside [0, 1] or not finite.
    """
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"expected a float image in [0, 1], uint8 or uint16, got dtype {image.dtype}"
        )
    _check_unit_range(image)
    return np.round(image * 255.0).astype(np.uint8)


def _checked(image: np.ndarray) -> np.ndarray:
    """``image`` itself, once its dtype and (for floats) its range are checked.

    Raises:
        TypeError: not float, uint8 or uint16.
        ValueError: float samples outside [0, 1] or not finite.
    """
    if image.dtype in (np.uint8, np.uint16):
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"expected a float image in [0, 1], uint8 or uint16, got dtype {image.dtype}"
        )
    _check_unit_range(image)
    return image


def _float64(image: np.ndarray) -> np.ndarray:
    """A checked image (see :func:`_checked`) as float64 in [0, 1]: uint8 / 255, uint16 / 65535."""
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float64) / 65535.0
    return image.astype(np.float64)


def _as_float(image: np.ndarray) -> np.ndarray:
    """Image -> float64 in [0, 1] (uint8 / 255, uint16 / 65535; floats checked)."""
    return _float64(_checked(image))


def _rgb64(rows: np.ndarray) -> np.ndarray:
    """Rows of a checked image as ``(h, W, 3)`` float64 RGB in [0, 1]."""
    return _as_rgb(_float64(rows))


def _mean_squared_difference(
    pred: np.ndarray, target: np.ndarray, view: Callable[[np.ndarray], np.ndarray]
) -> float:
    """Mean of ``(view(pred) - view(target)) ** 2``, computed strip by strip."""
    height, width = pred.shape[:2]
    rows = max(1, _SSIM_STRIP_PIXELS // max(width, 1))
    total, count = 0.0, 0
    for top in range(0, height, rows):
        difference = view(pred[top : top + rows]) - view(target[top : top + rows])
        total += float(np.sum(difference * difference))
        count += difference.size
    if count == 0:
        raise ValueError("empty image (no pixels)")
    return total / count


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"image sizes differ: prediction {pred.shape[1]}x{pred.shape[0]}, "
            f"reference {target.shape[1]}x{target.shape[0]}"
        )


def reference_grey(image: np.ndarray) -> np.ndarray:
    """The reference code's grey image: ``cv2.cvtColor(bgr_uint8, cv2.COLOR_RGB2GRAY)``.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1] or uint8.

    Returns:
        ``(H, W)`` uint8, ``0.299 B + 0.587 G + 0.114 R`` (OpenCV's fixed-point rounding).
    """
    import cv2

    bgr = np.ascontiguousarray(_as_rgb(to_uint8(image))[..., ::-1])
    return cv2.cvtColor(bgr, cv2.COLOR_RGB2GRAY)


def psnr_reference(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB as the reference evaluation computes it (8-bit swapped-channel grey, cv2).

    Identical images give OpenCV's cap (about 361 dB, MSE floored at machine epsilon).
    """
    import cv2

    _check_pair(pred, target)
    return float(cv2.PSNR(reference_grey(target), reference_grey(pred), 255.0))


def ssim_reference(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM as the reference evaluation computes it; ``data_range`` from the enhanced image.

    Returns NaN (and logs a warning) when the enhanced grey image is constant, where the
    reference formula divides by zero.
    """
    _check_pair(pred, target)
    pred_grey, target_grey = reference_grey(pred), reference_grey(target)
    data_range = float(pred_grey.max()) - float(pred_grey.min())
    if data_range == 0:
        logger.warning("reference SSIM undefined: the enhanced image is constant")
        return math.nan
    return _structural_similarity(target_grey, pred_grey, data_range=data_range)


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Standard PSNR in dB over all RGB values, data range 1; ``inf`` for identical images."""
    pred, target = _checked(pred), _checked(target)
    _check_pair(pred, target)
    mse = _mean_squared_difference(pred, target, _rgb64)
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


# ITU-R BT.601 studio-range luma of RGB in [0, 1]: Y = (16 + 65.481 R + 128.553 G + 24.966 B)
# / 255, in [16/255, 235/255]. The one Y channel of the project: scikit-image's (and MATLAB's)
# ``rgb2ycbcr`` Y, and pyiqa's ``psnr(test_y_channel=True, color_space="ycbcr")`` Y, which the
# authors' training code uses for its reconstruction PSNR (so their 8 dB means the same here).
BT601_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
BT601_Y_OFFSET = 16.0 / 255.0


def luma_y(images: Tensor) -> Tensor:
    """BT.601 studio-range luma: ``(..., 3, H, W)`` RGB in [0, 1] -> ``(..., H, W)``.

    The result lies in [16/255, 235/255].
    """
    weights = torch.tensor(BT601_Y_WEIGHTS, dtype=images.dtype, device=images.device)
    return torch.einsum("...chw,c->...hw", images, weights) + BT601_Y_OFFSET


def psnr_y_batch(images: Tensor, references: Tensor, eps: float = 0.0) -> Tensor:
    """Per-image PSNR in dB of :func:`luma_y`, data range 1 (so 219/255 of the RGB range).

    Args:
        images: ``(B, 3, H, W)`` RGB in [0, 1].
        references: ``(B, 3, H, W)`` RGB in [0, 1].
        eps: added to each MSE: 0 gives ``inf`` for identical images; pyiqa (and so the
            authors' training code) adds 1e-8, which caps the PSNR at 80 dB.

    Returns:
        ``(B,)`` tensor in dB, in the images' dtype.
    """
    if images.shape != references.shape or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected two (B, 3, H, W) batches, got {tuple(images.shape)} and "
            f"{tuple(references.shape)}"
        )
    mse = (luma_y(images) - luma_y(references)).pow(2).flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse + eps)


def _unit_luma_y(rows: np.ndarray) -> np.ndarray:
    """``(h, W)`` float64 BT.601 luma in [16/255, 235/255] of rows of a checked image."""
    chw = torch.from_numpy(np.ascontiguousarray(_rgb64(rows))).permute(2, 0, 1)
    return luma_y(chw).numpy()


def _luma_y(rows: np.ndarray) -> np.ndarray:
    """``(h, W)`` float64 BT.601 luma in 8-bit units (16..235) of rows of a checked image."""
    return _unit_luma_y(rows) * 255.0


def psnr_y(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of the BT.601 luma (``rgb2ycbcr`` Y, 16..235), data range 255.

    The same number as :func:`psnr_y_batch` (which training uses) on float64 data.
    """
    pred, target = _checked(pred), _checked(target)
    _check_pair(pred, target)
    # psnr_y_batch's definition, its mean taken strip by strip: -10 log10(MSE of luma_y)
    mse = _mean_squared_difference(pred, target, _unit_luma_y)
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def _ssim_wang(
    pred: np.ndarray,
    target: np.ndarray,
    data_range: float,
    channel_axis: int | None,
    view: Callable[[np.ndarray], np.ndarray],
) -> float:
    return _structural_similarity(
        target,
        pred,
        view=view,
        data_range=data_range,
        channel_axis=channel_axis,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Standard SSIM on RGB (Gaussian window, sigma 1.5, data range 1), mean over channels."""
    pred, target = _checked(pred), _checked(target)
    _check_pair(pred, target)
    return _ssim_wang(pred, target, 1.0, channel_axis=2, view=_rgb64)


def ssim_y(pred: np.ndarray, target: np.ndarray) -> float:
    """Standard SSIM on the BT.601 luma Y (16..235), data range 255."""
    pred, target = _checked(pred), _checked(target)
    _check_pair(pred, target)
    return _ssim_wang(pred, target, 255.0, channel_axis=None, view=_luma_y)
