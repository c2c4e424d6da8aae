"""A loaded model and how to run it, kept for many photos: :class:`Enhancer`.

In the spirit of rembg's sessions: load once, then enhance images or files. ``rave.enhance``
and ``rave enhance`` both go through it, so the read-enhance-write pipeline (and the
allocator policy around each photo) exists once::

    import rave
    enhancer = rave.Enhancer("rave-unpaired", device="auto", tile="auto")
    enhanced = enhancer.enhance(image)               # PIL image, numpy array or tensor
    notes = enhancer.enhance_file("IMG_0001.HEIC", "out/IMG_0001.heic")
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from rave.devices import parse_tile, resolve_device

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import Tensor, nn

__all__ = ["Enhancer", "output_dtype"]

# When the engine must stop: a time.monotonic() value or a function returning True.
Deadline = float | Callable[[], bool] | None


def output_dtype(input_dtype: np.dtype, fmt: str) -> tuple[type, str | None]:
    """The sample type a photo decoded as ``input_dtype`` is written in as ``fmt``.

    Returns:
        ``(dtype, note)``: the photo's own depth where the format holds it; float stays
        float, and :func:`rave.io.write_photo` reduces it, with its own note saying to
        what, for formats without float samples (all but TIFF); 16-bit as 8-bit with a
        one-line note where the format cannot hold it.
    """
    from rave.io import SIXTEEN_BIT_FORMATS

    if input_dtype == np.float32:
        return np.float32, None
    if input_dtype == np.uint16:
        if fmt in SIXTEEN_BIT_FORMATS:
            return np.uint16, None
        return np.uint8, f"16-bit input written as 8-bit {fmt.upper()}"
    return np.uint8, None


class Enhancer:
    """An enhancement model loaded on a device, with its tiling, ready for many images.

    Args:
        model: a model name (``rave models`` lists them), a checkpoint path, or an already
            loaded network.
        device: ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or ``"mps"``; ignored for a loaded network.
        tile: ``"auto"`` bounds memory, an int (at least 16) sets the tile size, None runs
            the whole image at once; the result is the same.

    Raises:
        rave.devices.DeviceError: unknown device or one this machine lacks (one line).
        ValueError: a tile setting the command line would refuse too.
        rave.zoo.ZooError / rave.network.checkpoint.CheckpointError: the model cannot be
            found or loaded.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | nn.Module = "default",
        *,
        device: str | torch.device = "auto",
        tile: int | str | None = "auto",
    ) -> None:
        from torch import nn

        from rave.api import get_model

        self.tile = parse_tile(tile)
        if not isinstance(model, (str, os.PathLike, nn.Module)):
            raise TypeError(
                "model must be a model name, a checkpoint path or an nn.Module, got "
                f"{type(model).__name__}"
            )
        if isinstance(model, nn.Module):
            _check_engine_layers(model)
            self.net = model
        else:
            name = model if isinstance(model, str) else Path(model)
            self.net = get_model(name, resolve_device(device))
        self.model = model
        self.device = next(self.net.parameters()).device

    def __repr__(self) -> str:
        name = self.model if isinstance(self.model, (str, Path)) else type(self.model).__name__
        return f"Enhancer(model={str(name)!r}, device={str(self.device)!r}, tile={self.tile!r})"

    @functools.cached_property
    def model_sha256(self) -> str:
        """SHA-256 identifying the weights: the checkpoint file's, or of the tensors' bytes."""
        from torch import nn

        if not isinstance(self.model, nn.Module):
            from rave.zoo import get_model_info, looks_like_path, resolve_checkpoint, sha256_file

            # As __init__ loaded it: a name, or any os.PathLike as a Path.
            model = self.model if isinstance(self.model, str) else Path(self.model)
            if not looks_like_path(model):
                pinned = get_model_info(str(model)).sha256
                if pinned is not None:
                    return pinned  # the loaded file was checked against it
            return sha256_file(resolve_checkpoint(model, download=False))
        digest = hashlib.sha256()
        for name, tensor in sorted(self.net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    # The same kind out as in, for type checkers as for rave.enhance.
    @overload
    def enhance(
        self, image: Image.Image, *, output: None = ..., strength: float = ...
    ) -> Image.Image: ...
    @overload
    def enhance(
        self, image: np.ndarray, *, output: None = ..., strength: float = ...
    ) -> np.ndarray: ...
    @overload
    def enhance(self, image: Tensor, *, output: None = ..., strength: float = ...) -> Tensor: ...
    @overload
    def enhance(
        self, image: str | os.PathLike[str], *, output: None = ..., strength: float = ...
    ) -> np.ndarray: ...
    @overload
    def enhance(
        self,
        image: str | os.PathLike[str],
        *,
        output: str | os.PathLike[str],
        strength: float = ...,
    ) -> Path: ...
    @overload  # a union of the above (as rave.enhance passes on)
    def enhance(
        self,
        image: Image.Image | np.ndarray | Tensor | str | os.PathLike[str],
        *,
        output: str | os.PathLike[str] | None = ...,
        strength: float = ...,
    ) -> Any: ...
    def enhance(
        self,
        image: Any,
        *,
        output: str | os.PathLike[str] | None = None,
        strength: float = 1.0,
    ) -> Any:
        """Enhance an image and return the same kind (see :func:`rave.enhance`).

        A ``str``/``Path`` is read with :func:`rave.io.read_photo` (upright, at its bit
        depth); the enhanced pixels are returned as a numpy array, or written to ``output``
        (format from its suffix, metadata kept) and ``output`` returned as a ``Path``.
        """
        from PIL import Image
        from torch import Tensor

        from rave.api import _enhance_pil, _enhance_torch, enhance_array
        from rave.inference.memory import return_freed_memory

        try:
            if isinstance(image, (str, os.PathLike)):
                if output is not None:
                    self.enhance_file(image, output, strength=strength)
                    return Path(output)
                from rave.io import read_photo

                return self.enhance_pixels(read_photo(image).pixels, strength=strength)
            if output is not None:
                raise ValueError("output= is for file inputs; save the returned image instead")
            if isinstance(image, Image.Image):
                self._tune_allocator(image.height, image.width)
                return _enhance_pil(self.net, image, self.tile, strength)
            if isinstance(image, np.ndarray):
                if image.ndim >= 2:  # else enhance_array says which layouts it takes
                    self._tune_allocator(*image.shape[:2])
                return enhance_array(self.net, image, tile=self.tile, strength=strength)
            if isinstance(image, Tensor):
                if image.ndim >= 2:
                    self._tune_allocator(image.shape[-2], image.shape[-1])
                return _enhance_torch(self.net, image, self.tile, strength)
        finally:
            # Calls on images of varying sizes leave freed memory scattered in glibc's heap,
            # which it keeps: RSS grew 979 -> 1112 MB over 300 calls of 16-400 px, flat at
            # 850 MB when handed back after each call (benchmarks/soak_memory.py).
            return_freed_memory()
        raise TypeError(_unsupported_image(image))

    def enhance_pixels(
        self,
        pixels: np.ndarray,
        *,
        out_dtype: np.dtype | type | None = None,
        in_place: bool = False,
        progress: Any = None,
        strength: float = 1.0,
        light_map: np.ndarray | None = None,
        deadline: Deadline = None,
    ) -> np.ndarray:
        """Enhance ``(H, W[, C])`` pixels under the engine's memory policy.

        Args:
            pixels: as :func:`rave.api.enhance_array` takes them.
            out_dtype: dtype of the result (default that of ``pixels``).
            in_place: write into ``pixels`` when it can hold the result (one photo's worth
                of memory less).
            progress: a callable ``progress(done, total)`` called after each tile.
            strength: ``S >= 0``; the result is ``clamp(I / L**S, 0, 1)``.
            light_map: ``(H, W)`` light map of these pixels from :meth:`light_map`: applied
                without running the network (e.g. another strength of the same photo).
            deadline: a ``time.monotonic()`` value, or a function returning True when the
                run must stop; checked between tiles
                (:class:`rave.inference.DeadlineExceeded`).
        """
        from rave.api import enhance_array

        # Else enhance_array says which layouts (and that a numpy array) it takes.
        if isinstance(pixels, np.ndarray) and pixels.ndim >= 2:
            self._tune_allocator(pixels.shape[0], pixels.shape[1])
        return enhance_array(
            self.net,
            pixels,
            tile=self.tile,
            out_dtype=out_dtype,
            in_place=in_place,
            progress=progress,
            strength=strength,
            light_map=light_map,
            deadline=deadline,
        )

    def light_map(
        self, pixels: np.ndarray, *, progress: Any = None, deadline: Deadline = None
    ) -> np.ndarray:
        """The network's ``(H, W)`` float32 light map ``L`` of ``(H, W[, C])`` pixels.

        Apply it at any strength with ``enhance_pixels(pixels, light_map=L, strength=S)``
        or ``enhance_file(..., light_map=L)``; the network runs only here. ``progress``: a
        callable ``progress(done, total)`` called after each tile.
        """
        from rave.api import light_map_array

        if isinstance(pixels, np.ndarray) and pixels.ndim >= 2:
            self._tune_allocator(pixels.shape[0], pixels.shape[1])
        return light_map_array(
            self.net, pixels, tile=self.tile, progress=progress, deadline=deadline
        )

    def _tune_allocator(self, height: int, width: int) -> None:
        """The engine's memory policy for a photo of this size (glibc; see inference.memory)."""
        from rave.inference import is_memory_bound
        from rave.inference.memory import tune_allocator

        tune_allocator(is_memory_bound(height, width, self.device))

    def enhance_file(
        self,
        source: str | os.PathLike[str],
        target: str | os.PathLike[str],
        *,
        format: str | None = None,
        quality: int = 95,
        max_pixels: int | None = None,
        progress: Any = None,
        strength: float = 1.0,
        light_map: np.ndarray | None = None,
        deadline: Deadline = None,
        replace_source: bool = False,
    ) -> list[str]:
        """Read ``source``, enhance it and write ``target`` atomically, metadata kept.

        Args:
            source: any photo :func:`rave.io.read_photo` reads (JPEG, PNG, TIFF, WebP,
                HEIC, camera RAW...).
            target: the file to write; its folder is created.
            format: ``"jpg"``, ``"png"``, ``"tif"``, ``"webp"``, ``"bmp"`` or ``"heic"``
                (or ``"jpeg"``, ``"tiff"``, ``"heif"``, as ``rave enhance --format``
                takes); default from the suffix of ``target``.
            quality: JPEG/WebP/HEIC quality, an int from 1 to 100.
            max_pixels: decompression-bomb limit, at least 1 (default
                :data:`rave.io.DEFAULT_MAX_PIXELS`).
            progress: a callable ``progress(done, total)`` called after each tile.
            strength: ``S >= 0``; the result is ``clamp(I / L**S, 0, 1)``.
            light_map, deadline: as in :meth:`enhance_pixels` (the light map of ``source``
                as :func:`rave.io.read_photo` decodes it).
            replace_source: allow ``target`` to be ``source`` itself (the photo is then
                replaced by its enhanced version); refused by default, so that a slip of
                a path never costs the original.

        Returns:
            Notes on conversions made while reading and writing (one line each).

        Raises:
            rave.io.PhotoError: unreadable source (one line naming it).
            ValueError: a bad option, or ``target`` is ``source`` without
                ``replace_source``; nothing is read or written then.
            OSError: the target cannot be written (nothing is left behind).
        """
        from rave.inference.memory import return_freed_memory
        from rave.inference.pipeline import end_turn, wait_for_turn
        from rave.io import DEFAULT_MAX_PIXELS, format_for_suffix, read_photo, write_photo
        from rave.io.metadata import drop_exif_thumbnail
        from rave.network.enhancer import check_strength

        target = Path(target)
        # The suffix table also knows the long names ("jpeg", "tiff", "heif").
        fmt = format_for_suffix(f".{format}" if format else target.suffix)
        if fmt is None:
            raise ValueError(f"{target}: unknown output format {format or target.suffix!r}")
        _check_quality(quality)
        check_strength(strength)  # before the photo is read, not after
        if max_pixels is not None and (isinstance(max_pixels, bool) or max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
        if not replace_source and _same_file(source, target):
            raise ValueError(
                f"{target}: is the source photo itself; pass replace_source=True to replace it"
            )
        photo = read_photo(
            source, max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        )
        notes = list(photo.notes)
        pixels, photo.pixels = photo.pixels, np.empty(0, np.uint8)  # hold one reference only
        out_dtype, note = output_dtype(pixels.dtype, fmt)
        notes += [note] if note else []
        # In an overlapped batch (rave.inference.pipeline) one photo uses the network at a
        # time, in input order, while others decode or encode; elsewhere these are no-ops.
        wait_for_turn()
        try:
            # In place where the result has the input's type: one photo's worth less memory.
            enhanced = self.enhance_pixels(
                pixels,
                out_dtype=out_dtype,
                in_place=True,
                progress=progress,
                strength=strength,
                light_map=light_map,
                deadline=deadline,
            )
            del pixels
            return_freed_memory()  # tile buffers kept for speed, not needed while encoding
        finally:
            end_turn()
        notes += write_photo(
            target,
            enhanced,
            format=fmt,
            icc_profile=photo.icc_profile,
            exif=drop_exif_thumbnail(photo.exif) if photo.exif else None,  # the original's
            quality=quality,
            xmp=photo.xmp,
            dpi=photo.dpi,
            lossless=photo.lossless,
        )
        return notes


def _check_engine_layers(model: nn.Module) -> None:
    """TypeError for a module the engine cannot run (it reads EnhancementNet's layers by
    name), instead of an AttributeError or StopIteration at the first image."""
    from rave.network.enhancer import FEATURE_LAYERS, HEAD_LAYERS

    needed = [name for name, _ in FEATURE_LAYERS + HEAD_LAYERS] + ["PPM1", "light_refinement"]
    missing = [name for name in needed if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"model must be an enhancement network (rave.load_enhancer, "
            f"rave.network.EnhancementNet), got {type(model).__name__} without "
            f"{', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}"
        )


def _unsupported_image(image: object) -> str:
    """What :meth:`Enhancer.enhance` says of an input it does not take, and what to do."""
    message = (
        "expected a PIL image, numpy array, torch tensor or file path (str or os.PathLike), "
        f"got {type(image).__name__}"
    )
    if isinstance(image, (bytes, bytearray, memoryview)):
        return (
            f"{message}: for a path in bytes pass os.fsdecode(path); for encoded image "
            "data pass PIL.Image.open(io.BytesIO(data))"
        )
    if hasattr(image, "read"):
        return f"{message}: pass the file's path, or PIL.Image.open(file)"
    return message


def _check_quality(quality: object) -> None:
    """Refuse what ``rave enhance --quality`` refuses: anything but an int from 1 to 100."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ValueError(f"quality must be an int from 1 to 100, got {quality!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be from 1 to 100, got {quality}")


def _same_file(source: str | os.PathLike[str], target: Path) -> bool:
    """Whether writing ``target`` would replace ``source`` (also via links or case folding)."""
    try:
        return target.exists() and os.path.samefile(source, target)
    except OSError:
        return False  # an unreadable source fails on reading, with its own message
