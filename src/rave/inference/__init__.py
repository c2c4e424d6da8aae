"""Inference: exact, tiled, bounded-memory application of the enhancement network."""

from rave.inference.tiled import (
    DeadlineExceeded,
    enhance_tensor,
    is_memory_bound,
    predict_light_map,
)

__all__ = ["DeadlineExceeded", "enhance_tensor", "is_memory_bound", "predict_light_map"]
