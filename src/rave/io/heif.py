"""HEIF/HEIC photos (every iPhone photo) through ``pillow-heif`` (libheif).

Registering the plugin lets Pillow open and save HEIF like any other format, so the
ordinary read path keeps EXIF, the ICC profile and XMP. libheif applies the file's rotation
while decoding and pillow-heif resets the EXIF orientation to 1 accordingly, so pixels come
out upright and the orientation is not applied twice.
"""

from __future__ import annotations

import functools
import importlib.util

__all__ = ["can_write_heif", "heif_available", "register_heif"]


def heif_available() -> bool:
    """Whether ``pillow-heif`` is installed."""
    return importlib.util.find_spec("pillow_heif") is not None


@functools.cache
def register_heif() -> bool:
    """Teach Pillow to open (and save) HEIF files; False when pillow-heif is missing."""
    if not heif_available():
        return False
    import pillow_heif

    pillow_heif.register_heif_opener()
    return True


@functools.cache
def can_write_heif() -> bool:
    """Whether a HEVC encoder is available to write HEIC (some libheif builds decode only)."""
    if not register_heif():
        return False
    import pillow_heif

    return bool(pillow_heif.libheif_info().get("HEIF"))
