"""BRISQUE through OpenCV's contrib ``quality`` module, when it and its model files are present.

Why not a ready package: as of this writing none works offline with this project's stack.
The PyPI ``brisque`` 0.2.0 package fails on NumPy 2 (``TypeError`` converting its
features) and hard-imports ``requests``; ``piq`` and ``pyiqa`` download their SVR weights at
run time; OpenCV's contrib wheels contain ``cv2.quality.QualityBRISQUE`` but not its two
model files (``brisque_model_live.yml``, ``brisque_range_live.yml``, from opencv_contrib's
``modules/quality/samples``), and ``opencv-contrib-python-headless`` replaces the
``opencv-python-headless`` this project depends on. So BRISQUE is computed only when the
user has the contrib build and points ``RAVE_BRISQUE_MODEL_DIR`` at the two files;
otherwise :func:`brisque_unavailable_reason` says what is missing and the evaluator reports
NIQE alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rave.evaluation.perceptual import MetricUnavailableError

__all__ = ["MODEL_DIR_ENV", "brisque", "brisque_unavailable_reason"]

MODEL_DIR_ENV = "RAVE_BRISQUE_MODEL_DIR"
_MODEL_FILES = ("brisque_model_live.yml", "brisque_range_live.yml")


def _model_files() -> tuple[Path, Path] | None:
    folder = os.environ.get(MODEL_DIR_ENV)
    if not folder:
        return None
    model, value_range = (Path(folder) / name for name in _MODEL_FILES)
    return (model, value_range) if model.is_file() and value_range.is_file() else None


def brisque_unavailable_reason() -> str | None:
    """``None`` when :func:`brisque` can run, else one line saying what is missing."""
    import cv2

    if not hasattr(cv2, "quality"):
        return (
            "BRISQUE not available: needs OpenCV's contrib build (cv2.quality, package "
            "opencv-contrib-python-headless) and its model files; see rave.evaluation.brisque"
        )
    if _model_files() is None:
        return (
            f"BRISQUE not available: set {MODEL_DIR_ENV} to a folder holding "
            f"{' and '.join(_MODEL_FILES)} (opencv_contrib modules/quality/samples)"
        )
    return None


def brisque(image: np.ndarray) -> float:
    """BRISQUE score (about 0 to 100, lower is better) of one image.

    Args:
        image: ``(H, W, 3)`` RGB or ``(H, W)`` grey, float in [0, 1] or uint8.

    Raises:
        MetricUnavailableError: OpenCV contrib or the model files are missing.
    """
    reason = brisque_unavailable_reason()
    if reason is not None:
        raise MetricUnavailableError(reason)
    import cv2

    if image.dtype != np.uint8:
        image = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    model, value_range = _model_files()  # type: ignore[misc]
    score = cv2.quality.QualityBRISQUE_compute(image, str(model), str(value_range))
    return float(score[0])
