"""Loading enhancement-network weights safely.

Checkpoints are read with ``torch.load(weights_only=True)`` (or safetensors), so a file that
carries arbitrary pickled objects is refused before any code in it runs.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from rave.errors import os_reason
from rave.network.enhancer import EnhancementNet
from rave.network.refinement import LightRefinement

__all__ = [
    "CheckpointError",
    "build_enhancer",
    "extract_state_dict",
    "load_checkpoint_file",
    "load_torch_payload",
    "strip_module_prefix",
]

# Keys under which training frameworks (ours included) nest the network's weights.
_NESTED_KEYS = ("model", "state_dict", "params_ema", "params", "enhancer")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not hold this network's weights."""


def load_checkpoint_file(path: str | Path) -> dict:
    """Read a checkpoint without executing code from it.

    Args:
        path: a ``.safetensors`` file, or a PyTorch file holding only tensors and plain
            containers (a state_dict, possibly nested in a dict with metadata).

    Raises:
        CheckpointError: unreadable file, or a pickle that needs arbitrary objects.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        _check_file(path)
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as err:  # safetensors raises several unrelated types
            raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from err
    data = load_torch_payload(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(data).__name__}")
    return dict(data)


def light_refinement_of(path: str | Path, checkpoint: Mapping) -> LightRefinement | None:
    """The :class:`~rave.network.LightRefinement` a weights file asks for, if any.

    Read from a ``.safetensors`` file's ``light_refinement`` metadata (JSON text), or from a
    PyTorch checkpoint's top-level ``light_refinement`` entry (the same text).

    Args:
        path: the file ``checkpoint`` was read from.
        checkpoint: what :func:`load_checkpoint_file` returned for it.

    Raises:
        CheckpointError: the entry is there but is not a valid refinement.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get("light_refinement")
    else:
        text = checkpoint.get("light_refinement")
    if text is None:
        return None
    try:
        return LightRefinement.from_metadata(str(text), str(path))
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise CheckpointError(
            f"{path}: a folder, not a checkpoint file (give the .pt, .pth or .safetensors "
            "file in it)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:  # torch's own message blamed a damaged file
        raise CheckpointError(f"{path}: cannot be read ({os_reason(err)})") from None
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")


def load_torch_payload(path: str | Path) -> object:
    """Whatever a PyTorch file holds (a tensor, a dict...), read without running pickled code.

    The one place the package calls ``torch.load``: every reader of ``.pt``/``.pth`` files
    (checkpoints, residual vectors, prompt tensors, encoder weights) goes through it.

    Raises:
        CheckpointError: missing, empty, damaged file, or a pickle needing arbitrary objects.
    """
    path = Path(path)
    _check_file(path)
    kind = _image_kind(path)
    if kind is not None:
        # The unpickler would say "Unsupported operand 255": name the slip instead.
        raise CheckpointError(
            f"{path}: a {kind} image, not a weights file (models are given by name, which "
            "rave models lists, or as a .pt, .pth or .safetensors file)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _unpickler_reason(err)
        if reason.startswith("Unsupported global"):
            what = (
                "it pickles objects other than tensors and plain containers, which could run code"
            )
        else:  # also what a non-pickle file (text, image) looks like to the unpickler
            what = "not a PyTorch checkpoint that can be read without running pickled code"
        raise CheckpointError(f"{path}: refused to load: {what} ({reason})") from err
    except Exception as err:  # a damaged or foreign file fails in many ways (KeyError too)
        detail = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another kind "
            f"of file; {detail})"
        ) from err
    return data


def _image_kind(path: Path) -> str | None:
    """The kind of image ``path`` holds by its first bytes, or None (not an image we know)."""
    from rave.io.formats import image_kind

    try:
        with open(path, "rb") as stream:
            head = stream.read(12)
    except OSError:
        return None  # torch.load's own error says it
    return image_kind(head)


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The one useful sentence of torch's long weights-only refusal message."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        rest = text.split(marker, 1)[1].strip()
        reason = rest.split(" was not an allowed global")[0].splitlines()[0].strip()
        if reason:
            return reason
    return "disallowed pickle content"


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def extract_state_dict(checkpoint: Mapping, source: str = "checkpoint") -> dict[str, Tensor]:
    """The network's state_dict from a plain or nested checkpoint dict."""
    if checkpoint and all(isinstance(v, Tensor) for v in checkpoint.values()):
        return strip_module_prefix(checkpoint)
    for key in _NESTED_KEYS:
        nested = checkpoint.get(key)
        if isinstance(nested, Mapping) and nested:
            return extract_state_dict(nested, source)
    raise CheckpointError(f"{source}: no enhancement-network state_dict found in the file")


def _check_weights(state_dict: Mapping[str, Tensor], source: str) -> None:
    """Refuse weights that can only give a blank image: NaN/infinity, or all zero."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{source}: weight {name} holds NaN or infinite values")
    kernels = [t for t in state_dict.values() if t.is_floating_point() and t.ndim >= 2]
    if kernels and not any(bool(t.any()) for t in kernels):
        raise CheckpointError(
            f"{source}: every convolution weight is zero (a degenerate checkpoint: the "
            "output would not depend on the photo)"
        )


def build_enhancer(
    state_dict: Mapping[str, Tensor], source: str = "checkpoint", padding_mode: str = "reflect"
) -> EnhancementNet:
    """An :class:`EnhancementNet` (eval mode) holding ``state_dict``, loaded strictly."""
    _check_weights(state_dict, source)
    net = EnhancementNet(padding_mode=padding_mode)  # type: ignore[arg-type]
    weights = strip_module_prefix(state_dict)
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{source}: weights do not match the enhancement network "
            f"({_mismatch(weights, net.state_dict())})"
        ) from err
    return net.eval()


def _mismatch(found: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str:
    """What differs between two state dicts, short enough for one line (PyTorch's own
    message lists every key: hundreds of characters for another architecture)."""

    def shape(tensor: Tensor) -> str:
        return "x".join(map(str, tensor.shape)) or "scalar"

    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [
        key
        for key in expected
        if key in found
        and hasattr(found[key], "shape")
        and tuple(found[key].shape) != tuple(expected[key].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]!r}")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape, e.g. {key!r} is {shape(found[key])} in the "
            f"file, {shape(expected[key])} in the network"
        )
    return "; ".join(parts) or "tensors PyTorch would not load"
