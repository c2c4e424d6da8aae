"""Which files are photos: the one suffix set and the one folder lister of the package.

Every command that scans a folder (``rave enhance``, ``rave evaluate``, ``rave train``,
``rave residual``) lists it through :func:`scan_image_folder` (or its shorthand
:func:`list_image_files`), so they all see the same photos: every suffix below, in any
letter case, hidden files (among them the ``.NAME.part`` temporaries of atomic writes)
skipped.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "HEIF_SUFFIXES",
    "IMAGE_SUFFIXES",
    "PILLOW_SUFFIXES",
    "RAW_SUFFIXES",
    "FolderScan",
    "default_output_note",
    "image_kind",
    "is_image_name",
    "list_image_files",
    "missing_reader",
    "native_output_format",
    "scan_image_folder",
    "unsupported_format_hint",
]

# Read by Pillow itself (AVIF and JPEG 2000 with Pillow's optional codecs, which the
# wheels ship); 16-bit PNG/TIFF go through OpenCV/tifffile (rave.io.read).
PILLOW_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".jp2", ".j2k", ".jpx", ".tga", ".qoi"}
)
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
"""iPhone and other HEIF photos, read through ``pillow-heif``."""
RAW_SUFFIXES = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"})
"""Camera RAW files, decoded by LibRaw through ``rawpy``."""
IMAGE_SUFFIXES = PILLOW_SUFFIXES | HEIF_SUFFIXES | RAW_SUFFIXES
"""Every suffix (lower case) that a folder scan picks up."""

# Formats rave does not read, and the package that would (for the one-line refusal).
_OTHER_READERS = {
    ".exr": "OpenEXR (e.g. the 'OpenEXR' or 'imageio' packages)",
    ".hdr": "Radiance HDR (e.g. 'imageio' or OpenCV's cv2.imread)",
    ".jxl": "JPEG XL ('pillow-jxl-plugin')",
    ".psd": "Photoshop documents (export a TIFF; 'psd-tools' reads their layers)",
    ".svg": "vector drawings ('cairosvg' renders them)",
    ".pdf": "PDF documents ('pdf2image' / 'pypdfium2')",
    ".x3f": "Sigma RAW (convert to DNG with Adobe DNG Converter)",
    ".srw": "Samsung RAW ('rawpy' can, rename or convert to DNG)",
    ".pef": "Pentax RAW ('rawpy' can, rename or convert to DNG)",
}


def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix (any case) and is not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


@dataclass
class FolderScan:
    """What a scan of one folder found (:func:`scan_image_folder`)."""

    files: list[Path]
    """Image files: regular files and links (even broken ones), sorted by their path below
    the folder."""
    unreadable: list[OSError] = field(default_factory=list)
    """Folders that could not be listed (``filename`` names each; the top folder too)."""
    left_out: list[Path] = field(default_factory=list)
    """Sub-folders not descended into because the scan was not recursive (hidden ones and
    the excluded folder not counted)."""
    linked_folders: list[Path] = field(default_factory=list)
    """Links to folders met by the scan: never followed (a link may loop, or lead out of
    the tree), recursive or not; without ``recursive`` they are in ``left_out`` too."""
    not_regular: list[Path] = field(default_factory=list)
    """Entries named like images that are neither files nor links (a FIFO, a socket, a
    device): not in ``files``, as opening one may block, but for the caller to report."""


def scan_image_folder(
    folder: str | os.PathLike[str], *, recursive: bool = False, exclude: Path | None = None
) -> FolderScan:
    """The image files of ``folder``, and what the scan could not look into.

    Args:
        folder: the folder to scan.
        recursive: descend into sub-folders (hidden ones are skipped).
        exclude: a folder left out of the scan (e.g. the output folder inside the input).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    scan = FolderScan([])
    excluded = exclude.resolve() if exclude is not None else None
    # os.walk skips a folder it cannot list without a word unless told where to report it.
    for root, dirs, files in os.walk(folder, onerror=scan.unreadable.append):
        root_path = Path(root)
        kept = [
            name
            for name in sorted(dirs)
            if not name.startswith(".")
            and (excluded is None or not _is_within(root_path / name, excluded))
        ]
        scan.linked_folders += [
            root_path / name for name in kept if (root_path / name).is_symlink()
        ]
        if not recursive:
            scan.left_out += [root_path / name for name in kept]
            kept = []
        dirs[:] = kept
        for name in files:
            path = root_path / name
            # Broken links are kept so that the reader can name the problem, not skip it.
            if is_image_name(name) and (path.is_file() or path.is_symlink()):
                scan.files.append(path)
            elif is_image_name(name):
                scan.not_regular.append(path)
    scan.files.sort(key=lambda path: path.relative_to(folder).parts)
    return scan


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def list_image_files(
    folder: str | os.PathLike[str], *, recursive: bool = False, exclude: Path | None = None
) -> list[Path]:
    """The image files of ``folder`` (and its sub-folders if ``recursive``), sorted.

    Args:
        folder: the folder to scan.
        recursive: descend into sub-folders (hidden ones are skipped).
        exclude: a folder left out of the scan (e.g. the output folder inside the input).

    Returns:
        Paths of regular files and links (even broken ones) whose suffix is in
        :data:`IMAGE_SUFFIXES` (any letter case), hidden names skipped, sorted by their
        path below ``folder``; folders that cannot be listed are skipped
        (:func:`scan_image_folder` reports them).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    return scan_image_folder(folder, recursive=recursive, exclude=exclude).files


def missing_reader(suffix: str) -> str | None:
    """The pip command that adds the reader for ``suffix`` when it is not installed, else None.

    pillow-heif is a dependency of rave (iPhones shoot HEIC); RAW support is the optional
    extra ``pip install 'rave-enhance[raw]'``: rawpy bundles LibRaw, which users of
    JPEG/PNG/TIFF alone do not need.
    """
    suffix = suffix.lower()
    if suffix in HEIF_SUFFIXES and importlib.util.find_spec("pillow_heif") is None:
        return "pip install pillow-heif (a dependency of rave-enhance: reinstall it)"
    if suffix in RAW_SUFFIXES and importlib.util.find_spec("rawpy") is None:
        return "pip install 'rave-enhance[raw]' (rawpy, LibRaw)"
    return None


def unsupported_format_hint(suffix: str) -> str | None:
    """For a suffix rave does not read, which package would read it; else None."""
    suffix = suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        reader = missing_reader(suffix)
        return f"needs an optional reader: {reader}" if reader else None
    if suffix in _OTHER_READERS:
        return f"{suffix} files are not supported by rave; {_OTHER_READERS[suffix]} reads them"
    return None


def native_output_format(suffix: str) -> str | None:
    """The output format that keeps a source of this suffix as it is, else None (-> PNG).

    Writable formats map to themselves (``".JPEG"`` -> ``"jpg"``); camera RAW to 16-bit
    ``"tif"``; HEIF to ``"heic"`` where libheif has an encoder, else ``"jpg"``.
    """
    from rave.io.write import format_for_suffix

    suffix = suffix.lower()
    if suffix in RAW_SUFFIXES:
        return "tif"
    if suffix in HEIF_SUFFIXES:
        from rave.io.heif import can_write_heif

        return "heic" if can_write_heif() else "jpg"
    return format_for_suffix(suffix)


_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG": "PNG",
    b"GIF8": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
}
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


def image_kind(head: bytes) -> str | None:
    """The kind of image a file's first 12 bytes announce (``"JPEG"``, ``"PNG"``, ``"GIF"``,
    ``"TIFF"``, ``"BMP"``, ``"WebP"``, ``"HEIF"``, ``"AVIF"``), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":  # an ISO media file: its brand says which
        return "HEIF" if head[8:12] in _HEIF_BRANDS else "AVIF" if head[8:12] == b"avif" else None
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def _pillow_reads(suffix: str) -> bool:
    """Whether ``suffix`` (lower case) is one of rave's or any format Pillow registers
    (``.ico``, ``.pcx``...: read when named, though folder scans leave them out)."""
    if suffix in PILLOW_SUFFIXES:
        return True
    from PIL import Image

    return suffix in Image.registered_extensions()


def default_output_note(suffix: str) -> str | None:
    """The note for a source of ``suffix`` written in :func:`native_output_format`'s choice
    when that is not its own format (``".gif"`` -> "GIF input written as PNG ..."), else None.

    For callers that chose the output format themselves; one that the user named needs no
    note.
    """
    suffix = suffix.lower()
    if suffix in HEIF_SUFFIXES and native_output_format(suffix) == "jpg":
        return "HEIC input written as JPEG (no HEVC encoder in libheif)"
    if native_output_format(suffix) is None and _pillow_reads(suffix):
        kind = suffix.lstrip(".").upper()
        return f"{kind} input written as PNG (rave does not write {kind})"
    return None
