"""Bias correction of a residual vector (docs/method.md, "Shifted residual").

A residual vector ``r`` separates a well-lit from a backlit image set, but it also encodes
whatever else the two sets differ by (content, season, place). Two corrections are offered:

* :func:`shift_residual`, the paper's: remove from ``r`` the direction ``u`` summarising the
  vocabulary tokens at both ends of ``r``. Two vocabularies: ``"decoded"``, the authors' (each
  token id decoded to text, re-tokenized, keyed by the text, raw features weighted), which is
  how ``rave-unpaired-shifted`` was made; ``"token-ids"``, each id encoded as
  ``[start, id, end]`` with unit features (one entry per id, no duplicates);
* :func:`remove_concepts`, more general: remove the directions of user-given texts (e.g.
  ``"sunset"``, ``"beach"``), i.e. project ``r`` onto the orthogonal complement of their span.

Both return a new residual with a unit ``r'`` and the threshold recomputed as
``thr' = v_w . r'``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rave.guidance.interpret import (
    VocabEmbeddings,
    decoded_vocab_embeddings,
    encode_texts,
    vocab_embeddings,
)

__all__ = [
    "VOCABULARIES",
    "Vocabulary",
    "bias_direction",
    "build_vocabulary",
    "project_out",
    "remove_concepts",
    "shift_residual",
]

logger = logging.getLogger(__name__)

Vocabulary = Literal["decoded", "token-ids"]
VOCABULARIES: tuple[Vocabulary, ...] = ("decoded", "token-ids")


def build_vocabulary(
    encoder: Any,
    vocabulary: Vocabulary | str = "decoded",
    *,
    limit: int | None = None,
    progress: bool = False,
    batch_size: int = 256,
    use_cache: bool = True,
) -> VocabEmbeddings:
    """The vocabulary embeddings of ``encoder`` built the ``vocabulary`` way (module docstring).

    ``rave shift`` and ``rave interpret`` both read a residual through it, so the tokens that
    interpret a residual are the tokens its shift removes.
    """
    options: dict[str, Any] = {
        "limit": limit, "progress": progress, "batch_size": batch_size, "use_cache": use_cache,
    }  # fmt: skip
    if vocabulary == "decoded":
        return decoded_vocab_embeddings(encoder, **options)
    if vocabulary == "token-ids":
        return vocab_embeddings(encoder, **options)
    raise ValueError(f"vocabulary must be one of {', '.join(VOCABULARIES)}, got {vocabulary!r}")


def bias_direction(
    residual: Tensor, embeddings: Tensor, top_k: int = 15, *, norms: Tensor | None = None
) -> Tensor:
    """The direction ``u`` of the shifted-residual construction.

    ``s_t = cos(e_t, r)``; ``A = normalize(mean of s_t e_t over the top_k highest s_t)``,
    ``B = normalize(mean of s_t e_t over the top_k lowest s_t)``; ``u = normalize(A + B)``.
    ``e_t`` is the unit embedding, or with ``norms`` the raw feature ``norms_t * e_t``.

    Args:
        residual: ``(D,)`` the residual vector (normalised here).
        embeddings: ``(V, D)`` unit text embeddings of the vocabulary.
        top_k: tokens taken at each end (15 in the paper).
        norms: ``(V,)`` raw feature norms, to weight raw features as the authors' code does.

    Returns:
        ``(D,)`` unit vector.
    """
    if embeddings.ndim != 2 or residual.shape != embeddings.shape[1:]:
        raise ValueError(
            f"residual of shape {tuple(residual.shape)} does not match embeddings "
            f"of shape {tuple(embeddings.shape)}"
        )
    if not 0 < top_k <= embeddings.shape[0]:
        raise ValueError(f"top_k must be in 1..{embeddings.shape[0]}, got {top_k}")
    r = F.normalize(residual.double(), dim=0)
    e = embeddings.double()
    scores = e @ r
    weighted = scores[:, None] * e
    if norms is not None:
        weighted = weighted * norms.double()[:, None]
    a = F.normalize(weighted[torch.topk(scores, top_k).indices].mean(0), dim=0)
    b = F.normalize(weighted[torch.topk(-scores, top_k).indices].mean(0), dim=0)
    return F.normalize(a + b, dim=0).to(residual.dtype)


def project_out(residual: Tensor, directions: Tensor) -> Tensor:
    """``normalize(r - Q Q^T r)`` with ``Q`` an orthonormal basis of the rows of ``directions``.

    Args:
        residual: ``(D,)`` vector.
        directions: ``(N, D)`` directions to remove (need not be orthogonal or unit).

    Returns:
        ``(D,)`` unit vector orthogonal to every row of ``directions``.

    Raises:
        ValueError: if ``r`` lies (numerically) inside the span of ``directions``.
    """
    if directions.ndim == 1:
        directions = directions[None]
    if directions.shape[1:] != residual.shape:
        raise ValueError(
            f"directions of shape {tuple(directions.shape)} do not match the residual "
            f"of shape {tuple(residual.shape)}"
        )
    r = residual.double()
    # A QR basis handles several, mutually correlated directions (text embeddings of related
    # concepts are far from orthogonal), which sequential single projections would not.
    q, _ = torch.linalg.qr(directions.double().T)
    remainder = r - q @ (q.T @ r)
    norm = remainder.norm()
    if norm < 1e-6 * r.norm():
        raise ValueError("the residual lies in the span of the removed directions: nothing is left")
    return (remainder / norm).to(residual.dtype)


def _with_residual(rv: Any, new_residual: Tensor, step: str) -> Any:
    """A copy of ``rv`` with ``new_residual``, ``thr = v_w . r'``, and ``step`` recorded in its
    derivation (a shifted file says so: its other metadata is the original's)."""
    v_w = F.normalize(rv.mean_well_lit.double(), dim=0)
    threshold = float(v_w @ new_residual.double())
    changes = {"residual": new_residual.to(rv.residual.dtype), "threshold": threshold}
    if hasattr(rv, "derived"):
        return rv.derived(step, **changes)
    return dataclasses.replace(rv, **changes)


def _check_encoder(rv: Any, encoder: Any) -> None:
    from rave.guidance.residual import check_encoder

    check_encoder(rv, encoder)


def shift_residual(
    rv: Any,
    encoder: Any,
    top_k: int = 15,
    *,
    vocab: VocabEmbeddings | None = None,
    vocab_limit: int | None = None,
    progress: bool = False,
    vocabulary: Vocabulary | str = "decoded",
) -> Any:
    """The paper's shifted residual ``r' = normalize(r - (u . r) u)``.

    Args:
        rv: a :class:`rave.guidance.residual.ResidualVector`.
        encoder: the CLIP encoder the residual was computed with (its text tower is used);
            may be None when ``vocab`` is given.
        top_k: tokens at each end of the vocabulary ranking (15 in the paper).
        vocab: precomputed vocabulary embeddings (else computed or read from the cache).
        vocab_limit: use only the first ``vocab_limit`` tokens (quick looks and tests).
        progress: progress bar while encoding the vocabulary.
        vocabulary: how ``vocab`` is built when not given: ``"decoded"`` (the authors' way,
            reproduces ``rave-unpaired-shifted``) or ``"token-ids"`` (see the module docstring).

    Returns:
        a copy of ``rv`` with the shifted residual and its recomputed threshold.
    """
    if encoder is not None:
        _check_encoder(rv, encoder)
    if vocab is None:
        if encoder is None:
            raise ValueError("shift_residual needs an encoder or precomputed vocabulary embeddings")
        vocab = build_vocabulary(encoder, vocabulary, limit=vocab_limit, progress=progress)
    u = bias_direction(rv.residual.float().cpu(), vocab.embeddings, top_k, norms=vocab.norms)
    shifted = project_out(rv.residual.float().cpu(), u)
    cos = float(shifted @ F.normalize(rv.residual.float().cpu(), dim=0))
    logger.info("shifted residual: cos(r, r') = %.4f", cos)
    kind = "decoded" if vocab.decoded else "token-id"
    step = (
        f"shifted: direction of the {top_k} tokens at each end removed "
        f"({len(vocab.tokens)} {kind} vocabulary entries, cos(r, r') = {cos:.4f})"
    )
    return _with_residual(rv, shifted, step)


def remove_concepts(rv: Any, texts: Sequence[str], encoder: Any) -> Any:
    """Remove the text embeddings of ``texts`` (their whole span) from the residual.

    Args:
        rv: a :class:`rave.guidance.residual.ResidualVector`.
        texts: concepts to remove, each encoded as given (e.g. ``"sunset"``).
        encoder: the CLIP encoder the residual was computed with.

    Returns:
        a copy of ``rv`` whose residual is unit and orthogonal to every text embedding.
    """
    _check_encoder(rv, encoder)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("no concepts to remove (empty texts)")
    directions = encode_texts(encoder, texts)
    step = "concepts removed: " + ", ".join(repr(t) for t in texts)
    return _with_residual(rv, project_out(rv.residual.float().cpu(), directions), step)
