"""What ``rave serve`` keeps of each enhanced photo so that strength changes are free.

For every upload the server runs the network once and keeps, in a private temporary
folder, the uploaded file and its full-resolution light map ``L`` (float32). Any strength
``S`` is then ``clamp(I / L**S, 0, 1)`` without the network: the page computes it on a
preview, the download computes it at full resolution. The folder is bounded in bytes
(oldest results are forgotten first) and removed when the server stops.

A server killed without a chance to clean up (SIGKILL, a power cut) leaves its folder
behind; the next ``rave serve`` removes such folders. Each live server holds an exclusive
``flock`` on its folder's ``.owner`` file, so a folder whose lock can be taken belongs to a
process that is gone, and a folder of a server still running is never touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "LIGHT_CODE_OFFSET",
    "LIGHT_CODE_SCALE",
    "Result",
    "ResultStore",
    "encode_view",
    "view_length",
]

# The light map sent to the page as uint16 codes of log2(L): code = (log2(L) + 16) * 2048,
# covering L in [2**-16, 2**16) at a relative step of 0.03% (8-bit pixels need 0.4%).
LIGHT_CODE_OFFSET = 16.0
LIGHT_CODE_SCALE = 2048.0
VIEW_MAGIC = b"RAVEVIEW"
FOLDER_PREFIX = "rave-serve-"
OWNER_FILE = ".owner"  # flock-ed by the server that made the folder, as long as it runs


@dataclass
class Result:
    """One enhanced upload: its name, its files in the store and what the page shows."""

    id: str
    name: str
    format: str
    width: int
    height: int
    folder: Path
    notes: list[str] = field(default_factory=list)
    nbytes: int = 0

    @property
    def upload(self) -> Path:
        return self.folder / "upload"

    @property
    def light(self) -> Path:
        return self.folder / "light.npy"

    @property
    def view(self) -> Path:
        return self.folder / "view.bin"


class ResultStore:
    """Results by id in a temporary folder, at most ``max_bytes`` on disk (LRU)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._root = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        self._owner_fd = _hold_owner_lock(self._root)
        #: folders left by servers that were killed, removed when this one started
        self.removed_stale = _remove_stale_folders(self._root.parent, keep=self._root)
        self._results: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The folder that holds every result (for its file system's free space)."""
        return self._root

    def new_folder(self) -> tuple[str, Path]:
        """A fresh id and its (empty) folder, for an upload being received."""
        result_id = secrets.token_urlsafe(12)
        folder = self._root / result_id
        folder.mkdir()
        return result_id, folder

    def add(self, result: Result) -> None:
        """Keep a finished result; forgets the oldest ones beyond the byte budget."""
        result.nbytes = sum(f.stat().st_size for f in result.folder.iterdir())
        with self._lock:
            self._results[result.id] = result
            total = sum(r.nbytes for r in self._results.values())
            while total > self.max_bytes and len(self._results) > 1:
                _, old = self._results.popitem(last=False)
                total -= old.nbytes
                shutil.rmtree(old.folder, ignore_errors=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)

    def get(self, result_id: str) -> Result | None:
        with self._lock:
            result = self._results.get(result_id)
            if result is not None:
                self._results.move_to_end(result_id)
            return result

    def forget(self, result_id: str) -> Result | None:
        """Remove a result and its files now (None if it is not kept)."""
        with self._lock:
            result = self._results.pop(result_id, None)
        if result is not None:
            shutil.rmtree(result.folder, ignore_errors=True)
        return result

    def discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every stored file."""
        with self._lock:
            self._results.clear()
        shutil.rmtree(self._root, ignore_errors=True)
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None


def _hold_owner_lock(folder: Path) -> int | None:
    """Lock ``folder``'s owner file for this process's lifetime; its descriptor (None
    where ``flock`` does not exist: Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    # Locked under another name, then renamed: the owner file never exists unlocked, so a
    # server starting at the same moment cannot take it for a dead one's.
    pending = folder / f"{OWNER_FILE}.pending"
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(pending, folder / OWNER_FILE)
    return fd


def _remove_stale_folders(parent: Path, keep: Path) -> int:
    """Remove this user's result folders in ``parent`` whose server is gone; how many."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return 0
    removed = 0
    try:
        candidates = list(parent.glob(f"{FOLDER_PREFIX}*"))
    except OSError:
        return 0
    for folder in candidates:
        if folder == keep:
            continue
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            # O_NOFOLLOW: a link planted in a shared /tmp is not followed.
            fd = os.open(folder / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # not ours, not a server's (no owner file), or already gone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its server is running
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed += not folder.exists()
        finally:
            os.close(fd)
    return removed


# Rows converted at a time: the whole-photo uint32 temporaries of a 16-bit 24 MP photo took
# 550 MB at once (the server peaked at 1.3 GB); a band of a 6000-pixel-wide one takes 18 MB.
_BAND_ROWS = 256


def _preview_rgb(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of any photo layout: 16-bit and float (in [0, 1]) to the nearest
    8-bit value, grey replicated, alpha dropped."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width = pixels.shape[:2]
    rgb = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, _BAND_ROWS):
        band = pixels[top : top + _BAND_ROWS]
        colour = band[:, :, :3] if band.shape[2] >= 3 else band[:, :, :1]  # grey: broadcast
        if colour.dtype == np.uint16:
            colour = (colour.astype(np.uint32) * 255 + 32767) // 65535
        elif colour.dtype.kind == "f":
            # A float TIFF: a plain cast made every sample below 1.0 black.
            colour = np.rint(np.clip(colour, 0.0, 1.0) * 255.0)
        rgb[top : top + _BAND_ROWS] = colour
    return rgb


def _view_size(box: tuple[int, int, int, int], max_side: int) -> tuple[int, int]:
    """(width, height) of the view of ``box`` (left, top, right, bottom) at ``max_side``."""
    left, top, right, bottom = box
    scale = min(1.0, max_side / max(right - left, bottom - top))
    return max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale))


def view_length(box: tuple[int, int, int, int], max_side: int) -> int:
    """The length in bytes of :func:`encode_view` of ``box`` at ``max_side``, without
    computing it (for a HEAD request)."""
    width, height = _view_size(box, max_side)
    return len(VIEW_MAGIC) + struct.calcsize("<6I") + width * height * 5


def encode_view(
    pixels: np.ndarray,
    light: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    max_side: int = 1024,
) -> bytes:
    """A region of a photo and its light map, downscaled to fit ``max_side``, for the page.

    Args:
        pixels: the photo as decoded (:attr:`rave.io.Photo.pixels`), any layout.
        light: ``(H, W)`` float32 light map of the whole photo.
        box: ``(left, top, right, bottom)`` in pixels, default the whole photo.
        max_side: the longest side of the view.

    Returns:
        ``b"RAVEVIEW"``, then little-endian uint32 width, height and the region's left, top,
        right, bottom; then ``width * height`` RGB bytes (row-major, 8-bit: the browser
        cannot show 16-bit or TIFF files) and ``width * height`` little-endian uint16
        light codes ``round((log2(L) + 16) * 2048)``, clipped to [0, 65535].
    """
    height, width = light.shape
    left, top, right, bottom = box or (0, 0, width, height)
    rgb = _preview_rgb(pixels[top:bottom, left:right])
    region_light = np.asarray(light[top:bottom, left:right], dtype=np.float32)
    size = _view_size((left, top, right, bottom), max_side)
    if max_side < max(right - left, bottom - top):  # downscaled
        # Area averaging for both, so that each preview pixel sees the light of its pixels.
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
        region_light = np.asarray(
            Image.fromarray(region_light, mode="F").resize(size, Image.Resampling.BOX)
        )
    with np.errstate(divide="ignore"):
        codes = (np.log2(np.maximum(region_light, 0)) + LIGHT_CODE_OFFSET) * LIGHT_CODE_SCALE
    codes = np.clip(np.nan_to_num(codes, nan=0.0, neginf=0.0), 0, 65535).round()
    header = VIEW_MAGIC + struct.pack("<6I", size[0], size[1], left, top, right, bottom)
    return header + rgb.tobytes() + codes.astype("<u2").tobytes()
