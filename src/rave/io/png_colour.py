"""PNG colour described by ``sRGB``, ``gAMA`` and ``cHRM`` chunks instead of an ICC profile.

Many PNG writers (image editors, scientific and game tools) state the colour space of a PNG
only by its encoding gamma (``gAMA``) and primaries and white point (``cHRM``), or say
"sRGB" with an ``sRGB`` chunk, and embed no ``iCCP`` profile. Browsers and viewers honour
them, so a result that dropped them would show other colours than the original.

Why the profile is written here: Pillow's ImageCms (littleCMS) builds only sRGB, LAB and
XYZ profiles from Python, and no maintained package builds one from chromaticities and a
gamma; the structure needed (header, tag table, XYZ, curve and text tags) is small.

Such a description travels with the photo as an ICC profile built from it
(:func:`png_colour_profile`): the one channel every output format has for colour, so a
JPEG, TIFF, WebP or HEIC result carries the same colour space as a profile. A PNG result
gets the original chunks back instead (:func:`png_colour_in_profile` recognises the
profile built here and gives the chunks it came from), so it says what the original said.

The profile is a small ICC v2 display profile: a matrix (the primaries, adapted to the
D50 connection space with the Bradford transform, as ICC requires) and one tone curve per
channel (a 1024-entry table of the gamma, or the sRGB curve); grey PNGs get a grey profile
(white point and tone curve). Its description names the chunk values exactly, e.g.
``"PNG gAMA 45455 cHRM 31270 32900 64000 33000 30000 60000 15000 6000"``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

__all__ = [
    "PngColour",
    "png_colour_chunks",
    "png_colour_from_info",
    "png_colour_in_profile",
    "png_colour_profile",
]

_SCALE = 100_000  # gAMA and cHRM store values times 100000
_MAX_VALUE = 0xFFFF_FFFF  # as unsigned 32-bit numbers
# sRGB / BT.709 primaries and D65 white, as the PNG specification's sRGB cHRM values.
_SRGB_CHROMATICITY = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
_D50 = np.array([0.9642, 1.0, 0.8249])  # the ICC connection space's white
_BRADFORD = np.array(
    [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
)
_CURVE_ENTRIES = 1024
_S15_LIMIT = 32767.0  # s15Fixed16 numbers (XYZ in a profile) lie within +-32768


@dataclass(frozen=True)
class PngColour:
    """A PNG's own colour chunks (each None when absent), values as stored.

    Attributes:
        srgb_intent: the ``sRGB`` chunk's rendering intent (0-3): the pixels are sRGB.
        gamma: ``gAMA``, the encoding gamma times 100000 (45455: a display gamma of 2.2).
        chromaticity: ``cHRM``, white point, red, green and blue ``x, y``, each times
            100000.
    """

    srgb_intent: int | None = None
    gamma: int | None = None
    chromaticity: tuple[int, int, int, int, int, int, int, int] | None = None

    def describe(self) -> str:
        """The chunks and their values, as the profile's description says them."""
        words = ["PNG"]
        if self.srgb_intent is not None:
            words += ["sRGB", str(self.srgb_intent)]
        if self.gamma is not None:
            words += ["gAMA", str(self.gamma)]
        if self.chromaticity is not None:
            words += ["cHRM", *map(str, self.chromaticity)]
        return " ".join(words)


def png_colour_from_info(info: Mapping[Any, Any]) -> PngColour | None:
    """The colour chunks Pillow read into a PNG's ``info`` (``srgb``, ``gamma``,
    ``chromaticity``), or None when it has none (an ``sRGB`` chunk with an intent other
    than 0-3 is not one)."""
    intent, gamma, chromaticity = info.get("srgb"), info.get("gamma"), info.get("chromaticity")
    values = None
    if isinstance(chromaticity, tuple) and len(chromaticity) == 8:
        values = _eight(round(value * _SCALE) for value in chromaticity)
    colour = PngColour(
        # Pillow divides by 100000; the stored integers come back exactly.
        srgb_intent=intent if isinstance(intent, int) and 0 <= intent <= 3 else None,
        gamma=round(gamma * _SCALE) if isinstance(gamma, (int, float)) else None,
        chromaticity=values,
    )
    return None if colour == PngColour() else colour


def _eight(values: Iterable[int]) -> tuple[int, int, int, int, int, int, int, int]:
    """A cHRM's eight values as the type says (the caller has counted them)."""
    return cast("tuple[int, int, int, int, int, int, int, int]", tuple(values))


def png_colour_chunks(colour: PngColour) -> list[tuple[bytes, bytes]]:
    """``(chunk type, data)`` of the chunks ``colour`` came from, in the order libpng
    writes them (all before ``PLTE`` and ``IDAT``)."""
    chunks = []
    if colour.chromaticity is not None:
        chunks.append((b"cHRM", struct.pack(">8I", *colour.chromaticity)))
    if colour.gamma is not None:
        chunks.append((b"gAMA", struct.pack(">I", colour.gamma)))
    if colour.srgb_intent is not None:
        chunks.append((b"sRGB", bytes([colour.srgb_intent])))
    return chunks


def png_colour_profile(colour: PngColour, *, grey: bool) -> bytes | None:
    """An ICC profile for pixels that ``colour`` describes, or None if it describes none.

    Args:
        colour: the PNG's chunks. An ``sRGB`` chunk makes the pixels sRGB whatever
            ``gAMA`` and ``cHRM`` say (as the PNG specification rules); without ``gAMA``
            the tone curve is sRGB's, without ``cHRM`` the primaries and white are.
        grey: build a grey (``GRAY``) profile, for grey and grey + alpha pixels.

    Returns:
        The profile, or None when the values are not a colour space: a gamma of 0, a
        chromaticity with ``y = 0`` or outside the unit square, primaries on a line, or
        XYZ values too large for a profile (a ``y`` near 0).
    """
    if colour.srgb_intent is not None:
        curve = _srgb_curve()
        chromaticity = _SRGB_CHROMATICITY
    else:
        if colour.gamma is not None and colour.gamma <= 0:
            return None
        curve = _srgb_curve() if colour.gamma is None else _gamma_curve(_SCALE / colour.gamma)
        chromaticity = colour.chromaticity or _SRGB_CHROMATICITY
    xy = np.array(chromaticity, dtype=np.float64).reshape(4, 2) / _SCALE
    if (xy[:, 1] <= 0).any() or (xy < 0).any() or (xy.sum(axis=1) > 1).any():
        return None
    white = _xyz(xy[0])
    if not (np.abs(white).max() < _S15_LIMIT):
        return None  # a white point y near 0: XYZ beyond what a profile can hold
    tags: list[tuple[bytes, bytes]] = [
        (b"desc", _text_description(colour.describe())),
        (b"cprt", b"text\0\0\0\0No copyright, use freely\0"),
        (b"wtpt", _xyz_type(white)),
    ]
    if grey:
        tags.append((b"kTRC", curve))
    else:
        primaries = np.stack([_xyz(xy[1]), _xyz(xy[2]), _xyz(xy[3])], axis=1)
        if abs(np.linalg.det(primaries)) < 1e-9:
            return None
        to_xyz = primaries * np.linalg.solve(primaries, white)  # each column scaled
        colorants = _bradford(white) @ to_xyz  # as seen under D50, as ICC wants them
        if not (np.isfinite(colorants).all() and np.abs(colorants).max() < _S15_LIMIT):
            return None  # primaries nearly on a line, or a y near 0
        tags += [
            (b"rXYZ", _xyz_type(colorants[:, 0])),
            (b"gXYZ", _xyz_type(colorants[:, 1])),
            (b"bXYZ", _xyz_type(colorants[:, 2])),
            (b"rTRC", curve),
            (b"gTRC", curve),
            (b"bTRC", curve),
        ]
    return _profile(tags, grey=grey, intent=colour.srgb_intent or 0)


_DESCRIBED = re.compile(
    rb"PNG(?: sRGB ([0-3]))?(?: gAMA ([0-9]{1,10}))?(?: cHRM ((?:[0-9]{1,10} ?){8}))?\0"
)


def png_colour_in_profile(icc_profile: bytes | None) -> PngColour | None:
    """The chunks an ICC profile was built from by :func:`png_colour_profile`, else None.

    The profile's description names them; the profile is rebuilt from those values and
    must be the same bytes, so a profile from elsewhere (even one with such a
    description) is never mistaken for one built here.
    """
    if not icc_profile or len(icc_profile) < 132 or icc_profile[36:40] != b"acsp":
        return None
    found = _DESCRIBED.search(icc_profile, 128)
    if found is None:
        return None
    intent, gamma, chromaticity = found.groups()
    colour = PngColour(
        srgb_intent=int(intent) if intent else None,
        gamma=int(gamma) if gamma else None,
        # eight numbers, by the pattern
        chromaticity=_eight(map(int, chromaticity.split())) if chromaticity else None,
    )
    if max(colour.chromaticity or (0,)) > _MAX_VALUE or (colour.gamma or 0) > _MAX_VALUE:
        return None  # not what a chunk holds, so not what Pillow read from one
    grey = icc_profile[16:20] == b"GRAY"
    return colour if png_colour_profile(colour, grey=grey) == icc_profile else None


def _xyz(xy: np.ndarray) -> np.ndarray:
    """XYZ (Y = 1) of a chromaticity ``(x, y)``."""
    x, y = xy
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _bradford(white: np.ndarray) -> np.ndarray:
    """Bradford chromatic adaptation from ``white`` (XYZ) to D50."""
    scale = (_BRADFORD @ _D50) / (_BRADFORD @ white)
    return np.linalg.solve(_BRADFORD, np.diag(scale) @ _BRADFORD)


def _gamma_curve(exponent: float) -> bytes:
    """``curv`` tag: ``y = x ** exponent`` as a table (u8Fixed8 would round 2.2 to 2.1992)."""
    x = np.linspace(0, 1, _CURVE_ENTRIES)
    return _curve(x**exponent)


def _srgb_curve() -> bytes:
    """``curv`` tag: the sRGB tone curve (IEC 61966-2-1) as a table."""
    x = np.linspace(0, 1, _CURVE_ENTRIES)
    return _curve(np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4))


def _curve(values: np.ndarray) -> bytes:
    table = np.round(np.clip(values, 0, 1) * 65535).astype(">u2")
    return b"curv\0\0\0\0" + struct.pack(">I", len(table)) + table.tobytes()


def _s15fixed16(values: np.ndarray) -> bytes:
    return b"".join(struct.pack(">i", round(float(value) * 65536)) for value in values)


def _xyz_type(xyz: np.ndarray) -> bytes:
    return b"XYZ \0\0\0\0" + _s15fixed16(xyz)


def _text_description(text: str) -> bytes:
    """ICC v2 ``desc`` (textDescriptionType): ASCII, no Unicode or ScriptCode text."""
    ascii_text = text.encode("ascii") + b"\0"
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + struct.pack(">II", 0, 0)  # Unicode language code and count
        + struct.pack(">HB", 0, 0)  # ScriptCode code and count
        + bytes(67)  # the ScriptCode string's fixed room
    )


def _profile(tags: list[tuple[bytes, bytes]], *, grey: bool, intent: int) -> bytes:
    """An ICC v2.1 display profile holding ``tags`` (equal tag data stored once)."""
    table_end = 128 + 4 + 12 * len(tags)
    data = b""
    entries = b""
    offsets: dict[bytes, int] = {}
    for signature, body in tags:
        if body not in offsets:
            offsets[body] = table_end + len(data)
            data += body + bytes(-len(body) % 4)  # each tag starts on 4 bytes
        entries += signature + struct.pack(">II", offsets[body], len(body))
    size = table_end + len(data)
    header = (
        struct.pack(">I", size)
        + bytes(4)  # preferred CMM: none
        + bytes([2, 0x10, 0, 0])  # version 2.1
        + b"mntr"
        + (b"GRAY" if grey else b"RGB ")
        + b"XYZ "
        + struct.pack(">6H", 2000, 1, 1, 0, 0, 0)  # a fixed date: same chunks, same bytes
        + b"acsp"
        + bytes(4 + 4 + 4 + 4 + 8)  # platform, flags, manufacturer, model, attributes
        + struct.pack(">I", intent)
        + _s15fixed16(_D50)
        + bytes(4 + 16 + 28)  # creator, profile ID (v4 only), reserved
    )
    return header + struct.pack(">I", len(tags)) + entries + data
