"""Text from outside rave made safe for a terminal, a log line or an HTTP header.

File names and strings read from files (ICC profile descriptions, EXIF text, decoder
messages) may hold escape sequences that clear a screen, retitle a terminal or forge log
lines (``\\n``). :func:`printable` is the one place they are escaped: every message that
names a file or quotes its metadata goes through it.
"""

from __future__ import annotations

import os
import unicodedata

__all__ = ["display_width", "ljust_display", "printable"]

# Line breaks repr() writes as short escapes; everything else non-printable becomes \xNN,
# \uNNNN or \UNNNNNNNN as in repr().
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Unicode categories that change how text is displayed rather than showing a glyph:
# controls (Cc), format characters such as bidirectional overrides (Cf), line and
# paragraph separators (Zl, Zp), unpaired surrogates (Cs, undecodable bytes in a file
# name) and unassigned code points (Cn).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})


def _escape(character: str) -> str:
    if character in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[character]
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object) -> str:
    """``str(value)`` (paths via :func:`os.fspath`) with every control character escaped.

    Printable text, accents and other scripts included, is kept as it is; control and
    formatting characters are written the way :func:`repr` writes them (``\\x1b``,
    ``\\n``, ``\\u202e``), so the result is one line that cannot move the cursor.

    >>> printable("evil\\x1b[31mRED.jpg")
    'evil\\\\x1b[31mRED.jpg'
    >>> printable("été/photo 1.jpg")
    'été/photo 1.jpg'
    """
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.isprintable():
        return text
    return "".join(
        _escape(character)
        if character != " " and unicodedata.category(character) in _UNSAFE_CATEGORIES
        else character
        for character in text
    )


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: East Asian wide and full-width characters take two,
    combining marks none, everything else one (what ``str.ljust`` gets wrong for CJK)."""
    width = 0
    for character in text:
        if unicodedata.combining(character):
            continue
        width += 2 if unicodedata.east_asian_width(character) in ("W", "F") else 1
    return width


def ljust_display(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` terminal columns (see :func:`display_width`)."""
    return text + " " * max(0, width - display_width(text))
