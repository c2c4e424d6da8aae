"""rave: backlit photo enhancement guided by image-text embeddings (RAVE, ECCV 2024).

The public API is imported lazily so that ``import rave`` stays cheap::

    import rave
    enhanced = rave.enhance(image, model="rave-unpaired")
    enhancer = rave.Enhancer("rave-unpaired", device="auto")   # load once, enhance many
    enhancer.enhance_file("IMG_0001.HEIC", "out/IMG_0001.heic")
    net = rave.load_enhancer("rave-unpaired")
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("rave-enhance")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from rave import metrics
    from rave.api import enhance
    from rave.encoders import create_encoder
    from rave.guidance.residual import compute_residual
    from rave.session import Enhancer
    from rave.zoo import list_models, load_enhancer

# public name -> module that defines it
_LAZY_EXPORTS = {
    "enhance": "rave.api",
    "Enhancer": "rave.session",
    "load_enhancer": "rave.zoo",
    "list_models": "rave.zoo",
    "compute_residual": "rave.guidance.residual",
    "create_encoder": "rave.encoders",
    "metrics": "rave.metrics",
}

# Spelled out (not built from _LAZY_EXPORTS) so type checkers and IDEs can read it;
# tests/test_api.py checks the two agree.
__all__ = [
    "Enhancer",
    "__version__",
    "compute_residual",
    "create_encoder",
    "enhance",
    "list_models",
    "load_enhancer",
    "metrics",
]


def __dir__() -> list[str]:
    # The public API only (not the helpers this module imports for itself).
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name in _LAZY_EXPORTS:
        module = importlib.import_module(_LAZY_EXPORTS[name])
        return module if module.__name__ == f"rave.{name}" else getattr(module, name)
    raise AttributeError(f"module 'rave' has no attribute {name!r}")
