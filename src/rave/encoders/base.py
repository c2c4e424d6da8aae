"""The interface every guiding image encoder implements, and the preprocessing they share.

An encoder is frozen (eval mode, ``requires_grad=False`` on its weights) but differentiable
with respect to its input images, so losses on its outputs train the enhancement network.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "ImageEncoder",
    "ResizeMode",
    "center_crop_resize",
    "check_images",
    "gaussian_blur",
    "squash_resize",
    "tensors_sha256",
]

# "squash": plain resize of the whole image to the encoder's input size (the loss path);
# "center_crop": the encoder's standard resize of the short side + centre crop (residual path).
ResizeMode = Literal["squash", "center_crop"]


class ImageEncoder(nn.Module):
    """Base class of guiding encoders.

    Subclasses implement :meth:`embed` and :meth:`features`; :meth:`preprocess` and
    :meth:`autocast` are shared helpers they may use.

    Attributes:
        name: the encoder's registry name, e.g. ``"clip:ViT-B-32@openai"`` or ``"effnet-lite0"``.
        embed_dim: size ``D`` of the guidance embedding.
        input_size: side of the square image the network sees, in pixels (224 for all here).
        mean: per-channel mean subtracted after resizing (RGB, for values in [0, 1]).
        std: per-channel standard deviation divided by after resizing.
        feature_scales: one positive number per map returned by :meth:`features`: the typical
            mean squared difference of that map between an image and a mildly re-exposed copy.
            An identity loss divides each layer's MSE by it so that no depth dominates; all
            ones where the method uses raw MSEs (CLIP, as in the paper).
        autocast_dtype: ``torch.float16`` or ``torch.bfloat16`` to run the forward pass under
            CUDA autocast, or ``None`` (always ``None`` on a CPU). Outputs are float32 either way.
        squash_antialias: whether the ``"squash"`` resize (the loss path) antialiases when it
            shrinks. The authors' code (torchvision 0.14.1, whose tensor ``Resize`` does not
            antialias) corresponds to ``False``; training sets it from the config key
            ``loss_resize_antialias`` (see docs/method.md, "Loss-path resize").
        blur_sigma: standard deviation in pixels of a Gaussian blur applied after the resize
            to ``input_size`` (0: none, the paper's encoders). Set by
            :func:`rave.encoders.create_encoder` for names ending in ``+blurSIGMA``.
    """

    name: str
    embed_dim: int
    input_size: int = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    feature_scales: tuple[float, ...] = ()
    autocast_dtype: torch.dtype | None = None
    squash_antialias: bool = True
    blur_sigma: float = 0.0

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        """L2-normalised embeddings of ``images``.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1].
            resize: how images reach the encoder's input size (see :data:`ResizeMode`).

        Returns:
            ``(B, D)`` float32, unit L2 norm per row.
        """
        raise NotImplementedError

    def features(self, images: Tensor) -> list[Tensor]:
        """Intermediate feature maps for the identity loss, shallow to deep.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1]; squashed to the encoder's input size.

        Returns:
            a list of ``(B, C_l, H_l, W_l)`` float32 tensors (5 for the paper's RN101 layout),
            as many as :attr:`feature_scales` has entries.
        """
        raise NotImplementedError

    def train(self, mode: bool = True) -> ImageEncoder:
        """Stay in eval mode: a frozen encoder's BatchNorm statistics must never update."""
        return super().train(False)

    def preprocess(self, images: Tensor, resize: ResizeMode) -> Tensor:
        """Resize to ``input_size`` and normalise with the encoder's mean and std.

        Args:
            images: ``(B, 3, H, W)`` RGB in [0, 1].
            resize: ``"squash"`` or ``"center_crop"``.

        Returns:
            ``(B, 3, input_size, input_size)`` in the dtype of the encoder's weights.
        """
        check_images(images)
        if resize == "squash":
            x = squash_resize(images, self.input_size, antialias=self.squash_antialias)
        elif resize == "center_crop":
            x = center_crop_resize(images, self.input_size)
        else:
            raise ValueError(f"resize must be 'squash' or 'center_crop', got {resize!r}")
        if self.blur_sigma:
            x = gaussian_blur(x, self.blur_sigma)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) / std
        weight = next(self.parameters(), None)
        return x if weight is None else x.to(weight.dtype)

    def embedding_modules(self) -> list[nn.Module]:
        """The modules whose weights :meth:`embed` uses (all of the encoder by default)."""
        return [self]

    @torch.no_grad()
    def weights_sha256(self) -> str:
        """SHA-256 of what an embedding depends on besides the image: the weights of
        :meth:`embedding_modules` (names, dtypes, shapes and bytes, in name order) and the
        preprocessing (input size, mean, std, blur).

        A name does not pin weights (``clip:ARCH@/path/weights.pt`` after the file was
        replaced, another release under a tag); residual files record this so that a
        vector is never used with weights other than its own.
        """
        preprocessing = repr((self.input_size, self.mean, self.std, self.blur_sigma))
        named = (
            (f"{index}.{key}", value)
            for index, module in enumerate(self.embedding_modules())
            for key, value in sorted(module.state_dict().items())
        )
        return tensors_sha256(named, preamble=preprocessing)

    def autocast(self, device: torch.device) -> AbstractContextManager[object]:
        """The autocast context for a forward pass on ``device`` (a no-op unless CUDA + dtype)."""
        if self.autocast_dtype is None or device.type != "cuda":
            return nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)


@torch.no_grad()
def tensors_sha256(named: Iterable[tuple[str, Tensor]], *, preamble: str = "") -> str:
    """SHA-256 (hex) of named tensors: each one's name, dtype, shape and bytes, in the order
    given (on any device; the bytes are read on the CPU). The one fingerprint of weights in
    rave: residual files (which encoder weights made them) and the vocabulary cache (which
    text-tower weights) use it."""
    digest = hashlib.sha256(preamble.encode())
    for name, value in named:
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"\n{name} {tensor.dtype} {tuple(value.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def check_images(images: Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a floating ``(B, 3, H, W)`` batch."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected floating-point images in [0, 1], got dtype {images.dtype}")


def squash_resize(images: Tensor, size: int, *, antialias: bool = True) -> Tensor:
    """Resize the whole image to ``size x size`` (aspect ratio not kept), bilinear.

    With ``antialias`` (torchvision >= 0.17's tensor ``Resize``) a 512 px training image does
    not alias on its way to 224 px; without it, this is the plain bilinear resize of the
    torchvision 0.14.1 that the authors pin, which their numbers were trained with.
    Differentiable.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        size: output side in pixels.
        antialias: low-pass filter when shrinking (no effect when enlarging).

    Returns:
        ``(B, 3, size, size)``.
    """
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias
    )


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur, kernel cut at 3 sigma, borders reflected. Differentiable.

    Args:
        images: ``(B, C, H, W)``; each side at least ``3 * sigma + 1`` pixels (reflection).
        sigma: standard deviation in pixels, > 0.

    Returns:
        ``(B, C, H, W)``, same dtype.
    """
    radius = max(1, math.ceil(3.0 * sigma))
    return TF.gaussian_blur(images, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])


def center_crop_resize(images: Tensor, size: int) -> Tensor:
    """CLIP's standard preprocessing in torch ops: bicubic resize of the short side, centre crop.

    torchvision's tensor ``resize`` + ``center_crop`` stand in for CLIP's PIL transforms so
    the path stays differentiable and runs on the GPU. Bicubic overshoots, and PIL clips to
    8 bits, so the result is clamped to [0, 1].

    Args:
        images: ``(B, 3, H, W)`` in [0, 1].
        size: output side in pixels.

    Returns:
        ``(B, 3, size, size)`` in [0, 1].
    """
    h, w = images.shape[-2:]
    if min(h, w) != size:
        images = TF.resize(
            images, [size], interpolation=InterpolationMode.BICUBIC, antialias=True
        ).clamp(0.0, 1.0)
    return TF.center_crop(images, [size, size])


def _as_tuple3(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)
