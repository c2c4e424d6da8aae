"""Loss functions of the guidance methods (pure functions of tensors)."""

from rave.losses.guidance import IDENTITY_LAYER_WEIGHTS, identity_loss, residual_loss
from rave.losses.highlights import highlight_darkening_loss, highlight_loss
from rave.losses.illumination import (
    box_mean,
    guided_filter,
    light_map_gain_excess,
    light_map_total_variation,
)

__all__ = [
    "IDENTITY_LAYER_WEIGHTS",
    "box_mean",
    "guided_filter",
    "highlight_darkening_loss",
    "highlight_loss",
    "identity_loss",
    "light_map_gain_excess",
    "light_map_total_variation",
    "residual_loss",
]
