"""The enhancement network shared by RAVE, CLIP-LIT and CLIP-LIT-Latent.

The network predicts a one-channel light map ``L`` from an RGB image ``I`` in [0, 1]; the
enhanced image is ``clamp(I / L, 0, 1)`` (Retinex-style division). Layer names follow the
authors' checkpoints exactly so that their state_dicts load strictly.

Layout (docs/method.md, "Enhancement network")::

    cond1 (3->32) -> LReLU -> ResidualBlock1, 2 -> PPM1 (pyramid pooling, bins 1, 2, 3, 6)
    -> condx (32->64) -> ResidualBlock3, 4 -> condy (64->32) -> ResidualBlock5, 6
    -> cond_add1 (32->1) -> ReLU = L

The four outer convolutions pad with zeros while training and by reflection at inference
(``padding_mode``); residual-block convolutions always reflect; the PPM fuse conv always
pads with zeros.
"""

from __future__ import annotations

import math
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rave.network.refinement import LightRefinement

__all__ = [
    "FEATURE_LAYERS",
    "HEAD_LAYERS",
    "PYRAMID_BINS",
    "EnhancementNet",
    "PyramidPooling",
    "ResidualBlock",
    "adaptive_avg_pool_by_membership",
    "apply_light_map",
    "bin_membership",
    "check_strength",
    "count_parameters",
    "start_as_identity",
]

PaddingMode = Literal["zeros", "reflect"]
PYRAMID_BINS: tuple[int, ...] = (1, 2, 3, 6)
LEAKY_SLOPE = 0.2


class ResidualBlock(nn.Module):
    """``y = lrelu(conv2(lrelu(conv1(x))) + x)`` with reflect-padded 3x3 convs, no bias.

    Args:
        channels: number of input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, padding_mode="reflect")
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, padding_mode="reflect")
        # Parameter-free modules kept only so module names match the reference implementation.
        self.relu = nn.ReLU()
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        y = self.lrelu(self.conv1(x))
        return self.lrelu(self.conv2(y) + x)


def bin_membership(coords: Tensor, length: Tensor | int, bins: int) -> Tensor:
    """Which adaptive-average-pooling bins each coordinate falls in.

    ``adaptive_avg_pool`` splits ``length`` into ``bins`` intervals
    ``[floor(i * length / bins), ceil((i + 1) * length / bins))``, which overlap when
    ``bins`` does not divide ``length``. Integer tensor arithmetic only, so that ``length``
    may be a traced size and the result exports to ONNX with a dynamic image size.

    Args:
        coords: ``(n,)`` int64 coordinates along the axis.
        length: the axis length (an int or a 0-d int64 tensor).
        bins: number of bins.

    Returns:
        ``(bins, n)`` bool: ``coords[j]`` lies in bin ``i``.
    """
    index = torch.arange(bins, device=coords.device)
    start = torch.div(index * length, bins, rounding_mode="floor")
    end = torch.div((index + 1) * length + (bins - 1), bins, rounding_mode="floor")
    return (coords[None, :] >= start[:, None]) & (coords[None, :] < end[:, None])


def adaptive_avg_pool_by_membership(x: Tensor, bins: int) -> Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` as two matrix products with 0/1 bin matrices.

    ONNX has no adaptive pooling whose bins overlap (the exporter refuses sizes that
    ``bins`` does not divide); matrix products export at any size. The tiled engine sums
    the same bins with the same matrices tile by tile.

    Args:
        x: ``(B, C, H, W)`` float.
        bins: output grid side.

    Returns:
        ``(B, C, bins, bins)``: the mean of ``x`` over every bin.
    """
    height, width = x.shape[-2], x.shape[-1]
    # Sizes as tensors: the tracer then records them as dynamic (shape ops), not constants.
    rows = bin_membership(torch.arange(height, device=x.device), height, bins).to(x.dtype)
    cols = bin_membership(torch.arange(width, device=x.device), width, bins).to(x.dtype)
    sums = torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))
    counts = rows.sum(dim=1)[:, None] * cols.sum(dim=1)[None, :]
    return sums / counts


class PyramidPooling(nn.Module):
    """Pyramid pooling: pooled context at several grid sizes, fused with the input.

    For each bin count ``b``: adaptive average pool to ``b x b``, 1x1 conv (no bias), PReLU,
    bilinear upsampling (``align_corners=True``) to the input size. The input and the
    branches are concatenated and fused by a zero-padded 3x3 conv (no bias) and a PReLU.

    Args:
        in_channels: channels of the input (32 in the paper's network).
        branch_channels: channels of each pooled branch (8).
        bins: grid sizes of the branches.
    """

    def __init__(
        self, in_channels: int, branch_channels: int, bins: tuple[int, ...] = PYRAMID_BINS
    ) -> None:
        super().__init__()
        self.bins = tuple(bins)
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, branch_channels, 1, bias=False),
                nn.PReLU(),
            )
            for b in self.bins
        )
        fused_in = in_channels + branch_channels * len(self.bins)
        self.fuse = nn.Sequential(
            nn.Conv2d(fused_in, in_channels, 3, padding=1, bias=False),
            nn.PReLU(),
        )
        # True: pool with adaptive_avg_pool_by_membership (same values; exports to ONNX).
        self.pool_by_membership = False

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        branches = [x]
        for bins, branch in zip(self.bins, self.features, strict=True):
            if self.pool_by_membership:
                # the branch is (AdaptiveAvgPool2d, conv, activation): pool the exportable way
                pooled = cast(nn.Sequential, branch)[1:](adaptive_avg_pool_by_membership(x, bins))
            else:
                pooled = branch(x)
            branches.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=True))
        return self.fuse(torch.cat(branches, dim=1))


# The network's layer order, declared once: EnhancementNet.forward and the tiled engine
# (rave.inference.tiled) both walk these lists. Each entry is (attribute, kind): "conv" is a
# 3x3 convolution followed by the activation named after the colon ("lrelu", "relu"; none
# when absent), "block" a ResidualBlock. The pyramid pooling (PPM1) sits between the two.
FEATURE_LAYERS: tuple[tuple[str, str], ...] = (
    ("cond1", "conv:lrelu"),
    ("ResidualBlock1", "block"),
    ("ResidualBlock2", "block"),
)
HEAD_LAYERS: tuple[tuple[str, str], ...] = (
    ("condx", "conv"),
    ("ResidualBlock3", "block"),
    ("ResidualBlock4", "block"),
    ("condy", "conv"),
    ("ResidualBlock5", "block"),
    ("ResidualBlock6", "block"),
    ("cond_add1", "conv:relu"),
)


class EnhancementNet(nn.Module):
    """The light-map network of RAVE / CLIP-LIT (278,790 parameters).

    Args:
        padding_mode: padding of the four outer convolutions (``cond1``, ``condx``,
            ``condy``, ``cond_add1``): ``"zeros"`` as in training, ``"reflect"`` as the
            released numbers and inference use.

    Shape:
        - input: ``(B, 3, H, W)`` RGB in [0, 1], no mean/std normalisation.
        - output: light map ``(B, 1, H, W)``, non-negative.
    """

    def __init__(self, padding_mode: PaddingMode = "reflect") -> None:
        super().__init__()
        self.cond1 = nn.Conv2d(3, 32, 3, padding=1)
        self.ResidualBlock1 = ResidualBlock(32)
        self.ResidualBlock2 = ResidualBlock(32)
        self.PPM1 = PyramidPooling(32, 8)
        self.condx = nn.Conv2d(32, 64, 3, padding=1)
        self.ResidualBlock3 = ResidualBlock(64)
        self.ResidualBlock4 = ResidualBlock(64)
        self.condy = nn.Conv2d(64, 32, 3, padding=1)
        self.ResidualBlock5 = ResidualBlock(32)
        self.ResidualBlock6 = ResidualBlock(32)
        self.cond_add1 = nn.Conv2d(32, 1, 3, padding=1)
        self.relu = nn.ReLU()
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)
        self.padding_mode: PaddingMode = "reflect"
        self.set_padding_mode(padding_mode)
        # Not part of the network: a fixed last step of some models, run by the engines
        # (rave.inference, the ONNX export) after forward(); read from the weights file.
        self.light_refinement: LightRefinement | None = None
        self.reset_parameters()

    @property
    def outer_convs(self) -> tuple[nn.Conv2d, ...]:
        """The four convolutions whose padding differs between training and inference."""
        return (self.cond1, self.condx, self.condy, self.cond_add1)

    def set_padding_mode(self, padding_mode: PaddingMode) -> EnhancementNet:
        """Switch the outer convolutions between zero padding (training) and reflection."""
        if padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
        self.padding_mode = padding_mode
        for conv in self.outer_convs:
            conv.padding_mode = padding_mode
        return self

    def reset_parameters(self) -> None:
        """Conv weights ~ N(0, 0.02) as the reference; biases and PReLU keep the defaults."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def _run_layers(self, layers: tuple[tuple[str, str], ...], x: Tensor) -> Tensor:
        for name, kind in layers:
            x = getattr(self, name)(x)
            activation = kind.partition(":")[2]
            if activation:
                x = getattr(self, activation)(x)
        return x

    def forward_features(self, image: Tensor) -> Tensor:
        """Layers before the pyramid pooling (:data:`FEATURE_LAYERS`):
        ``(B, 3, H, W)`` -> ``(B, 32, H, W)``."""
        return self._run_layers(FEATURE_LAYERS, image)

    def forward_head(self, pooled_context: Tensor) -> Tensor:
        """Layers after the pyramid pooling (:data:`HEAD_LAYERS`): ``(B, 32, H, W)`` ->
        light map ``(B, 1, H, W)``."""
        return self._run_layers(HEAD_LAYERS, pooled_context)

    def forward(self, image: Tensor) -> Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image batch, got shape {tuple(image.shape)}")
        return self.forward_head(self.PPM1(self.forward_features(image)))

    def light_map(self, image: Tensor) -> Tensor:
        """The model's light map, whole image at once: :meth:`forward`, then the
        :attr:`light_refinement` if the model has one (the reference the tiled engine and
        the ONNX export reproduce).

        Shape: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)``, non-negative.
        """
        light = self(image)
        if self.light_refinement is not None:
            light = self.light_refinement(light, image)
        return light


def apply_light_map(
    image: Tensor, light_map: Tensor, eps: float = 0.0, strength: float = 1.0
) -> Tensor:
    """Enhanced image ``clamp(image / (light_map + eps) ** strength, 0, 1)``.

    Args:
        image: ``(B, 3, H, W)`` in [0, 1].
        light_map: ``(B, 1, H, W)``, non-negative (broadcast over channels).
        eps: added to the light map; training uses 1e-9, inference divides by L as it is
            (a zero light map gives inf or nan, and the clamp maps inf to 1).
        strength: ``S >= 0`` (see :func:`check_strength`): 0 returns the image (clamped to
            [0, 1]), 1 the network's result, larger values relight more. A power of the
            light map, not a cross-fade, so every strength is a relighting.

    Returns:
        ``(B, 3, H, W)`` in [0, 1].
    """
    light = light_map + eps if eps else light_map
    if strength != 1.0:  # exactly the paper's output at 1 (no pow rounding)
        light = light.pow(strength)  # 0 ** 0 == 1: strength 0 is the input, black included
    enhanced = image / light
    # nan arises only from 0/0 (black pixel, zero light): black stays black.
    return torch.nan_to_num(enhanced, nan=0.0).clamp_(0.0, 1.0)


def check_strength(strength: float) -> float:
    """The enhancement strength ``S`` as a float; raises ValueError unless finite and >= 0.

    The result at strength ``S`` is ``clamp(I / L**S, 0, 1)`` for the input ``I`` and the
    network's light map ``L``: 0 is the input, 1 the paper's output, above 1 stronger.
    """
    if isinstance(strength, (bool, str, bytes)):
        # float() would take True and "2"; a slider value must not arrive as either.
        raise ValueError(f"strength must be a number, got {strength!r}")
    try:
        value = float(strength)
    except (TypeError, ValueError):  # None, a list...: not a TypeError naming float()
        raise ValueError(f"strength must be a number, got {strength!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
    return value


def start_as_identity(net: EnhancementNet) -> EnhancementNet:
    """Make ``net`` output a light map of exactly 1 (the identity enhancement).

    Zero weights and a unit bias in the last conv; the other layers keep their random
    initialisation, so training starts from "change nothing" instead of having to learn
    the reconstruction first (and never starts dead: a random negative output bias
    followed by the ReLU gives an all-zero light map and no gradient).
    """
    with torch.no_grad():
        net.cond_add1.weight.zero_()
        assert net.cond_add1.bias is not None  # built with bias=True
        net.cond_add1.bias.fill_(1.0)
    return net


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
