"""A tiny OpenCLIP architecture for fast tests of the text-side code (random weights).

It has the real BPE tokenizer and vocabulary (49,408 tokens) and OpenAI CLIP's structure
(causal text transformer pooled at the end token), at a width of 32 so that encoding the
whole vocabulary takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_ARCH = "RaveTinyTestCLIP"
TINY_ENCODER = f"clip:{TINY_ARCH}@random"

_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def register_tiny_clip(folder: Path) -> str:
    """Register the tiny architecture with OpenCLIP (idempotent); returns the encoder name."""
    import open_clip

    if TINY_ARCH not in open_clip.list_models():
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{TINY_ARCH}.json"
        path.write_text(json.dumps(_CONFIG), encoding="utf-8")
        open_clip.add_model_config(path)
    return TINY_ENCODER


TINY224_ARCH = "RaveTinyTestCLIP224"
TINY224_ENCODER = f"clip:{TINY224_ARCH}@random"

# the same text tower, with the real 224 px image input (so the loss path squashes 512 -> 224)
_CONFIG_224 = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": _CONFIG["text_cfg"],
}


def register_tiny_clip_224(folder: Path) -> str:
    """Register a tiny architecture with a 224 px image tower (idempotent); its encoder name."""
    import open_clip

    if TINY224_ARCH not in open_clip.list_models():
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{TINY224_ARCH}.json"
        path.write_text(json.dumps(_CONFIG_224), encoding="utf-8")
        open_clip.add_model_config(path)
    return TINY224_ENCODER
