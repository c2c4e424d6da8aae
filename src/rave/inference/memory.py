"""The engine's memory policy: how glibc's allocator is tuned around one photo.

Every caller that enhances whole photos (``rave enhance``, :class:`rave.Enhancer`,
``rave.enhance``, ``rave serve``) goes through :func:`tune_allocator` before a photo and
:func:`return_freed_memory` after it, so they all get the same memory figures. Before a
photo bound by memory, :func:`tune_allocator` also releases the resident pages of GPU
libraries that a CPU-only run never executes (:func:`release_idle_gpu_library_pages`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import sys

__all__ = [
    "release_idle_gpu_library_pages",
    "return_freed_memory",
    "share_one_heap",
    "tune_allocator",
]

# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Linux madvise advice: drop the range's page-table entries; file pages stay in the page cache.
_MADV_DONTNEED = 4

# Shared libraries that only GPU work runs: PyTorch's CUDA half and NVIDIA's libraries (the
# ``nvidia-*`` wheels install them under a ``site-packages/nvidia/`` folder).
_GPU_LIBRARY = re.compile(
    r"/nvidia/|/lib(?:torch_cuda|c10_cuda|cudart|cudnn|cublas|cufft|curand|cusolver|cusparse"
    r"|cupti|cufile|nvrtc|nvJitLink|nvToolsExt|nvshmem|nccl)[^/]*\.so[^/]*$"
)


def tune_allocator(memory_bound: bool) -> None:
    """Choose glibc's allocation policy for the next photo (no-op without glibc).

    Photos too large for the engine's feature cache are bound by memory: tile tensors (a few
    MB each) stay in the heap and are not trimmed away between tiles, while anything from
    32 MB up (whole-photo arrays) is mapped on its own and returned at once (24 MP JPEG, 2
    threads: 896 MB peak RSS, 2.34 s/MP; 16-bit TIFF: 974 MB). A 1 MB threshold kept 809 MB
    but spent a third of the time in page faults (3.46 s/MP); glibc's default trimming made
    the speed depend on what happened to lie above the tiles in the heap (2.1 to 2.9 s/MP);
    keeping whole-photo arrays in the heap too reached 972 MB for a JPEG. Smaller photos
    are bound by time: the heap keeps all freed memory (2048x1536, oneDNN convolutions: 4.57
    s/MP with the 1 MB threshold, 3.49 with glibc's default, 3.32 keeping it, at 1.36 GB
    peak), and returns it (``malloc_trim``) before the next memory-bound photo.
    """
    libc = _glibc()
    if libc is None:
        return
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)  # freed tile memory stays for the next tile
    share_one_heap()
    if memory_bound:
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.malloc_trim(0)
        release_idle_gpu_library_pages()
    else:
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)


def share_one_heap() -> None:
    """Make threads started from now on allocate from the main heap (glibc; else no-op).

    glibc gives threads their own arenas, heaps of at most 64 MB that the thresholds of
    :func:`tune_allocator` do not govern, so the tile workers' tensors were mapped afresh
    and page-faulted on every layer (2048x1536, 2 threads: 0.2 to 0.5 million page faults
    and 0.2 to 1.1 s of system time per photo; none with one arena). rave's threads
    allocate a few large tensors per layer, so the shared heap's lock is not contended.
    Threads that already have an arena keep it (PyTorch's own start with its first
    parallel operation), so processes that rave starts call this first thing (``rave``).
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, 1)


def return_freed_memory() -> None:
    """Hand memory freed in the heap back to the OS (glibc only; no-op elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def release_idle_gpu_library_pages() -> int:
    """Unmap the pages of GPU libraries that a process running on the CPU holds resident.

    PyPI's Linux wheels of PyTorch load their CUDA libraries on every ``import torch``, even
    without a GPU, and the loader leaves part of them resident: 135 to 300 MB with torch
    2.14 and CUDA 13 (``libnvJitLink``, ``libnvrtc``, ``libcublasLt`` up to 70 MB each),
    up to a third of the 1 GB budget of a 24 MP photo (docs/performance.md, memory). While
    CUDA is not initialised in this process no code of theirs runs, so the page-table
    entries of their read-only mappings that hold no private copy (``Anonymous: 0 kB``:
    every page equals the file's) are dropped with ``MADV_DONTNEED``. That loses nothing:
    the pages stay in the page cache and are mapped again, unchanged, on the next access
    (a minor fault), should CUDA start later. Writable mappings and any with private pages
    (relocations) are left alone.

    Returns the resident bytes released (0 off Linux, once CUDA is initialised, or when
    nothing matched). ``RAVE_KEEP_GPU_LIBRARY_PAGES=1`` turns it off.
    """
    if not sys.platform.startswith("linux") or os.environ.get("RAVE_KEEP_GPU_LIBRARY_PAGES") == "1":
        return 0
    import torch

    if torch.cuda.is_initialized():
        return 0
    libc = _libc_madvise()
    if libc is None:
        return 0
    released = 0
    for start, end, resident in _idle_gpu_library_mappings():
        if libc.madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += resident
    return released


def _idle_gpu_library_mappings() -> list[tuple[int, int, int]]:
    """``(start, end, resident bytes)`` of read-only, never-written GPU library mappings."""
    mappings: list[tuple[int, int, int]] = []
    candidate: list[int] | None = None  # start, end, resident bytes of the mapping being read
    with (
        contextlib.suppress(OSError),
        open("/proc/self/smaps", encoding="ascii", errors="replace") as smaps,
    ):
        for line in smaps:
            field, _, value = line.partition(" ")
            if not field.endswith(":"):  # a mapping's header: range perms offset dev inode path
                parts = line.split(maxsplit=5)
                path = parts[5].strip() if len(parts) == 6 else ""
                candidate = None
                if "w" not in parts[1] and _GPU_LIBRARY.search(path):
                    begin, _, finish = parts[0].partition("-")
                    candidate = [int(begin, 16), int(finish, 16), 0]
            elif candidate is not None and field == "Rss:":
                candidate[2] = int(value.split()[0]) * 1024
            elif candidate is not None and field == "Anonymous:" and value.split()[0] == "0":
                if candidate[2]:
                    mappings.append((candidate[0], candidate[1], candidate[2]))
                candidate = None
    return mappings


@functools.cache
def _libc_madvise() -> ctypes.CDLL | None:
    """The C library with a typed ``madvise``, or ``None`` where it cannot be loaded."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library, where it is glibc (``mallopt``/``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    # musl and other C libraries lack these glibc extensions
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
