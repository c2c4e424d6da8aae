"""CLIP image towers through OpenCLIP, as guiding encoders.

Names have the form ``clip:ARCH@SOURCE`` where ``ARCH`` is an OpenCLIP architecture
(``open_clip.list_models()``) and ``SOURCE`` is a pretrained tag (``openai``,
``laion2b_s34b_b88k``, ...; ``open_clip.list_pretrained()``), a path to a local weights file
(``.pt``/``.pth``/``.bin``/``.safetensors`` state_dict, loaded with ``weights_only=True``), or
``random`` (untrained weights from a fixed seed, the same in every process; for tests).
``clip:ARCH`` means ``clip:ARCH@openai``.
OpenAI's original TorchScript ``.pt`` archives are refused by ``weights_only`` loading: save
their ``torch.jit.load(path).state_dict()`` to a file first.

OpenAI's weights were trained with QuickGELU; OpenCLIP's plain ``ViT-B-32`` config uses GELU.
For a known tag the activation is taken from the tag's config. A local file of OpenAI
weights must be paired with the ``-quickgelu`` architecture (``clip:ViT-B-32-quickgelu@/p.pt``).

``features``: for ModifiedResNets (RN50, RN101, ...) the five depths of the paper's identity
loss: after the stem (including its average pool), after layer1, layer2, layer3 and layer4.
For ViTs: the patch-token maps (class token dropped, reshaped to ``(B, width, 7, 7)`` for
ViT-B/32) after the residual blocks given by ``VIT_FEATURE_BLOCKS`` (4 evenly spaced blocks,
e.g. 3, 6, 9 and 12 of 12), which span low-level to semantic features the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rave.encoders.base import ImageEncoder, ResizeMode, _as_tuple3

__all__ = ["OpenClipEncoder", "parse_clip_name"]

logger = logging.getLogger(__name__)

DEFAULT_TAG = "openai"
RANDOM_TAG = "random"
RANDOM_WEIGHTS_SEED = 0  # clip:ARCH@random: the same untrained weights in every process
# Fractions of the depth whose outputs a ViT's ``features`` returns (blocks 3, 6, 9, 12 of 12).
VIT_FEATURE_BLOCKS = (0.25, 0.5, 0.75, 1.0)
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as err:  # an optional dependency (the train extra)
        # ModuleNotFoundError with the module's name: the command line turns it into one
        # line naming the extra to install (rave.cli.missing_extra_message).
        raise ModuleNotFoundError(
            "CLIP encoders need OpenCLIP: pip install open_clip_torch", name="open_clip"
        ) from err
    return open_clip


def parse_clip_name(name: str) -> tuple[str, str]:
    """Split ``"clip:ARCH@SOURCE"`` into ``(ARCH, SOURCE)``; ``SOURCE`` defaults to ``openai``.

    Raises:
        ValueError: if ``name`` does not start with ``clip:`` or has no architecture.
    """
    if not name.startswith("clip:"):
        raise ValueError(f"not a CLIP encoder name: {name!r} (expected clip:ARCH[@TAG])")
    arch, _, source = name[len("clip:") :].partition("@")
    if not arch:
        raise ValueError(f"missing architecture in encoder name {name!r}")
    return arch, source or DEFAULT_TAG


def _load_model(arch: str, source: str) -> nn.Module:
    from rave.library_logging import route_library_logging

    # OpenCLIP logs on the root logger ("ERROR:root:Failed to download..."); the exception
    # that follows says it in rave's words.
    with route_library_logging():
        return _create_model(arch, source)


def _create_model(arch: str, source: str) -> nn.Module:
    open_clip = _import_open_clip()
    if arch not in open_clip.list_models():
        raise ValueError(
            f"unknown OpenCLIP architecture {arch!r}; see open_clip.list_models() "
            "(e.g. ViT-B-32, RN101, ViT-B-16)"
        )
    if source == RANDOM_TAG:
        # Seeded, so that a residual vector made with clip:ARCH@random in one process is
        # read by the same text tower in the next (rave interpret, rave shift); forked, so
        # that the caller's random stream is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            return open_clip.create_model(arch, pretrained=None)
    tag_cfg = open_clip.get_pretrained_cfg(arch, source)
    if tag_cfg:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        try:
            return open_clip.create_model(arch, pretrained=source, force_quick_gelu=quick_gelu)
        except RuntimeError as err:
            raise RuntimeError(
                f"could not load the {source!r} weights of {arch}: OpenCLIP downloads them on "
                f"first use (needs internet once); or give a local file with "
                f"clip:{arch}@/path/to/weights.pt ({err})"
            ) from err
    path = Path(source).expanduser()
    if path.is_file():
        return open_clip.create_model(arch, pretrained=str(path), weights_only=True)
    if "/" in source or path.suffix:
        raise FileNotFoundError(f"CLIP weights file not found: {source}")
    tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
    raise ValueError(
        f"unknown pretrained tag {source!r} for {arch}; known tags: {tags}; "
        "or give a weights file path, or 'random'"
    )


class OpenClipEncoder(ImageEncoder):
    """The image tower of an OpenCLIP model as a guiding encoder.

    Args:
        name: ``clip:ARCH[@SOURCE]`` (see the module docstring).

    Attributes:
        model: the whole OpenCLIP model (``model.encode_text``, ``model.visual``, ...).
        tokenizer: OpenCLIP's tokenizer for this architecture (callable on a list of strings).
        arch: the architecture name; ``source``: the tag or path the weights came from.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        arch, source = parse_clip_name(name)
        self.arch, self.source = arch, source
        self.name = f"clip:{arch}@{source}"
        # CLIP or CustomTextCLIP, whose towers vary by architecture: read duck-typed.
        self.model: Any = _load_model(arch, source)
        self.tokenizer = _import_open_clip().get_tokenizer(arch)
        visual = self.model.visual
        size = visual.image_size
        self.input_size = int(size[0] if isinstance(size, tuple | list) else size)
        # OpenCLIP attaches the preprocessing that belongs to the weights to the model.
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = _as_tuple3(cfg.get("mean", _OPENAI_MEAN))
        self.std = _as_tuple3(cfg.get("std", _OPENAI_STD))
        self.embed_dim = int(
            getattr(visual, "output_dim", 0) or self.model.text_projection.shape[1]
        )
        self._is_resnet = hasattr(visual, "layer4") and hasattr(visual, "attnpool")
        if self._is_resnet:
            self._feature_indices: list[int] | None = None  # stem, layer1..layer4
        else:
            depth = len(visual.transformer.resblocks)
            self._feature_indices = sorted(
                {max(0, round(f * depth) - 1) for f in VIT_FEATURE_BLOCKS}
            )
        n_maps = 5 if self._is_resnet else len(self._feature_indices or [])
        self.feature_scales = (1.0,) * n_maps

    def embedding_modules(self) -> list[nn.Module]:
        """The image tower only: a residual vector does not depend on the text tower."""
        return [self.model.visual]

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        x = self.preprocess(images, resize)
        with self.autocast(x.device):
            out = self.model.visual(x)
        return nn.functional.normalize(out.float(), dim=-1)

    def features(self, images: Tensor) -> list[Tensor]:
        x = self.preprocess(images, "squash")
        with self.autocast(x.device):
            out = self.model.visual.forward_intermediates(
                x, indices=self._feature_indices, stop_early=True, intermediates_only=True
            )
        return [m.float() for m in out["image_intermediates"]]

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        """L2-normalised text embeddings, ``(len(texts), D)`` float32 (no gradient)."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(texts).to(device)
        with self.autocast(device):
            out = self.model.encode_text(tokens)
        return nn.functional.normalize(out.float(), dim=-1)
