"""CLIP-LIT-Latent: CLIP-LIT with the two prompts as free vectors in the embedding space.

RAVE's paper proposes it as a step between CLIP-LIT and RAVE: the prompt pair is two
``D``-d vectors, initialised randomly, so no text encoder is involved and any image encoder
(e.g. the offline ``effnet-lite0``) can guide. Everything else (initialisation by
cross-entropy, ``L_clip``, refinement rounds with margin ranking losses) is CLIP-LIT's, see
:mod:`rave.training.methods.clip_lit`; only the prompt learning rate differs (5e-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rave.guidance.prompts import LatentPromptPair, PromptPair
from rave.training.methods.clip_lit import PromptGuidedMethod, PromptOptions, load_prompt_features

__all__ = ["ClipLitLatentMethod", "ClipLitLatentOptions"]


@dataclass(frozen=True)
class ClipLitLatentOptions(PromptOptions):
    """:class:`PromptOptions` with the latent prompts' learning rate."""

    prompt_lr: float = 5e-4


class ClipLitLatentMethod(PromptGuidedMethod):
    """Two learned vectors in the guidance encoder's embedding space."""

    name = "clip-lit-latent"
    Options = ClipLitLatentOptions

    def build_prompts(self) -> PromptPair:
        generator = torch.Generator().manual_seed(self.config.seed)
        return LatentPromptPair(self.guidance_encoder.embed_dim, generator=generator)

    def load_prompts_file(self, path: str | Path) -> None:
        """Start from a ``prompts.safetensors`` file or a checkpoint of a latent run."""
        features, encoder = load_prompt_features(path)
        self._check_encoder(encoder, str(path))
        expected = (2, self.guidance_encoder.embed_dim)
        if tuple(features.shape) != expected:
            raise ValueError(
                f"{path}: prompt features of shape {tuple(features.shape)}, expected {expected}"
            )
        assert isinstance(self.prompts, LatentPromptPair)
        with torch.no_grad():
            # the pair's output is normalize(vectors): unit features reproduce themselves
            self.prompts.vectors.copy_(features.to(self.prompts.vectors))
