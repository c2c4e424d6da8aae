"""``rave env``: what rave runs on, for bug reports and for "why is it slow here?"."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import click

__all__ = ["env_command"]

_PACKAGES = ("torch", "torchvision", "numpy", "pillow", "opencv-python-headless", "open_clip_torch")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@click.command("env")
@click.option("--no-build", is_flag=True, help="Do not build the Winograd kernel if it is missing.")
def env_command(no_build: bool) -> None:
    """Versions, devices, caches and the convolution backend rave will use."""
    import torch

    from rave import __version__
    from rave.inference import winograd
    from rave.inference.tiled import select_backend
    from rave.zoo.download import cache_dir, is_offline

    rows = [
        ("rave", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", f"{platform.platform()} {platform.machine()}"),
    ]
    rows += [(name, _version(name)) for name in _PACKAGES]
    cuda = (
        f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}"
        if torch.cuda.is_available()
        else "not available"
    )
    rows += [
        ("CPU threads", f"{torch.get_num_threads()} (of {os.cpu_count()} logical CPUs)"),
        ("CUDA", cuda),
        ("model cache", f"{cache_dir()}{'  (RAVE_OFFLINE: no downloads)' if is_offline() else ''}"),
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
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")
