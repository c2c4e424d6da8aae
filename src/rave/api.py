"""The one-call Python API: ``rave.enhance(image)``.

Example::

    import rave
    from PIL import Image

    enhanced = rave.enhance(Image.open("backlit.jpg"), model="rave-unpaired")
    enhanced.save("enhanced.jpg")

Images of every common kind go in and come back as the same kind: PIL images (same mode),
numpy arrays (same dtype and shape) and torch tensors (same shape, dtype and device).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast, overload

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from rave.inference import enhance_tensor

if TYPE_CHECKING:
    from rave.network import EnhancementNet

__all__ = ["clear_model_cache", "enhance", "enhance_array", "get_model", "light_map_array"]

ImageLike = TypeVar("ImageLike", Image.Image, np.ndarray, Tensor)

# (name or resolved path + mtime, device) -> network; loading takes ~0.1 s and a download on
# first use, so repeated rave.enhance() calls reuse the network.
_MODEL_CACHE: dict[tuple[str, str], nn.Module] = {}
_CACHE_LOCK = threading.Lock()


def _cache_key(model: str | Path, device: torch.device) -> tuple[str, str]:
    path = Path(model).expanduser()
    if path.is_file():
        # A path: key on the file itself, so that a retrained checkpoint is picked up.
        resolved = path.resolve()
        return f"{resolved}@{resolved.stat().st_mtime_ns}", str(device)
    return str(model), str(device)


def get_model(
    model: str | Path | nn.Module = "default", device: str | torch.device = "cpu"
) -> nn.Module:
    """The enhancement network for a name, a checkpoint path or a loaded module, cached.

    Args:
        model: a model name (``rave models`` lists them), a checkpoint path, or an already
            loaded network (returned as is, moved to nothing).
        device: where to load a named or file model.

    Raises:
        rave.zoo.ZooError: unknown or unavailable name (``default`` when no built-in
            model is shipped).
        rave.network.checkpoint.CheckpointError: unreadable or unsafe checkpoint file.
    """
    if isinstance(model, nn.Module):
        return model
    from rave.devices import resolve_device

    device = resolve_device(device)
    key = _cache_key(model, device)
    with _CACHE_LOCK:
        if key not in _MODEL_CACHE:
            from rave.zoo import load_enhancer

            _MODEL_CACHE[key] = load_enhancer(model, device=device)
        return _MODEL_CACHE[key]


def clear_model_cache() -> None:
    """Forget the networks loaded by :func:`enhance` / :func:`get_model`."""
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()


def _engine_net(net: nn.Module) -> EnhancementNet:
    # The API takes any loaded module; the engine reads EnhancementNet's layers by name.
    return cast("EnhancementNet", net)


def _as_batch(pixels: np.ndarray) -> Tensor:
    """``(H, W, C)`` numpy pixels as a ``(1, C, H, W)`` tensor view sharing their memory."""
    with warnings.catch_warnings():
        # Read-only input (e.g. np.asarray of a PIL image) is only ever read: no copy.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def enhance_array(
    net: nn.Module,
    pixels: np.ndarray,
    *,
    tile: int | str | None = "auto",
    out_dtype: np.dtype | type | None = None,
    in_place: bool = False,
    progress: Callable[[int, int], None] | None = None,
    strength: float = 1.0,
    light_map: np.ndarray | None = None,
    deadline: float | Callable[[], bool] | None = None,
) -> np.ndarray:
    """Enhance an image held in a numpy array; the array layout decides what is enhanced.

    Grey images are enhanced as grey (the value replicated to three channels, one channel
    taken back); an alpha channel is copied through untouched. Integer pixels go to the
    network as integer views and come back through a preallocated integer output, so no
    full-size float copy of the image is made.

    Args:
        net: the enhancement network.
        pixels: ``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)``
            RGB or ``(H, W, 4)`` RGBA; ``uint8`` (value / 255), ``uint16`` (value / 65535)
            or floating point in [0, 1].
        tile: tile size for :func:`rave.inference.enhance_tensor` (``"auto"``, an int, or
            None for the whole image at once).
        out_dtype: dtype of the result (``uint8``, ``uint16`` or a float type); default
            the dtype of ``pixels``. Integer results are ``round(x * 255)`` or
            ``round(x * 65535)`` of the enhanced value ``x`` in [0, 1].
        in_place: write the result into ``pixels`` itself when it can hold it (colour,
            writeable, of dtype ``out_dtype``), saving one photo's worth of memory (144 MB
            for a 24 MP 16-bit photo); otherwise a new array is returned as usual.
        progress: called as ``progress(done, total)`` after each tile.
        strength: ``S >= 0``, the result is ``clamp(I / L**S, 0, 1)``: 0 is the input, 1
            (default) the paper's output, above 1 stronger.
        light_map: ``(H, W)`` float32 light map of these pixels (from
            :func:`rave.inference.predict_light_map` or :func:`light_map_array`): applied
            without running ``net``.
        deadline: a ``time.monotonic()`` value, or a function returning True when the run
            must stop; checked between tiles (:class:`rave.inference.DeadlineExceeded`).

    Returns:
        An array of the same shape as ``pixels`` and dtype ``out_dtype`` (``pixels``
        itself when enhanced in place).

    Raises:
        TypeError: not a numpy array, or bool pixels (a mask: pass 0/255 as uint8).
        ValueError: another dtype or layout, or float values outside [0, 1] (e.g. on a
            0-255 scale: divide by 255 first) or not finite.
    """
    _require_array(pixels)
    out_dtype = np.dtype(out_dtype or pixels.dtype)
    pixels = _checked_pixels(pixels)
    if out_dtype.kind not in "uf" or (out_dtype.kind == "u" and out_dtype.itemsize > 2):
        raise ValueError(f"out_dtype must be uint8, uint16 or float, got {out_dtype}")
    if pixels.ndim == 2:
        grey = enhance_array(
            net,
            pixels[:, :, None],
            tile=tile,
            out_dtype=out_dtype,
            progress=progress,
            strength=strength,
            light_map=light_map,
            deadline=deadline,
        )
        return np.ascontiguousarray(grey[:, :, 0])
    pixels, image = _network_view(pixels)
    height, width, channels = pixels.shape
    colour = 1 if channels <= 2 else 3
    # Computed in native byte order (torch reads no other); out_dtype's order at the end.
    compute_dtype = out_dtype.newbyteorder("=") if out_dtype.kind == "u" else np.dtype(np.float32)
    kept_light = None
    if light_map is not None:
        kept_light = torch.from_numpy(_checked_light_map(light_map, height, width))[None, None]
    engine = functools.partial(
        enhance_tensor,
        _engine_net(net),
        tile=tile,
        strength=strength,
        light_map=kept_light,
        deadline=deadline,
        progress=progress,
    )
    if (
        in_place
        and colour == 3
        and pixels.dtype == compute_dtype == out_dtype  # not a big-endian out_dtype
        and pixels.flags.writeable
    ):
        # The engine holds each tile's result back until no later tile reads under it.
        engine(image, out=image)
        return pixels
    result = np.empty((height, width, max(channels, 3)), dtype=compute_dtype)
    out = _as_batch(result)[:, :3]
    engine(image, out=out)
    if colour == 1:
        result = result[:, :, :channels]  # grey (all three channels agree), alpha slot
    if channels in (2, 4):
        result[:, :, -1] = _convert_alpha(pixels[:, :, -1], compute_dtype)
    return np.ascontiguousarray(result.astype(out_dtype, copy=False))


def _checked_light_map(light_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A light map given by the caller as float32, refused (naming it, not the model's
    weights) unless ``(H, W)`` like the pixels, finite, non-negative and somewhere > 0."""
    light = np.asarray(light_map, np.float32)
    if light.shape != (height, width):
        raise ValueError(
            f"light_map must be (H, W) = ({height}, {width}) like the pixels, got {light.shape}"
        )
    if not np.isfinite(light).all():
        raise ValueError("light_map has non-finite values (NaN or infinity)")
    if (light < 0).any() or not (light > 0).any():
        raise ValueError(
            "light_map must be >= 0 and not zero everywhere, as Enhancer.light_map gives; "
            f"this one spans [{float(light.min()):.4g}, {float(light.max()):.4g}]"
        )
    return light


def _require_array(pixels: object) -> None:
    """TypeError naming what came instead of a numpy array (not an AttributeError later)."""
    if not isinstance(pixels, np.ndarray):
        raise TypeError(
            f"pixels must be a numpy array (H, W[, C]), got {type(pixels).__name__}; "
            "Enhancer.enhance and rave.enhance take PIL images and tensors"
        )


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` if its dtype and values are usable, in native byte order, made
    contiguous if flipped."""
    _require_array(pixels)
    if pixels.dtype == np.bool_:
        raise TypeError(_BOOL_PIXELS.format(kind="array", cast="mask.astype(np.uint8) * 255"))
    if pixels.dtype.kind not in "uf" or (pixels.dtype.kind == "u" and pixels.itemsize > 2):
        raise ValueError(f"pixels must be uint8, uint16 or float, got {pixels.dtype}")
    if pixels.dtype.kind == "f":
        _check_unit_range(pixels)
    if not pixels.dtype.isnative:
        # Big-endian samples (e.g. '>u2' from a FITS or raw dump): torch reads native only.
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    if any(stride < 0 for stride in pixels.strides):
        # Flipped views (OpenCV's BGR as a[..., ::-1]): torch cannot wrap negative strides.
        pixels = np.ascontiguousarray(pixels)
    return pixels


def _network_view(pixels: np.ndarray) -> tuple[np.ndarray, Tensor]:
    """The pixels (float32 if float) and the ``(1, 3, H, W)`` view the network reads.

    ``pixels`` is ``(H, W, 1|2|3|4)``: grey (with or without alpha) is expanded to three
    equal channels without a copy, alpha is left out.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"pixels must be (H, W) or (H, W, 1|2|3|4), got {pixels.shape}")
    if pixels.dtype.kind == "f" and pixels.dtype != np.float32:
        pixels = pixels.astype(np.float32)
    colour = 1 if pixels.shape[2] <= 2 else 3
    image = _as_batch(pixels)[:, :colour]
    if colour == 1:
        image = image.expand(-1, 3, -1, -1)  # a view: grey enhanced as grey
    return pixels, image


def light_map_array(
    net: nn.Module,
    pixels: np.ndarray,
    *,
    tile: int | str | None = "auto",
    progress: Callable[[int, int], None] | None = None,
    deadline: float | Callable[[], bool] | None = None,
) -> np.ndarray:
    """The network's light map ``L`` of an image held in a numpy array.

    Keep it to apply the model at several strengths without running the network again
    (``enhance_array(..., light_map=L, strength=S)``), as ``rave serve``'s slider does.

    Args:
        net: the enhancement network.
        pixels: as :func:`enhance_array` takes them (grey and alpha handled the same way).
        tile: as in :func:`enhance_array`; the light map does not depend on it.
        progress: called as ``progress(done, total)`` after each tile.
        deadline: as in :func:`enhance_array`.

    Returns:
        ``(H, W)`` float32 light map, positive for the shipped models; it may exceed 1
        where the model darkens (the built-in ``default`` does near highlights).
    """
    from rave.inference import predict_light_map

    pixels = _checked_pixels(pixels)
    _, image = _network_view(pixels if pixels.ndim == 3 else pixels[:, :, None])
    light = predict_light_map(
        _engine_net(net), image, tile=tile, progress=progress, deadline=deadline
    )
    return light[0, 0].numpy()


def _check_unit_range(values: np.ndarray | Tensor) -> None:
    """Refuse float images that are not finite values in [0, 1] (clipping would hide it)."""
    if values.size == 0 if isinstance(values, np.ndarray) else values.numel() == 0:
        return  # nothing to check; the engine says the image is too small
    if isinstance(values, np.ndarray):
        finite, low, high = bool(np.isfinite(values).all()), values.min(), values.max()
    else:
        finite, low, high = bool(torch.isfinite(values).all()), values.min(), values.max()
    if not finite:
        raise ValueError("float image has non-finite pixel values (NaN or infinity)")
    if low < 0 or high > 1:
        hint = " (0-255 scale? divide by 255)" if high > 1 and high <= 255 else ""
        raise ValueError(
            f"float pixels must be in [0, 1]; this image spans "
            f"[{float(low):.4g}, {float(high):.4g}]{hint}"
        )


def _convert_alpha(alpha: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Alpha in another sample type; unchanged (same values) when the type is the same."""
    if alpha.dtype == dtype:
        return alpha
    unit = alpha.astype(np.float64)
    if alpha.dtype.kind == "u":
        unit /= np.iinfo(alpha.dtype).max
    if dtype.kind == "u":
        return np.round(np.clip(unit, 0, 1) * np.iinfo(dtype).max).astype(dtype)
    return unit.astype(dtype)


_PIL_MODES_KEPT = frozenset({"L", "LA", "RGB", "RGBA", "I;16"})


# Colour (an ICC profile, or a PNG's sRGB / gAMA / cHRM chunks as Pillow reads them), EXIF
# and resolution describe the enhanced pixels as they did the original's.
_INFO_KEPT = ("icc_profile", "srgb", "gamma", "chromaticity", "exif", "dpi")


def _carried_info(image: Image.Image) -> dict[str, object]:
    """What an enhanced PIL image keeps of ``image.info``: its colour description
    (``icc_profile``; ``srgb``, ``gamma``, ``chromaticity`` of a PNG), EXIF (less the
    thumbnail of the original, :func:`rave.io.metadata.drop_exif_thumbnail`) and dpi."""
    from rave.io.metadata import drop_exif_thumbnail

    kept: dict[str, object] = {k: v for k, v in image.info.items() if k in _INFO_KEPT}
    if isinstance(kept.get("exif"), bytes):
        kept["exif"] = drop_exif_thumbnail(cast(bytes, kept["exif"]))
    return kept


def _enhance_pil(
    net: nn.Module, image: Image.Image, tile: int | str | None, strength: float = 1.0
) -> Image.Image:
    from rave.network.enhancer import check_strength

    mode = image.mode
    if mode in ("I", "F"):
        return _enhance_pil_numeric(net, image, tile, strength)
    if mode == "CMYK":
        return _enhance_cmyk(net, image, tile, strength)
    if mode in _PIL_MODES_KEPT:
        working = image
    elif mode in ("I;16B", "I;16L", "I;16N"):
        working = image.convert("I;16")
    elif mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in image.info
        working = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        working = image.convert("L")
    elif mode in ("YCbCr", "LAB", "HSV", "RGBX"):
        working = image.convert("RGB")
    elif mode in ("RGBa", "La"):
        working = image.convert("RGBA" if mode == "RGBa" else "LA")
    else:
        raise ValueError(f"PIL images of mode {mode!r} are not supported")
    converted_back = mode in (
        *("YCbCr", "LAB", "HSV", "RGBX", "1", "I;16B", "I;16L", "I;16N"),
        *("RGBa", "La"),  # premultiplied: relit straight, premultiplied again
    )
    if converted_back and check_strength(strength) == 0 and min(image.size) >= 2:
        # The image itself, as documented: the round trip through RGB rounds by a code.
        return image.copy()
    enhanced = Image.fromarray(
        enhance_array(net, np.asarray(working), tile=tile, strength=strength)
    )
    if converted_back:
        enhanced = enhanced.convert(mode)
    # Palette images come back as RGB(A): a palette cannot hold the enhanced colours.
    enhanced.info.update(_carried_info(image))
    return enhanced


def _enhance_cmyk(
    net: nn.Module, image: Image.Image, tile: int | str | None, strength: float
) -> Image.Image:
    """A CMYK image relit in its own inks, its black kept.

    The network sees Pillow's RGB of the image, ``R = (1 - C)(1 - K)`` (as other modes), and
    the result is that RGB relit, ``clamp(R / L**S, 0, 1)``, expressed in inks: the gain
    ``g = 1 / L**S`` first lightens the black, ``1 - K' = min(1, (1 - K) g)``, and what is
    left of it the colour inks, ``1 - C' = min(1, (1 - C) max(1, (1 - K) g))``. Pillow's
    RGB -> CMYK (black 0, colours from RGB) would lose the black channel at any strength.
    """
    from rave.network.enhancer import check_strength

    strength = check_strength(strength)
    ink = np.asarray(image).astype(np.float64) / 255
    light = light_map_array(net, np.asarray(image.convert("RGB")), tile=tile).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gain = 1 / light**strength  # 0 ** 0 == 1: strength 0 is the image
        through_black = (1 - ink[:, :, 3]) * gain
        # 0 * inf (a black pixel under a zero light map) stays black, as 0 / 0 does in RGB.
        through_black = np.nan_to_num(through_black, nan=0.0, posinf=np.inf)
        left_over = np.maximum(through_black, 1.0)[:, :, None]
        colour = np.nan_to_num((1 - ink[:, :, :3]) * left_over, nan=0.0)
    out = np.empty_like(ink)
    out[:, :, :3] = 1 - np.minimum(colour, 1.0)
    out[:, :, 3] = 1 - np.minimum(through_black, 1.0)
    enhanced = Image.fromarray(np.round(out * 255).astype(np.uint8), "CMYK")
    enhanced.info.update(_carried_info(image))
    return enhanced


def _enhance_pil_numeric(
    net: nn.Module, image: Image.Image, tile: int | str | None, strength: float
) -> Image.Image:
    """Mode ``I`` (32-bit integers, taken as 16-bit samples 0-65535, as Pillow opens
    16-bit PNGs) and ``F`` (float, in [0, 1] as float arrays): enhanced at their precision
    and returned in the same mode, not squeezed through 8-bit ``L``."""
    values = np.asarray(image)
    if image.mode == "I":
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(
                f"PIL images of mode 'I' are taken as 16-bit samples (0-65535); "
                f"this image spans [{low}, {high}]"
            )
        pixels = enhance_array(net, values.astype(np.uint16), tile=tile, strength=strength)
        enhanced = Image.fromarray(pixels.astype(np.int32))
    else:
        pixels = enhance_array(net, values, tile=tile, strength=strength)
        enhanced = Image.fromarray(pixels.astype(np.float32))
    enhanced.info.update(_carried_info(image))
    return enhanced


def _enhance_torch(
    net: nn.Module, image: Tensor, tile: int | str | None, strength: float = 1.0
) -> Tensor:
    """Enhance an RGB or grey float tensor; the result has its shape, dtype and device.

    Args:
        image: ``(3, H, W)`` or ``(B, 3, H, W)`` RGB, or ``(H, W)``, ``(1, H, W)`` or
            ``(B, 1, H, W)`` grey, floating point in [0, 1].

    Grey goes to the network as three equal channels (a view, no copy) and one channel
    comes back: the light map is one channel and ``I / L**S`` divides every channel by it,
    so equal channels stay equal and the result is the grey result (as for grey arrays).
    """
    if image.dtype == torch.bool:
        raise TypeError(_BOOL_PIXELS.format(kind="tensor", cast="image.float()"))
    if not image.is_floating_point():
        raise ValueError(f"tensors must be float in [0, 1], got {image.dtype}")
    if image.ndim not in (2, 3, 4) or (image.ndim > 2 and image.shape[-3] not in (1, 3)):
        raise ValueError(
            "tensors must be (3, H, W) or (B, 3, H, W), or grey (H, W), (1, H, W) or "
            f"(B, 1, H, W), got {tuple(image.shape)}"
        )
    if image.ndim == 4 and image.shape[0] == 0:
        from rave.network.enhancer import check_strength

        check_strength(strength)
        return image.detach().clone()  # an empty batch enhanced is an empty batch
    _check_unit_range(image)
    batch = image[(None,) * (4 - image.ndim)]  # (B, C, H, W), a view
    grey = batch.shape[1] == 1
    if grey:
        batch = batch.expand(-1, 3, -1, -1)  # a view: grey enhanced as grey
    # Allocated here, outside the engine's inference mode: a tensor made inside it could
    # be neither updated in place nor used where autograd records (a loss, a training step).
    enhanced = torch.empty(batch.shape, dtype=torch.float32, device=batch.device)
    enhance_tensor(_engine_net(net), batch, tile=tile, strength=strength, out=enhanced)
    if grey:
        enhanced = enhanced[:, :1]  # the three channels are equal: one is the grey result
    return enhanced.to(device=image.device, dtype=image.dtype).reshape(image.shape)


# Bool samples are refused, not guessed at: a mask as 0/1 would be enhanced as near-black.
_BOOL_PIXELS = (
    "bool {kind}s are not image samples (a mask or bilevel image?): pass uint8 0/255, "
    "uint16 or float in [0, 1], e.g. {cast}"
)


@overload
def enhance(
    image: Image.Image,
    model: str | Path | nn.Module = ...,
    *,
    tile: int | str | None = ...,
    device: str | torch.device = ...,
    strength: float = ...,
) -> Image.Image: ...
@overload
def enhance(
    image: np.ndarray,
    model: str | Path | nn.Module = ...,
    *,
    tile: int | str | None = ...,
    device: str | torch.device = ...,
    strength: float = ...,
) -> np.ndarray: ...
@overload
def enhance(
    image: Tensor,
    model: str | Path | nn.Module = ...,
    *,
    tile: int | str | None = ...,
    device: str | torch.device = ...,
    strength: float = ...,
) -> Tensor: ...
@overload
def enhance(
    image: str | os.PathLike[str],
    model: str | Path | nn.Module = ...,
    *,
    tile: int | str | None = ...,
    device: str | torch.device = ...,
    output: None = ...,
    strength: float = ...,
) -> np.ndarray: ...
@overload
def enhance(
    image: str | os.PathLike[str],
    model: str | Path | nn.Module = ...,
    *,
    tile: int | str | None = ...,
    device: str | torch.device = ...,
    output: str | os.PathLike[str],
    strength: float = ...,
) -> Path: ...
def enhance(
    image: ImageLike | str | os.PathLike[str],
    model: str | Path | nn.Module = "default",
    *,
    tile: int | str | None = "auto",
    device: str | torch.device = "auto",
    output: str | os.PathLike[str] | None = None,
    strength: float = 1.0,
) -> ImageLike | np.ndarray | Path:
    """Enhance a backlit image; returns the same kind of image.

    Args:
        image: one of
            - a PIL image: ``L``, ``LA``, ``RGB``, ``RGBA``, ``I;16``, ``I`` (taken as
              16-bit, 0-65535) and ``F`` (in [0, 1]) come back in the same mode;
              ``CMYK`` too, relit in its own inks (its black kept; the network sees
              Pillow's RGB of it); ``1`` and other convertible modes are enhanced in
              RGB/L and converted back (premultiplied ``RGBa``/``La`` through
              ``RGBA``/``LA``); palette images (``P``, ``PA``) come back as ``RGB``/``RGBA``.
              ``info`` keeps ``icc_profile`` (or a PNG's ``srgb``, ``gamma`` and
              ``chromaticity``), ``exif`` and ``dpi``. Pixels are taken as
              stored: EXIF orientation is not applied (``rave.io.read_photo`` does that).
            - a numpy array ``(H, W)``, ``(H, W, 1|2|3|4)`` (grey, grey + alpha, RGB,
              RGBA) of ``uint8``, ``uint16`` or float in [0, 1]: same shape and dtype.
              Any strides (e.g. OpenCV's BGR flipped to RGB as ``a[..., ::-1]``).
            - a torch tensor ``(3, H, W)`` or ``(B, 3, H, W)``, or grey ``(H, W)``,
              ``(1, H, W)`` or ``(B, 1, H, W)``, float in [0, 1]: same shape, dtype and
              device.
            - a file path (``str`` or ``Path``): read upright at its bit depth (any format
              ``rave enhance`` reads); the enhanced pixels come back as a numpy array,
              or are written to ``output`` with the photo's metadata.
            Grey is enhanced as grey; alpha is copied through untouched. Float values
            outside [0, 1] (a 0-255 scale), NaN and infinity are refused.
        model: a model name (``"default"``, ``"rave-unpaired"``...), a checkpoint path,
            or an already loaded network. Named and file models are loaded once per
            (model, device) and cached.
        tile: ``"auto"`` bounds memory, an int (at least 16) sets the tile size, None runs
            the whole image at once; the result is the same.
        device: ``"auto"`` (CUDA, then Apple MPS, then CPU, as the command line), ``"cpu"``,
            ``"cuda[:N]"`` or ``"mps"``; ignored for a loaded network.
        output: for a file ``image``, the file to write (format from its suffix).
        strength: ``S >= 0``: 0 returns the image, 1 (default) the paper's output, larger
            values relight more. A power of the light map, not a blend with the input.

    Returns:
        The enhanced image, ``clamp(image / L**strength, 0, 1)`` with the network's light
        map ``L``; ``Path(output)`` when ``output`` is given.

    Raises:
        TypeError: bool pixels (a mask: pass 0/255 as uint8), or not an image at all.
        ValueError: float values outside [0, 1] or not finite, an unsupported layout, a
            tile size the command line refuses, a negative strength, or an
            unknown/unavailable device (:class:`rave.devices.DeviceError`).
        rave.io.PhotoError: an unreadable file.
    """
    from rave.session import Enhancer

    return Enhancer(model, device=device, tile=tile).enhance(
        image, output=output, strength=strength
    )
