"""rave: backlit photo enhancement guided by image-text embeddings (RAVE, ECCV 2024)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rave-enhance")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
