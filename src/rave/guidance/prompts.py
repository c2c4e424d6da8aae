"""Learnable prompt pairs of the CLIP-LIT baselines (docs/method.md, CLIP-LIT section).

A prompt pair holds two directions in an encoder's embedding space, index 0 = negative
(backlit), index 1 = positive (well-lit). An image with unit embedding ``e`` is classified by
``p_k = softmax_k(scale * cos(e, t_k))`` with ``scale = 100``.

* :class:`TextPromptPair` (CLIP-LIT): each prompt is a sequence of token embeddings initialised
  from the tokens of ``"X X ... X"`` (16 words, with CLIP's start and end tokens) and fed
  through CLIP's frozen text transformer; the feature is read at the end-of-text position.
* :class:`LatentPromptPair` (CLIP-LIT-Latent): two free ``D``-d vectors, no text encoder, so it
  works with any image encoder.

The losses of the method are pure functions of image embeddings and prompt features:
:func:`prompt_classification_loss` (prompt initialisation), :func:`negative_probability_loss`
(the enhancement loss ``L_clip``) and :func:`margin_ranking_loss` (prompt refinement rounds).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LOGIT_SCALE",
    "LatentPromptPair",
    "PromptPair",
    "TextPromptPair",
    "encode_token_embeddings",
    "margin_ranking_loss",
    "negative_probability_loss",
    "prompt_classification_loss",
    "prompt_logits",
    "prompt_probabilities",
    "supports_token_embeddings",
]

# CLIP-LIT multiplies cosines by a fixed 100 (CLIP's trained logit scale, not learned here).
LOGIT_SCALE = 100.0


class PromptPair(nn.Module):
    """Base class: a learnable (negative, positive) pair of directions.

    Attributes:
        embed_dim: size ``D`` of the embedding space the prompts live in.
    """

    embed_dim: int

    def forward(self) -> Tensor:
        """The two prompt features.

        Returns:
            ``(2, D)`` float tensor with unit rows: row 0 negative (backlit), row 1 positive.
        """
        raise NotImplementedError

    def direction(self) -> Tensor:
        """Unit vector ``normalize(t_positive - t_negative)`` of shape ``(D,)``, detached."""
        with torch.no_grad():
            feats = self()
            return F.normalize(feats[1] - feats[0], dim=0)


class LatentPromptPair(PromptPair):
    """Two free vectors in the image encoder's embedding space (CLIP-LIT-Latent).

    Args:
        embed_dim: the encoder's embedding size ``D``.
        generator: optional random generator for a reproducible initialisation.
    """

    def __init__(self, embed_dim: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.embed_dim = embed_dim
        self.vectors = nn.Parameter(torch.randn(2, embed_dim, generator=generator))

    def forward(self) -> Tensor:
        return F.normalize(self.vectors, dim=-1)


def supports_token_embeddings(model: Any) -> bool:
    """Whether ``model`` is an OpenCLIP ``CLIP`` whose text tower can take token embeddings.

    That needs a token embedding table, a causal attention mask and pooling at the
    end-of-text token (``text_pool_type == "argmax"``), which is how OpenAI CLIP is built.
    """
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    return (
        all(hasattr(model, name) for name in needed)
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", "argmax") == "argmax"
    )


def encode_token_embeddings(model: Any, embeddings: Tensor, eot_positions: Tensor) -> Tensor:
    """Run CLIP's text tower on token embeddings instead of token ids.

    OpenCLIP's ``encode_text`` only accepts ids; learned prompts (and the vocabulary encoding
    in :mod:`rave.guidance.interpret`) need to enter after the embedding lookup. Because the
    text transformer is causal, the feature at position ``p`` depends only on positions
    ``0..p``, so a sequence may be cut right after its end-of-text token: the result equals
    ``encode_text`` on the full 77-token sequence, at a fraction of the cost.

    Args:
        model: an OpenCLIP ``CLIP`` model (see :func:`supports_token_embeddings`).
        embeddings: ``(B, L, W)`` token embeddings, ``L <= model.context_length``.
        eot_positions: ``(B,)`` long, the index of the end-of-text token of each sequence.

    Returns:
        ``(B, D)`` text features, not normalised.
    """
    if not supports_token_embeddings(model):
        raise ValueError(
            f"{type(model).__name__} has no causal text transformer taking token embeddings"
        )
    length = embeddings.shape[1]
    if length > model.positional_embedding.shape[0]:
        raise ValueError(
            f"sequence of {length} tokens exceeds the context length "
            f"{model.positional_embedding.shape[0]}"
        )
    cast_dtype = model.transformer.get_cast_dtype()
    x = embeddings.to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot_positions.to(x.device)]
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
    return x


class TextPromptPair(PromptPair):
    """Two learned token sequences fed through CLIP's frozen text transformer (CLIP-LIT).

    Each prompt starts as the token embeddings of ``" ".join([init_word] * n_ctx)`` with the
    start and end tokens. As in the reference code every position of that sequence is learned
    (start, words and end token); positions after the end token are dropped because the causal
    transformer never reads them, so the parameter is ``(2, n_ctx + 2, W)`` rather than the
    reference's ``(2, 77, W)`` (:meth:`load_reference_embeddings` accepts either).

    The CLIP model is held by reference and never trained: only :attr:`embeddings` is a
    parameter of this module. It is not registered as a submodule, so ``state_dict()`` holds
    only the prompts.

    Args:
        model: an OpenCLIP ``CLIP`` model (frozen).
        tokenizer: the matching OpenCLIP tokenizer (callable, ``list[str] -> (N, 77)`` long).
        n_ctx: number of learnable words (16 in CLIP-LIT).
        init_word: the word repeated to initialise each prompt.
    """

    eot_positions: Tensor  # a buffer, ``(2,)`` long

    def __init__(self, model: Any, tokenizer: Any, *, n_ctx: int = 16, init_word: str = "X"):
        super().__init__()
        if not supports_token_embeddings(model):
            raise ValueError(
                f"CLIP-LIT text prompts need an OpenAI-style CLIP text tower; "
                f"{type(model).__name__} has none"
            )
        if n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive, got {n_ctx}")
        tokens = tokenizer([" ".join([init_word] * n_ctx)] * 2)
        eot = int(tokens[0].argmax())
        device = model.token_embedding.weight.device
        with torch.no_grad():
            init = model.token_embedding(tokens[:, : eot + 1].to(device)).float()
        # A plain attribute (not a submodule): keeps the frozen CLIP out of state_dict/parameters.
        object.__setattr__(self, "_clip", model)
        self.embed_dim = int(_text_embed_dim(model))
        self.n_ctx = n_ctx
        self.embeddings = nn.Parameter(init.clone())
        self.register_buffer("eot_positions", torch.full((2,), eot, dtype=torch.long))

    @property
    def clip_model(self) -> Any:
        """The frozen OpenCLIP model the prompts are encoded with."""
        return self._clip

    def forward(self) -> Tensor:
        feats = encode_token_embeddings(self._clip, self.embeddings, self.eot_positions)
        return F.normalize(feats.float(), dim=-1)

    def load_reference_embeddings(self, embeddings: Tensor) -> None:
        """Load prompt embeddings saved by the reference code, ``(2, L, W)`` with ``L >= n_ctx+2``.

        Raises:
            ValueError: if the shape does not fit this pair.
        """
        need = self.embeddings.shape[1]
        if embeddings.ndim != 3 or embeddings.shape[0] != 2 or embeddings.shape[1] < need:
            raise ValueError(
                f"expected prompt embeddings of shape (2, >= {need}, "
                f"{self.embeddings.shape[2]}), got {tuple(embeddings.shape)}"
            )
        with torch.no_grad():
            self.embeddings.copy_(embeddings[:, :need].to(self.embeddings))


def _text_embed_dim(model: Any) -> int:
    projection = model.text_projection
    if projection is None:
        return int(model.ln_final.normalized_shape[0])
    if isinstance(projection, nn.Linear):
        return int(projection.out_features)
    return int(projection.shape[1])


def prompt_logits(image_embeddings: Tensor, prompts: Tensor, scale: float = LOGIT_SCALE) -> Tensor:
    """Scaled cosine logits of images against the prompt pair.

    Args:
        image_embeddings: ``(B, D)`` unit image embeddings.
        prompts: ``(2, D)`` unit prompt features (negative, positive).
        scale: logit scale (100 in CLIP-LIT).

    Returns:
        ``(B, 2)`` logits ``scale * cos``.
    """
    if image_embeddings.ndim != 2 or prompts.ndim != 2:
        raise ValueError(
            f"expected (B, D) and (2, D), got {tuple(image_embeddings.shape)} "
            f"and {tuple(prompts.shape)}"
        )
    if image_embeddings.shape[1] != prompts.shape[1]:
        raise ValueError(
            f"embedding sizes differ: images {image_embeddings.shape[1]}, "
            f"prompts {prompts.shape[1]}"
        )
    return scale * image_embeddings @ prompts.to(image_embeddings).T


def prompt_probabilities(
    image_embeddings: Tensor, prompts: Tensor, scale: float = LOGIT_SCALE
) -> Tensor:
    """``p_k(x) = softmax_k(scale * cos(e_x, t_k))``: ``(B, 2)``, rows sum to 1."""
    return prompt_logits(image_embeddings, prompts, scale).softmax(dim=-1)


def prompt_classification_loss(
    image_embeddings: Tensor, labels: Tensor, prompts: Tensor, scale: float = LOGIT_SCALE
) -> Tensor:
    """Cross-entropy of the prompt classifier (prompt initialisation).

    Args:
        image_embeddings: ``(B, D)`` unit embeddings.
        labels: ``(B,)`` long, 0 = backlit, 1 = well-lit.
        prompts: ``(2, D)`` unit prompt features.

    Returns:
        scalar mean cross-entropy.
    """
    return F.cross_entropy(prompt_logits(image_embeddings, prompts, scale), labels)


def negative_probability_loss(
    image_embeddings: Tensor, prompts: Tensor, scale: float = LOGIT_SCALE
) -> Tensor:
    """``L_clip``: mean over the batch of the probability of the negative (backlit) prompt."""
    return prompt_probabilities(image_embeddings, prompts, scale)[:, 0].mean()


def margin_ranking_loss(
    more_backlit: Tensor,
    less_backlit: Tensor,
    prompts: Tensor,
    margin: float,
    scale: float = LOGIT_SCALE,
) -> Tensor:
    """Hinge ``mean max(0, m - (p_neg(a) - p_neg(b)))`` over paired rows of ``a`` and ``b``.

    ``a`` should look more backlit than ``b`` by at least ``margin`` in negative probability.

    Args:
        more_backlit: ``(B, D)`` unit embeddings of ``a``.
        less_backlit: ``(B, D)`` unit embeddings of ``b`` (same ``B``).
        prompts: ``(2, D)`` unit prompt features.
        margin: ``m`` in [0, 1].

    Returns:
        scalar loss.
    """
    if more_backlit.shape != less_backlit.shape:
        raise ValueError(
            f"paired batches differ in shape: {tuple(more_backlit.shape)} "
            f"vs {tuple(less_backlit.shape)}"
        )
    p_a = prompt_probabilities(more_backlit, prompts, scale)[:, 0]
    p_b = prompt_probabilities(less_backlit, prompts, scale)[:, 0]
    return F.relu(margin - (p_a - p_b)).mean()
