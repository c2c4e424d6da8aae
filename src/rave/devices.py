"""Where and how the network runs: device names and tile sizes, checked the same way by the
command line (``--device``, ``--tile``) and the Python API (``device=``, ``tile=``).

torch is imported only when a device is resolved, so that the command line's option parsing
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["MIN_TILE", "DeviceError", "available_devices", "parse_tile", "resolve_device"]

MIN_TILE = 16
"""Smallest tile size in pixels (smaller tiles are all halo)."""


class DeviceError(ValueError):
    """An unknown device, or one this machine does not have; ``str()`` is one line."""


def available_devices() -> list[str]:
    """The device names that work on this machine: ``auto``, ``cpu``, then GPUs."""
    import torch

    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names += ["cuda"] + [f"cuda:{index}" for index in range(count)]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str | torch.device) -> torch.device:
    """A ``torch.device`` for a device name; ``auto`` picks CUDA, then Apple MPS, then CPU.

    Raises:
        DeviceError: unknown name, or a device this machine lacks; the message lists the
            names that work here.
    """
    import torch

    text = str(name).strip().lower()
    choices = ", ".join(available_devices())
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; choose one of: {choices}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"CUDA is not available on this machine; choose one of: {choices}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"there is no {device}; choose one of: {choices}")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DeviceError(f"Apple MPS is not available here; choose one of: {choices}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"rave does not run on {device.type!r}; choose one of: {choices}")
    return device


def parse_tile(value: int | str | None) -> int | str | None:
    """A tile setting: ``"auto"``, None (whole image at once) or a size of at least 16 pixels.

    Accepts the command line's spellings too (``"none"``, ``"off"``, ``"0"``, ``"512"``).

    Raises:
        ValueError: anything else (bool, float, negative or too small a size).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"tile must be 'auto', None or a whole number of pixels, got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in ("none", "off", "0"):
            return None
        try:
            value = int(text)
        except ValueError:
            raise ValueError(
                f"tile {value!r} is not 'auto', 'none' or a whole number of pixels"
            ) from None
    if value == 0:
        return None
    if value < MIN_TILE:
        raise ValueError(f"tile size {value} is too small (at least {MIN_TILE} pixels)")
    return value
