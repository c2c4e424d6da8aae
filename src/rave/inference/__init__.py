"""Inference: exact, tiled, bounded-memory application of the enhancement network."""

from rave.inference.tiled import enhance_tensor, predict_light_map

__all__ = ["enhance_tensor", "predict_light_map"]
