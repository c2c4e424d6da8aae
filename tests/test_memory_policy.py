"""The engine's memory policy (rave.inference.memory): releasing the resident pages of GPU
libraries in a process that runs on the CPU, and one heap for every thread.

The release works on the process's own page tables, so these tests map real files and read
``/proc/self/smaps`` back: a page whose entry was dropped must no longer be resident, and
reading it again must give the file's bytes unchanged. Heap sharing is read back from
glibc's ``malloc_info`` in a fresh interpreter.
"""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rave.inference import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux page tables")

PAGES = 64


def _resident_bytes(path: Path) -> int:
    """Resident bytes of this process's one mapping of ``path``."""
    found = False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
        for line in smaps:
            field, _, value = line.partition(" ")
            if not field.endswith(":"):
                found = line.rstrip("\n").endswith(" " + str(path))
            elif found and field == "Rss:":
                return int(value.split()[0]) * 1024
    raise AssertionError(f"{path} is not mapped")


def _library_file(folder: Path, name: str) -> tuple[Path, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    content = np.random.default_rng(3).integers(0, 256, PAGES * mmap.PAGESIZE, np.uint8).tobytes()
    path = folder / name
    path.write_bytes(content)
    return path, content


def _map_and_touch(path: Path, access: int) -> mmap.mmap:
    with path.open("rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=access)
    for page in range(PAGES):  # every page resident
        mapping[page * mmap.PAGESIZE]
    return mapping


def test_read_only_gpu_library_pages_are_released_and_read_back_unchanged(tmp_path) -> None:
    path, content = _library_file(tmp_path / "site-packages" / "nvidia" / "lib", "libfake.so.13")
    mapping = _map_and_touch(path, mmap.ACCESS_READ)
    try:
        assert _resident_bytes(path) == len(content)
        released = memory.release_idle_gpu_library_pages()
        assert released >= len(content)
        assert _resident_bytes(path) < len(content) // 4  # faultaround may map a few back
        assert mapping[:] == content  # mapped again from the page cache, unchanged
    finally:
        mapping.close()


@pytest.mark.parametrize("read_only_after_writing", [False, True])
def test_mappings_with_private_pages_or_other_names_are_kept(
    tmp_path, read_only_after_writing
) -> None:
    """A private copy (a written page) would be lost: such mappings, writable or made read-only
    after writing (as the loader does with relocated data), and libraries that are not GPU
    libraries (``libcurl`` starts like ``libcu...``), keep their pages."""
    import ctypes

    written_path, content = _library_file(tmp_path / "nvidia", "libcublasLt.so.13")
    other_path, _ = _library_file(tmp_path / "lib", "libcurl.so.4")
    written = _map_and_touch(written_path, mmap.ACCESS_COPY)
    other = _map_and_touch(other_path, mmap.ACCESS_READ)
    try:
        written[0:4] = b"rave"  # one private page: no longer the file's
        if read_only_after_writing:
            view = ctypes.c_char.from_buffer(written)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            assert libc.mprotect(ctypes.addressof(view), len(content), mmap.PROT_READ) == 0
            del view
        memory.release_idle_gpu_library_pages()
        assert _resident_bytes(written_path) == len(content)
        assert written[0:4] == b"rave"
        assert _resident_bytes(other_path) == len(content)
    finally:
        written.close()
        other.close()


def test_library_name_pattern() -> None:
    gpu = [
        "/x/site-packages/nvidia/cu13/lib/libnvJitLink.so.13",
        "/x/site-packages/torch/lib/libtorch_cuda.so",
        "/usr/lib/x86_64-linux-gnu/libcudnn_ops.so.9.1.0",
        "/opt/cuda/lib64/libcublasLt.so.12",
        "/x/site-packages/nvidia/nccl/lib/libnccl.so.2",
    ]
    other = [
        "/x/site-packages/torch/lib/libtorch_cpu.so",
        "/usr/lib/x86_64-linux-gnu/libcurl.so.4",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/x/site-packages/cuda_tools/libcudart_notes.txt",
        "[heap]",
    ]
    assert all(memory._GPU_LIBRARY.search(path) for path in gpu)
    assert not any(memory._GPU_LIBRARY.search(path) for path in other)


def test_nothing_is_released_when_turned_off_or_cuda_is_running(tmp_path, monkeypatch) -> None:
    path, content = _library_file(tmp_path / "nvidia", "libnvrtc.so.13")
    mapping = _map_and_touch(path, mmap.ACCESS_READ)
    try:
        monkeypatch.setenv("RAVE_KEEP_GPU_LIBRARY_PAGES", "1")
        assert memory.release_idle_gpu_library_pages() == 0
        monkeypatch.delenv("RAVE_KEEP_GPU_LIBRARY_PAGES")
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        assert memory.release_idle_gpu_library_pages() == 0
        assert _resident_bytes(path) == len(content)
    finally:
        mapping.close()


def test_memory_bound_photos_release_them(monkeypatch) -> None:
    """The engine's policy for large photos includes the release; small photos skip it."""
    calls: list[int] = []
    monkeypatch.setattr(memory, "release_idle_gpu_library_pages", lambda: calls.append(1) or 0)
    memory.tune_allocator(memory_bound=False)
    assert not calls
    memory.tune_allocator(memory_bound=True)
    assert calls == [1] or memory._glibc() is None


HEAPS_AFTER_THREADS = r"""
import ctypes, sys, threading
from rave.inference.memory import share_one_heap, _glibc
if sys.argv[1] == "share":
    share_one_heap()
libc = _glibc()
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def allocate():
    block = libc.malloc(8 << 20)
    ctypes.memset(block, 1, 8 << 20)
    libc.free(block)
threads = [threading.Thread(target=allocate) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
report = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, report)
libc.fclose(report)
"""


@pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator")
def test_threads_share_one_heap(tmp_path) -> None:
    """After share_one_heap, threads that allocate use the main heap: malloc_info lists one
    heap, against one per thread without it (the page faults it avoids: see its docstring)."""
    import subprocess

    heaps = {}
    for mode in ("share", "default"):
        report = tmp_path / f"{mode}.xml"
        subprocess.run([sys.executable, "-c", HEAPS_AFTER_THREADS, mode, str(report)], check=True)
        heaps[mode] = report.read_text().count("<heap nr=")
    assert heaps["share"] == 1
    assert heaps["default"] > 1
