"""Guidance-method plug-ins, looked up by the ``method`` key of the training config.

The table maps a name to ``"module:Class"`` and is imported lazily, so a method's module
(and its heavy dependencies) loads only when a run uses it.
"""

from __future__ import annotations

import importlib

from rave.training.methods.base import GuidanceMethod, MethodContext, NoOptions, Stage

__all__ = [
    "METHODS",
    "GuidanceMethod",
    "MethodContext",
    "NoOptions",
    "Stage",
    "get_method",
    "list_methods",
    "register_method",
]

METHODS: dict[str, str] = {
    "rave": "rave.training.methods.rave:RaveMethod",
    "clip-lit": "rave.training.methods.clip_lit:ClipLitMethod",
    "clip-lit-latent": "rave.training.methods.clip_lit_latent:ClipLitLatentMethod",
    # not a guidance method: the built-in model's light-map smoothing stage (docs/method.md)
    "smooth-light": "rave.training.methods.smooth_light:SmoothLightMethod",
}
_LOADED: dict[str, type[GuidanceMethod]] = {}


def register_method(name: str, cls: type[GuidanceMethod]) -> None:
    """Add a method class under ``name`` (for extensions and tests); duplicates raise."""
    if name in METHODS or name in _LOADED:
        raise ValueError(f"a training method named {name!r} is already registered")
    _LOADED[name] = cls


def list_methods() -> list[str]:
    """Names accepted by the ``method`` config key."""
    return sorted({*METHODS, *_LOADED})


def get_method(name: str) -> type[GuidanceMethod]:
    """The method class registered as ``name``.

    Raises:
        ValueError: unknown name, or its module is not installed/importable.
    """
    if name in _LOADED:
        return _LOADED[name]
    if name not in METHODS:
        raise ValueError(f"unknown training method {name!r}; known: {', '.join(list_methods())}")
    module_name, _, attribute = METHODS[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"training method {name!r} is not available ({err})") from err
    _LOADED[name] = cls
    return cls
