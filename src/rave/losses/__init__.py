"""Loss functions of the guidance methods (pure functions of tensors)."""

from rave.losses.guidance import IDENTITY_LAYER_WEIGHTS, identity_loss, residual_loss
from rave.losses.highlights import highlight_darkening_loss, highlight_loss

__all__ = [
    "IDENTITY_LAYER_WEIGHTS",
    "highlight_darkening_loss",
    "highlight_loss",
    "identity_loss",
    "residual_loss",
]
