"""Guidance directions in an encoder's embedding space: RAVE's residual vector."""

from __future__ import annotations

from rave.guidance.residual import (
    ResidualVector,
    check_encoder,
    compute_residual,
    load_residual,
    save_residual,
)

__all__ = [
    "ResidualVector",
    "check_encoder",
    "compute_residual",
    "load_residual",
    "save_residual",
]
