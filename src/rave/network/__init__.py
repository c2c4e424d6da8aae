"""The enhancement network (docs/method.md, "Enhancement network") and safe checkpoint loading."""

from rave.network.checkpoint import (
    CheckpointError,
    build_enhancer,
    extract_state_dict,
    light_refinement_of,
    load_checkpoint_file,
    strip_module_prefix,
)
from rave.network.enhancer import (
    EnhancementNet,
    apply_light_map,
    count_parameters,
    start_as_identity,
)
from rave.network.refinement import LightRefinement

__all__ = [
    "CheckpointError",
    "EnhancementNet",
    "LightRefinement",
    "apply_light_map",
    "build_enhancer",
    "count_parameters",
    "extract_state_dict",
    "light_refinement_of",
    "load_checkpoint_file",
    "start_as_identity",
    "strip_module_prefix",
]
