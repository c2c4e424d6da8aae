"""Photo files in and out: upright, at their bit depth, with ICC profile and EXIF kept.

Example::

    from rave.io import read_photo, write_photo
    photo = read_photo("IMG_0001.jpg")        # photo.pixels: (H, W, 3) uint8, upright
    write_photo("out.jpg", photo.pixels, icc_profile=photo.icc_profile, exif=photo.exif)
"""

from __future__ import annotations

from rave.io.atomic import atomic_write, file_mode, probe_folder, remove_stale_temporaries
from rave.io.read import DEFAULT_MAX_PIXELS, Photo, PhotoError, PhotoNotFoundError, read_photo
from rave.io.write import FORMATS, SIXTEEN_BIT_FORMATS, format_for_suffix, write_photo

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "SIXTEEN_BIT_FORMATS",
    "Photo",
    "PhotoError",
    "PhotoNotFoundError",
    "atomic_write",
    "file_mode",
    "format_for_suffix",
    "probe_folder",
    "read_photo",
    "remove_stale_temporaries",
    "write_photo",
]
