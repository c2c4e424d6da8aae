"""Enhancement networks by name: the authors' released checkpoints, fetched on first use.

Example::

    import rave
    net = rave.load_enhancer("rave-unpaired")          # downloads once, then cached
    net = rave.load_enhancer("runs/exp1/best.pth")     # or any checkpoint file
    light_map = net(images)                            # (B, 3, H, W) -> (B, 1, H, W)

Names (``rave models`` lists them): ``default`` (weights shipped inside the package: the
model trained here), ``rave-unpaired``, ``rave-paired``, ``rave-unpaired-shifted``,
``clip-lit-unpaired``, ``clip-lit-paired``, ``clip-lit-latent-unpaired``,
``clip-lit-latent-paired`` and ``clip-lit`` (the original CLIP-LIT release).

Cache: ``$RAVE_HOME`` or the user cache folder; files are named
``<stem>-<sha256[:8]>.pth`` (e.g. ``rave_unpaired-21fb4300.pth``), so a file put there by
hand is used as long as its hash matches. ``RAVE_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rave.network.checkpoint import (
    CheckpointError,
    build_enhancer,
    extract_state_dict,
    light_refinement_of,
    load_checkpoint_file,
)
from rave.network.enhancer import EnhancementNet
from rave.zoo.download import (
    ChecksumError,
    ModelUnavailableError,
    cache_dir,
    cached_path,
    download_file,
    fetch,
    is_offline,
    sha256_file,
)
from rave.zoo.registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelInfo,
    UnknownModelError,
    ZooError,
    get_model_info,
    model_names,
    spelled_like,
)

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:  # what resources.files() is annotated with on 3.10
        from importlib.abc import Traversable

__all__ = [
    "DEFAULT_MODEL",
    "BuiltinModelMissingError",
    "CheckpointError",
    "ChecksumError",
    "ModelInfo",
    "ModelUnavailableError",
    "UnknownModelError",
    "ZooError",
    "builtin_weights_path",
    "cache_dir",
    "cached_path",
    "download_file",
    "fetch",
    "get_model_info",
    "is_offline",
    "list_models",
    "load_enhancer",
    "looks_like_path",
    "model_names",
    "model_path",
    "resolve_checkpoint",
    "sha256_file",
]

# Files looked for, in order, for the built-in ``default`` model inside the package.
BUILTIN_FILENAMES = ("default.safetensors", "default.pth")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt", ".bin")


class BuiltinModelMissingError(ModelUnavailableError):
    """``default`` was asked for, but this version of the package ships no weights."""


def list_models() -> list[ModelInfo]:
    """Every model known by name, ``default`` first."""
    return list(MODELS.values())


def _builtin_weights_dir() -> Traversable:
    # importlib.resources rather than __file__ so that the lookup also works for packages
    # installed in unusual ways (zip files, custom importers).
    return resources.files("rave.zoo").joinpath("weights")


def builtin_weights_path() -> Path | None:
    """Path of the weights shipped for ``default``, or ``None`` when none are shipped."""
    folder = _builtin_weights_dir()
    for filename in BUILTIN_FILENAMES:
        entry = folder.joinpath(filename)
        if not entry.is_file():
            continue
        if isinstance(entry, Path):
            return entry
        # Package not on a file system (e.g. a zip): keep a copy in the cache so that
        # callers get a real path that stays valid.
        copy = cache_dir() / f"builtin-{filename}"
        from rave.io.atomic import atomic_write

        with resources.as_file(entry) as real, open(real, "rb") as source:
            atomic_write(copy, lambda stream: shutil.copyfileobj(source, stream, 1 << 20))
        return copy
    return None


def model_path(name: str, download: bool = True) -> Path:
    """Local file holding the weights of the model called ``name``.

    Args:
        name: a model name (see :func:`list_models`).
        download: fetch the file if it is not cached (never when ``RAVE_OFFLINE=1``).

    Raises:
        UnknownModelError: not a known name (the message lists them).
        BuiltinModelMissingError: ``default`` asked for, but no weights are shipped.
        ModelUnavailableError: not cached and cannot be downloaded.
        ChecksumError: the download does not match the pinned sha256.
    """
    info = get_model_info(name)
    if not info.builtin:
        return fetch(info, download=download)
    path = builtin_weights_path()
    if path is None:
        others = ", ".join(n for n in MODELS if n != DEFAULT_MODEL)
        raise BuiltinModelMissingError(
            f"no built-in model is shipped in this version of rave (looked for "
            f"{' or '.join(BUILTIN_FILENAMES)} in {_builtin_weights_dir()}). Pass "
            f"--model NAME|PATH instead (model= in Python), NAME being one of: {others}"
        )
    return path


def looks_like_path(name_or_path: str | Path) -> bool:
    """True if the argument is meant as a file rather than a model name.

    A :class:`~pathlib.Path`, an existing file, anything with a path separator, and anything
    ending in a checkpoint suffix (``.pth``, ``.pt``, ``.safetensors``, ...) is a path.
    Known model names take precedence over a same-named file in the current folder; write
    ``./NAME`` to load such a file.
    """
    if isinstance(name_or_path, Path):
        return True
    text = str(name_or_path)
    if text in MODELS:
        return False
    separators = {"/", os.sep, os.altsep} - {None}
    return (
        any(sep in text for sep in separators)
        or text.startswith("~")
        or text.lower().endswith(CHECKPOINT_SUFFIXES)
        or Path(text).is_file()
    )


def resolve_checkpoint(name_or_path: str | Path, *, download: bool = True) -> Path:
    """The file to load for a model name or a checkpoint path (not checked for content)."""
    if looks_like_path(name_or_path):
        return Path(name_or_path).expanduser()
    return model_path(str(name_or_path), download=download)


def _suggest_model_for_missing_file(path: Path) -> None:
    """A missing file named like a zoo model (the authors' ``rave_unpaired.pth``, the
    cache's ``rave_unpaired-21fb4300.pth``): say which name loads it (or downloads it)."""
    stem = path.name.split(".")[0]
    for candidate in (stem, stem.rsplit("-", 1)[0]):  # without the cache's hash suffix
        name = spelled_like(candidate)
        if name is not None:
            how = "built in" if MODELS[name].builtin else "downloaded on first use"
            raise CheckpointError(
                f"{path}: no such checkpoint file; to use the model of that name pass "
                f"{name!r} ({how})"
            )


def load_enhancer(
    name_or_path: str | Path, *, device: str | torch.device = "cpu"
) -> EnhancementNet:
    """The enhancement network for a model name or a checkpoint file, ready for inference.

    Weights are read without executing pickled code and loaded strictly (every key must
    match; a ``module.`` prefix and training checkpoints that nest the weights under
    ``"model"`` are accepted). The network is in eval mode with reflect padding. A file
    that records a light-map refinement (``light_refinement`` metadata: the built-in
    ``default``) sets :attr:`~rave.network.EnhancementNet.light_refinement`, which the
    engines (:mod:`rave.inference`, the ONNX export) apply after the network.

    Args:
        name_or_path: a name from :func:`list_models` (downloaded on first use) or the path
            of a ``.pth``/``.pt``/``.safetensors`` checkpoint.
        device: where to put the network: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``,
            ``"auto"`` (CUDA, then MPS, then the CPU) or a ``torch.device``.

    Returns:
        An :class:`~rave.network.EnhancementNet` mapping a ``(B, 3, H, W)`` batch in [0, 1]
        to its light map ``(B, 1, H, W)`` (non-negative); enhance with
        :func:`rave.network.apply_light_map`.

    Raises:
        UnknownModelError: neither a known name nor a path (lists the names).
        ModelUnavailableError: a name whose weights are not cached and cannot be fetched.
        CheckpointError: the file is missing, unreadable, unsafe, or holds other weights.
        DeviceError: an unknown device name or one this machine lacks (checked first).
    """
    from rave.devices import resolve_device

    target = resolve_device(device)
    path = resolve_checkpoint(name_or_path)
    if looks_like_path(name_or_path) and not path.exists():
        _suggest_model_for_missing_file(path)
    source = str(path) if looks_like_path(name_or_path) else f"model {name_or_path!r} ({path})"
    checkpoint = load_checkpoint_file(path)
    state_dict = extract_state_dict(checkpoint, source=source)
    net = build_enhancer(state_dict, source=source, padding_mode="reflect")
    net.light_refinement = light_refinement_of(path, checkpoint)
    return net.to(target).eval()
