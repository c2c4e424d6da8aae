"""BRISQUE (Mittal et al., IEEE TIP 2012), following the authors' MATLAB release, offline.

Written here rather than imported: as of this writing no package computes it offline with
this project's stack. The PyPI ``brisque`` 0.2.0 package fails on NumPy 2 (``TypeError``
converting its features) and uses its own re-trained model; ``piq`` and ``pyiqa`` download
their SVR weights at run time; OpenCV contrib's ``cv2.quality.QualityBRISQUE`` needs model
files that its wheels do not contain, and ``opencv-contrib-python-headless`` would replace
the ``opencv-python-headless`` this project depends on. The published model (LIVE's
``allmodel`` support-vector regressor and ``allrange`` feature scaling) is small and ships
with rave (``data/brisque_live_model.npz``, LIVE licence in ``data/LICENSE-LIVE.txt``).

The steps, as in the MATLAB ``brisquescore`` / ``brisque_feature``: grey image (MATLAB
``rgb2gray`` on 8-bit data, rounded); at two scales (full, then MATLAB ``imresize(im, 0.5)``)
the MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window (sigma 7/6,
``filter2``: zero borders); 18 features per scale: a generalised Gaussian fit of the
coefficients (shape, variance) and asymmetric fits of their products with four neighbours
(shape, mean, left and right variance); each feature scaled to [-1, 1] with ``allrange``;
score = RBF support-vector regression with ``allmodel``.
"""

from __future__ import annotations

import functools
import math
import warnings
from importlib import resources

import numpy as np

from rave.evaluation.niqe import (
    _GAMMA_GRID,
    _gaussian_window,
    _r_gamma,  # the AGGD moment ratio over the shape grid, NIQE's and BRISQUE's alike
    matlab_imresize_half,
    matlab_rgb2gray,
)

__all__ = ["brisque", "brisque_features"]

MIN_SIZE = 16


@functools.lru_cache(maxsize=1)
def _ggd_ratio() -> np.ndarray:
    from scipy.special import gamma

    g = _GAMMA_GRID
    return gamma(1 / g) * gamma(3 / g) / gamma(2 / g) ** 2


def _ggd(values: np.ndarray) -> tuple[float, float]:
    """Symmetric generalised Gaussian fit: (shape, variance)."""
    variance = float(np.mean(values**2))
    rho = variance / float(np.mean(np.abs(values))) ** 2
    return float(_GAMMA_GRID[np.argmin(np.abs(rho - _ggd_ratio()))]), variance


def _aggd(values: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit: (shape, left std, right std), MATLAB style."""
    left = math.sqrt(np.mean(values[values < 0] ** 2))
    right = math.sqrt(np.mean(values[values > 0] ** 2))
    gamma_hat = left / right
    r_hat = float(np.mean(np.abs(values))) ** 2 / float(np.mean(values**2))
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    return float(_GAMMA_GRID[np.argmin((_r_gamma() - r_hat_norm) ** 2)]), left, right


def brisque_features(grey: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of a grey image ``(H, W)`` with values in [0, 255]."""
    from scipy.ndimage import correlate
    from scipy.special import gamma

    window = _gaussian_window()
    image = grey.astype(np.float64)
    features: list[float] = []
    for _ in range(2):
        mu = correlate(image, window, mode="constant")
        sigma = np.sqrt(np.abs(correlate(image * image, window, mode="constant") - mu * mu))
        mscn = (image - mu) / (sigma + 1)
        features.extend(_ggd(mscn.ravel()))
        for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            product = (mscn * np.roll(mscn, shift, axis=(0, 1))).ravel()
            alpha, left, right = _aggd(product)
            scale = math.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
            mean = (right - left) * gamma(2 / alpha) / gamma(1 / alpha) * scale
            features.extend([alpha, mean, left**2, right**2])
        image = matlab_imresize_half(image)
    return np.asarray(features)


@functools.lru_cache(maxsize=1)
def _model() -> dict[str, np.ndarray]:
    data = resources.files("rave.evaluation").joinpath("data/brisque_live_model.npz")
    with data.open("rb") as stream, np.load(stream) as arrays:
        return {name: arrays[name] for name in arrays.files}


def brisque(image: np.ndarray) -> float:
    """BRISQUE score (roughly 0 to 100, lower is better) as the authors' MATLAB code gives it.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1] or uint8, at least
            16x16 pixels. Float input is quantised to 8 bits first, as the model was
            trained on 8-bit images.

    Raises:
        ValueError: the image is too small or flat (no positive or negative coefficients),
            or has float samples outside [0, 1].
    """
    grey = matlab_rgb2gray(image)
    if min(grey.shape) < MIN_SIZE:
        raise ValueError(
            f"BRISQUE needs at least {MIN_SIZE}x{MIN_SIZE} pixels, got {grey.shape[1]}x"
            f"{grey.shape[0]} (width x height)"
        )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # empty means of a flat image -> NaN
        try:
            features = brisque_features(grey)
        except ZeroDivisionError:  # all-zero coefficients (a black frame): Python floats
            features = np.array([math.nan])
    if not np.all(np.isfinite(features)):
        raise ValueError("BRISQUE undefined for a flat image")
    model = _model()
    lower, upper = model["scale_range"]
    low, high = model["feature_min"], model["feature_max"]
    scaled = lower + (upper - lower) * (features - low) / (high - low)  # libsvm's svm-scale
    squared = np.sum((model["support_vectors"] - scaled) ** 2, axis=1)
    kernel = np.exp(-float(model["gamma"]) * squared)
    return float(model["dual_coef"] @ kernel - float(model["rho"]))
