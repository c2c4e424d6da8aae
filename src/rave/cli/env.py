"""``rave env``: what rave runs on, for bug reports and for "why is it slow here?"."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import click

__all__ = ["env_command"]

_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "opencv-python-headless", "open_clip_torch")
# What the extras add (rave export, raw, eval, train): a bug report about one of those
# commands needs these versions as much as torch's.
_EXTRA_PACKAGES = (
    "safetensors",
    "pillow-heif",
    "onnx",
    "onnxruntime",
    "rawpy",
    "timm",
    "lpips",
    "scikit-image",
    "scipy",
)


# Other distributions that install the same module under another name.
_ALTERNATIVES = {
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "opencv-python-headless": ("opencv-python", "opencv-contrib-python-headless"),
}


def _version(package: str) -> str:
    for name in (package, *_ALTERNATIVES.get(package, ())):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        return version if name == package else f"{version} ({name})"
    return "not installed"


def _cache_row(folder: object, problem: str | None, offline: bool) -> str:
    notes = [f"unusable: {problem}"] if problem else []
    notes += ["RAVE_OFFLINE: no downloads"] if offline else []
    return f"{folder}  ({'; '.join(notes)})" if notes else str(folder)


def _cpu() -> str:
    """The processor's name and the vector extensions the kernel can use (Linux: from
    /proc/cpuinfo; elsewhere the machine type)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    name = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx2", "fma", "neon", "asimd") if f in flags]
    return f"{name} ({platform.machine()}{', ' + ' '.join(simd) if simd else ''})"


@click.command("env")
@click.option("--no-build", is_flag=True, help="Do not build the Winograd kernel if it is missing.")
def env_command(no_build: bool) -> None:
    """Versions, devices, caches and the convolution backend rave will use."""
    import torch

    from rave import __version__
    from rave.inference import winograd
    from rave.inference.tiled import select_backend
    from rave.zoo.download import cache_dir, cache_problem, is_offline

    rows = [
        ("rave", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("CPU", _cpu()),
    ]
    rows += [(name, _version(name)) for name in _PACKAGES + _EXTRA_PACKAGES]
    cuda = (
        f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else "not available"
    )
    rows += [
        ("CPU threads", f"{torch.get_num_threads()} (of {os.cpu_count()} logical CPUs)"),
        ("CUDA", cuda),
        ("model cache", _cache_row(cache_dir(), cache_problem(), is_offline())),
    ]
    forced = os.environ.get("RAVE_CONV_BACKEND")
    if no_build and not forced:
        rows.append(("CPU convolutions", "not checked (--no-build)"))
    else:
        try:
            backend = select_backend("cpu")
        except ValueError as error:
            backend = f"error: {error}"
        if forced:
            backend += " (forced by RAVE_CONV_BACKEND)"
        rows += [("CPU convolutions", backend), ("Winograd kernel", winograd.kernel_status())]
    # Variables that change what rave does (backend, kernel tile, overlap, cache...).
    settings = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("RAVE_"))
    rows.append(("RAVE_* variables", ", ".join(settings) or "none set"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
