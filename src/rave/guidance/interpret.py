"""Reading a guidance direction through CLIP's text vocabulary (docs/method.md, "Shifted residual").

Every token of CLIP's byte-pair vocabulary (49,408 entries) is encoded as a one-token text
(start token, the token, end token) and L2-normalised. The tokens whose embeddings are most
and least aligned with a direction (a residual vector, or a learned prompt pair's
``positive - negative``) say which concepts separate the two image sets.

Encoding the vocabulary takes minutes on a CPU, so the embeddings are cached on disk per
encoder name and text-tower weights (``$RAVE_HOME/vocab/`` or the user cache ``rave/vocab/``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rave.guidance.prompts import encode_token_embeddings, supports_token_embeddings

__all__ = [
    "TokenRanking",
    "VocabEmbeddings",
    "cache_dir",
    "decoded_vocab_embeddings",
    "display_token",
    "encode_texts",
    "plot_ranking",
    "rank_tokens",
    "text_tower_fingerprint",
    "vocab_embeddings",
    "vocabulary",
]

logger = logging.getLogger(__name__)

_WORD_END = "</w>"


@dataclass(frozen=True)
class VocabEmbeddings:
    """Text embeddings of (a prefix of) the BPE vocabulary.

    Attributes:
        tokens: ``V`` raw vocabulary strings (``"sunset</w>"``), in token-id order; or, for
            :func:`decoded_vocab_embeddings`, the distinct decoded texts (``"sunset "``).
        embeddings: ``(V, D)`` float32, unit rows; row ``i`` is ``tokens[i]``.
        norms: ``(V,)`` float32 norms of the text features before normalisation, kept by
            :func:`decoded_vocab_embeddings` because the authors' shift weights raw features;
            None for the token-id vocabulary.
    """

    tokens: list[str]
    embeddings: Tensor
    norms: Tensor | None = None

    @property
    def decoded(self) -> bool:
        """Whether ``tokens`` are decoded texts (shown as they are) rather than BPE strings."""
        return self.norms is not None

    def label(self, index: int) -> str:
        """How to show entry ``index`` to a person."""
        return self.display(self.tokens[index])

    def display(self, token: str) -> str:
        """How to show one of ``tokens`` to a person: a decoded text as ``repr`` (its spaces
        count: ``'star '`` is the word, ``'star'`` the piece), a BPE string by
        :func:`display_token`."""
        return repr(token) if self.decoded else display_token(token)


@dataclass(frozen=True)
class TokenRanking:
    """The tokens at both ends of a direction.

    Attributes:
        most: ``K`` pairs ``(token, cosine)``, most aligned first.
        least: ``K`` pairs ``(token, cosine)``, least aligned (most negative) first.
    """

    most: list[tuple[str, float]]
    least: list[tuple[str, float]]


def cache_dir() -> Path:
    """Folder of cached vocabulary embeddings: ``vocab`` in rave's one cache folder."""
    from rave.zoo.download import cache_dir as rave_cache_dir

    return rave_cache_dir() / "vocab"


def _tokenizer_of(encoder: Any) -> Any:
    tokenizer = getattr(encoder, "tokenizer", None)
    needed = ("decoder", "sot_token_id", "eot_token_id")
    if tokenizer is None or not all(hasattr(tokenizer, name) for name in needed):
        raise ValueError(
            f"encoder {getattr(encoder, 'name', encoder)!r} has no CLIP BPE tokenizer: "
            "text interpretation needs a CLIP encoder such as clip:ViT-B-32@openai"
        )
    return tokenizer


def _clip_model_of(encoder: Any) -> Any:
    model = getattr(encoder, "model", None)
    if model is None or not hasattr(model, "encode_text"):
        raise ValueError(
            f"encoder {getattr(encoder, 'name', encoder)!r} has no text tower: text "
            "interpretation needs a CLIP encoder such as clip:ViT-B-32@openai"
        )
    return model


def vocabulary(tokenizer: Any) -> list[str]:
    """All vocabulary strings of a CLIP BPE tokenizer, indexed by token id."""
    decoder = tokenizer.decoder
    return [decoder[i] for i in range(len(decoder))]


def display_token(token: str) -> str:
    """Human-readable form of a raw vocabulary string.

    CLIP's BPE works on bytes shown as printable stand-in characters; they are mapped back to
    UTF-8 text (``"Ã©</w>"`` is ``"é"``). A word end loses ``</w>``; a piece that does not
    end a word gets a trailing ``-``. Control characters (105 single-byte tokens decode to
    one: newline, ESC, backspace...) are shown escaped (``"\\n-"``), so that a ranking
    printed on a terminal keeps its lines and cannot send it escape sequences.
    """
    if token.startswith("<") and token.endswith("_of_text>"):
        return token
    word_end = token.endswith(_WORD_END)
    body = token[: -len(_WORD_END)] if word_end else token
    decoder = _byte_decoder()
    text = bytes(decoder.get(c, ord("?")) for c in body).decode("utf-8", errors="replace")
    text = "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    return text if word_end else text + "-"


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from open_clip.tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def text_tower_fingerprint(model: Any) -> str:
    """SHA-256 (hex) of the text-tower weights, so caches follow the weights, not the name."""
    from rave.encoders.base import tensors_sha256

    def named() -> Iterator[tuple[str, Tensor]]:
        # CLIP's text tower, or CustomTextCLIP's (``text``)
        parts = ("token_embedding", "positional_embedding", "transformer", "ln_final")
        for name in (*parts, "text_projection", "text"):
            yield from _named_tensors(name, getattr(model, name, None))

    return tensors_sha256(named())


def _named_tensors(name: str, part: Any) -> Iterator[tuple[str, Tensor]]:
    if isinstance(part, Tensor):
        yield name, part
    elif part is not None:
        for key, value in sorted(part.state_dict().items()):
            yield f"{name}.{key}", value


def _cache_file(encoder_name: str, fingerprint: str, count: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_name)
    return cache_dir() / f"{slug}-{fingerprint[:16]}-n{count}.safetensors"


def _atomic_save(tensors: dict[str, Tensor], path: Path, *, quiet: bool = False) -> None:
    """Cache ``tensors`` in ``path``; a cache that cannot be written is a warning, not an error.

    The embeddings were just computed (minutes for the full vocabulary on a CPU): a
    read-only or full cache folder must not throw them away with a traceback.
    """
    from safetensors.torch import save

    from rave.errors import os_reason
    from rave.io.atomic import atomic_write

    try:
        atomic_write(path, save(tensors))
    except OSError as err:
        if not quiet:  # a partial save that fails is retried, and the final one warns
            logger.warning(
                "vocabulary embeddings not cached (cannot write %s: %s); they will be "
                "encoded again next time",
                path,
                os_reason(err),
            )
        return
    if not quiet:
        logger.info("vocabulary embeddings cached in %s", path)


def _load_cached(path: Path, count: int, dim: int) -> Tensor | None:
    from safetensors.torch import load_file

    try:
        embeddings = load_file(str(path))["embeddings"]
    except Exception as exc:  # a damaged cache is recomputed, not fatal
        logger.warning("ignoring unreadable vocabulary cache %s: %s", path, exc)
        return None
    if embeddings.shape != (count, dim):
        logger.warning("ignoring vocabulary cache %s of shape %s", path, tuple(embeddings.shape))
        return None
    return embeddings


def vocab_embeddings(
    encoder: Any,
    *,
    limit: int | None = None,
    batch_size: int = 256,
    use_cache: bool = True,
    progress: bool = False,
) -> VocabEmbeddings:
    """Unit text embeddings of the first ``limit`` vocabulary tokens (all by default).

    Each token ``t`` is encoded as the sequence ``[start, t, end]``. Results are cached on disk
    (see :func:`cache_dir`); a cached full vocabulary also serves any ``limit``.

    Args:
        encoder: a CLIP encoder exposing ``model`` (OpenCLIP) and ``tokenizer`` and ``name``.
        limit: encode only token ids ``0..limit-1`` (quick looks and tests).
        batch_size: tokens per forward pass.
        use_cache: read and write the disk cache.
        progress: show a tqdm progress bar while encoding.

    Returns:
        the tokens and their ``(V, D)`` unit embeddings.
    """
    tokenizer = _tokenizer_of(encoder)
    model = _clip_model_of(encoder)
    tokens = vocabulary(tokenizer)
    total = len(tokens)
    count = total if limit is None else max(1, min(int(limit), total))
    tokens = tokens[:count]
    name = str(getattr(encoder, "name", type(model).__name__))

    fingerprint = text_tower_fingerprint(model) if use_cache else ""
    if use_cache:
        dim = int(_probe_dim(model, tokenizer))
        for candidate_count in dict.fromkeys((count, total)):
            path = _cache_file(name, fingerprint, candidate_count)
            if path.is_file():
                cached = _load_cached(path, candidate_count, dim)
                if cached is not None:
                    logger.info("vocabulary embeddings read from %s", path)
                    return VocabEmbeddings(tokens, cached[:count].contiguous())

    path = _cache_file(name, fingerprint, count) if use_cache else None
    embeddings = _encode_token_ids(model, tokenizer, count, batch_size, progress, path)
    if path is not None:
        _atomic_save({"embeddings": embeddings}, path)
    return VocabEmbeddings(tokens, embeddings)


def decoded_vocab_embeddings(
    encoder: Any,
    *,
    limit: int | None = None,
    batch_size: int = 256,
    use_cache: bool = True,
    progress: bool = False,
) -> VocabEmbeddings:
    """The vocabulary as the authors' shifted-residual code builds it.

    Each token id is decoded to text (``"star</w>"`` becomes ``"star "``), the text is
    tokenized again as any prompt would be and encoded; entries are keyed by the decoded text.
    So the list differs from :func:`vocab_embeddings`: ids that decode to the same text
    collapse into one entry, while a word piece and its word-final form (``"star"``,
    ``"star "``) are two entries with the same embedding (both re-tokenize to ``star</w>``),
    which gives such words double weight among the top tokens. The raw feature norms are kept
    (``norms``): the authors weight unnormalised features.

    Args:
        encoder: a CLIP encoder exposing ``model`` (OpenCLIP), ``tokenizer`` and ``name``.
        limit: token ids ``0..limit-1`` only (quick looks and tests).
        batch_size: texts per forward pass.
        use_cache: read and write the disk cache (see :func:`cache_dir`).
        progress: show a tqdm progress bar while encoding.

    Returns:
        distinct decoded texts (first-occurrence order), unit embeddings and raw norms.
    """
    tokenizer = _tokenizer_of(encoder)
    model = _clip_model_of(encoder)
    total = len(tokenizer.decoder)
    count = total if limit is None else max(1, min(int(limit), total))
    texts = list(dict.fromkeys(tokenizer.decode([i]) for i in range(count)))
    name = str(getattr(encoder, "name", type(model).__name__)) + "-decoded"
    path = _cache_file(name, text_tower_fingerprint(model), count) if use_cache else None
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        try:
            cached = load_file(str(path))
            if cached["embeddings"].shape[0] == len(texts) == cached["norms"].shape[0]:
                logger.info("decoded vocabulary embeddings read from %s", path)
                return VocabEmbeddings(texts, cached["embeddings"], cached["norms"])
        except Exception as exc:  # a damaged cache is recomputed, not fatal
            logger.warning("ignoring unreadable vocabulary cache %s: %s", path, exc)
    device = _model_device(model)
    fast = supports_token_embeddings(model)

    def encode(start: int, stop: int) -> Tensor:
        ids = tokenizer(texts[start:stop])
        positions = ids.argmax(dim=1)  # the end-of-text token has the highest id
        if fast:
            # causal text tower: cutting after the longest end token changes nothing
            ids = ids[:, : int(positions.max()) + 1].to(device)
            return encode_token_embeddings(model, model.token_embedding(ids), positions)
        return model.encode_text(ids.to(device))

    raw = _encode_resumably(len(texts), batch_size, encode, path, progress)
    norms = raw.norm(dim=1)
    embeddings = raw / norms.clamp_min(1e-12)[:, None]
    if path is not None:
        _atomic_save({"embeddings": embeddings, "norms": norms}, path)
    return VocabEmbeddings(texts, embeddings, norms)


# How often an unfinished encoding is saved (seconds): the full vocabulary takes minutes on a
# CPU (about 12 for ViT-B/32 on two cores), which an interruption must not throw away.
PARTIAL_SAVE_SECONDS = 30.0


def _partial_file(path: Path | None) -> Path | None:
    return None if path is None else path.with_name(path.stem + ".partial.safetensors")


def _encode_resumably(
    count: int,
    batch_size: int,
    encode: Callable[[int, int], Tensor],
    path: Path | None,
    progress: bool,
) -> Tensor:
    """``cat([encode(start, stop) for each batch])``: ``(count, D)`` float32 raw features.

    With a cache ``path``, the rows done so far are saved beside it (``*.partial``) every
    :data:`PARTIAL_SAVE_SECONDS`, on Ctrl-C and on any error, and a later call with the same
    cache path starts after them; the partial file goes once the whole is done. Batches are
    encoded independently (no state between them), so a resumed result equals an
    uninterrupted one.
    """
    import time

    from tqdm.auto import tqdm

    partial = _partial_file(path)
    chunks: list[Tensor] = []
    done = 0
    if partial is not None and partial.is_file():
        from safetensors.torch import load_file

        try:
            saved = load_file(str(partial))["raw"]
            if saved.ndim == 2 and saved.shape[0] <= count:
                chunks, done = [saved], saved.shape[0]
                logger.info("resuming the vocabulary encoding at %d of %d", done, count)
        except Exception as exc:  # a damaged partial file is started afresh, not fatal
            logger.warning("ignoring unreadable partial vocabulary %s: %s", partial, exc)

    def save_partial() -> None:
        if partial is not None and chunks:
            chunks[:] = [torch.cat(chunks)]
            _atomic_save({"raw": chunks[0]}, partial, quiet=True)

    bar = tqdm(
        total=count, initial=done, desc="encoding vocabulary", unit="tok", disable=not progress
    )
    last_save = time.monotonic()
    try:
        with torch.no_grad():
            for start in range(done, count, batch_size):
                chunks.append(encode(start, min(start + batch_size, count)).float().cpu())
                bar.update(chunks[-1].shape[0])
                if time.monotonic() - last_save > PARTIAL_SAVE_SECONDS:
                    save_partial()
                    last_save = time.monotonic()
    except BaseException:  # Ctrl-C included: keep what was encoded for the next run
        save_partial()
        raise
    finally:
        bar.close()
    if partial is not None:
        with contextlib.suppress(OSError):  # an unusable cache folder was already warned about
            partial.unlink(missing_ok=True)
    return torch.cat(chunks)


def _probe_dim(model: Any, tokenizer: Any) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, Tensor):
        return int(projection.shape[1])
    if isinstance(projection, torch.nn.Linear):
        return int(projection.out_features)
    return int(encode_texts_with(model, tokenizer, ["a"]).shape[1])


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _encode_token_ids(
    model: Any, tokenizer: Any, count: int, batch_size: int, progress: bool, path: Path | None
) -> Tensor:
    device = _model_device(model)
    sot, eot = int(tokenizer.sot_token_id), int(tokenizer.eot_token_id)
    fast = supports_token_embeddings(model)
    context = int(getattr(model, "context_length", 77))

    def encode(start: int, stop: int) -> Tensor:
        ids = torch.arange(start, stop, dtype=torch.long)
        seq = torch.stack([torch.full_like(ids, sot), ids, torch.full_like(ids, eot)], dim=1)
        # Pool where encode_text would: the position of the highest id (argmax pooling).
        positions = seq.argmax(dim=1)
        if fast:
            # Causal text tower: three positions give the same feature as the padded 77.
            seq = seq.to(device)
            return encode_token_embeddings(model, model.token_embedding(seq), positions)
        padded = torch.zeros(len(ids), context, dtype=torch.long)
        padded[:, :3] = seq
        return model.encode_text(padded.to(device))

    return F.normalize(_encode_resumably(count, batch_size, encode, path, progress), dim=-1)


@torch.no_grad()
def encode_texts_with(model: Any, tokenizer: Any, texts: Sequence[str]) -> Tensor:
    """Unit text embeddings ``(N, D)`` of ``texts`` through an OpenCLIP model's ``encode_text``."""
    ids = tokenizer(list(texts)).to(_model_device(model))
    return F.normalize(model.encode_text(ids).float(), dim=-1).cpu()


def encode_texts(encoder: Any, texts: Sequence[str]) -> Tensor:
    """Unit text embeddings ``(N, D)`` of ``texts`` with a CLIP encoder's text tower."""
    if not texts:
        raise ValueError("no texts to encode")
    return encode_texts_with(_clip_model_of(encoder), _tokenizer_of(encoder), texts)


def rank_tokens(direction: Tensor, vocab: VocabEmbeddings, top_k: int = 15) -> TokenRanking:
    """The ``top_k`` tokens most and least aligned (cosine) with ``direction``.

    Args:
        direction: ``(D,)`` vector (normalised here).
        vocab: vocabulary embeddings of the same encoder.
        top_k: tokens returned at each end.

    Returns:
        the ranking; scores are cosines in [-1, 1].
    """
    embeddings = vocab.embeddings
    if direction.ndim != 1 or direction.shape[0] != embeddings.shape[1]:
        raise ValueError(
            f"direction of shape {tuple(direction.shape)} does not match the "
            f"{embeddings.shape[1]}-d vocabulary embeddings"
        )
    k = min(int(top_k), embeddings.shape[0])
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    scores = embeddings @ F.normalize(direction.float().cpu(), dim=0)
    high = torch.topk(scores, k)
    low = torch.topk(-scores, k)
    most = [(vocab.tokens[i], float(s)) for i, s in zip(high.indices, high.values, strict=True)]
    least = [(vocab.tokens[i], float(-s)) for i, s in zip(low.indices, low.values, strict=True)]
    return TokenRanking(most=most, least=least)


def plot_ranking(
    ranking: TokenRanking,
    path: str | Path,
    *,
    title: str = "",
    label: Callable[[str], str] = display_token,
    overwrite: bool = False,
) -> None:
    """Draw the ranking as two horizontal bar charts in one PNG (written atomically).

    Args:
        ranking: the tokens at both ends.
        path: the PNG to write.
        title: the figure's title.
        label: how a token is shown (``VocabEmbeddings.display`` of the ranked vocabulary).
        overwrite: replace an existing ``path``.

    Raises:
        FileExistsError: ``path`` exists (or appeared while drawing) and not ``overwrite``.
    """
    from rave.guidance.residual import save_figure

    save_figure(path, lambda: _ranking_figure(ranking, title, label), overwrite=overwrite)


def _ranking_figure(ranking: TokenRanking, title: str, label: Callable[[str], str]) -> Any:
    """The figure of :func:`plot_ranking`: both panels on one cosine scale, few ticks."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    drawable = _drawable_text()
    rows = max(len(ranking.most), len(ranking.least))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.3 * rows + 1.5), constrained_layout=True)
    panels = (
        (axes[0], ranking.most, "most aligned (well-lit side)", "tab:orange"),
        (axes[1], ranking.least, "least aligned (backlit side)", "tab:blue"),
    )
    # One scale for both panels, so that bar lengths compare across them (0 always shown):
    # the left panel grows right from its lowest value, the right one left from its highest.
    spans = [
        (min([0.0, *(s for _, s in items)]), max([0.0, *(s for _, s in items)]))
        for _, items, _, _ in panels
    ]
    width = max(high - low for low, high in spans) or 0.1
    margin = 0.05 * width
    limits = (
        (spans[0][0] - margin, spans[0][0] + width + margin),
        (spans[1][1] - width - margin, spans[1][1] + margin),
    )
    for (axis, items, heading, colour), xlim in zip(panels, limits, strict=True):
        names = [drawable(label(t)) for t, _ in items]
        axis.barh(range(len(items)), [s for _, s in items], color=colour)
        # parse_math=False: tokens such as "$$" are text, not a mathtext formula to parse
        axis.set_yticks(range(len(items)), names, parse_math=False)
        axis.invert_yaxis()
        axis.set_xlim(*xlim)
        # Few ticks: a dozen long negative labels ran into each other in a 5-inch panel.
        axis.xaxis.set_major_locator(MaxNLocator(nbins=4))
        axis.set_xlabel("cosine with the direction")
        axis.set_title(heading)
        axis.axvline(0.0, color="black", linewidth=0.5)
    if title:
        fig.suptitle(drawable(title), parse_math=False)
    return fig


def _drawable_text() -> Callable[[str], str]:
    """A function that writes the characters the plot's fonts lack as ``\\uXXXX`` escapes.

    CLIP's vocabulary holds CJK, Thai, emoji... pieces that matplotlib's default font does
    not have: drawn as they are they became empty boxes (two tokens indistinguishable) and
    each printed a ``Glyph ... missing from font`` warning on the terminal.
    """
    from matplotlib.font_manager import FontProperties, findfont, fontManager, get_font

    props = FontProperties()
    find_all = getattr(fontManager, "_find_fonts_by_props", None)  # the fallback chain
    paths = find_all(props) if find_all is not None else [findfont(props)]
    fonts = [get_font(path) for path in paths]

    def has_glyph(char: str) -> bool:
        return any(font.get_char_index(ord(char)) for font in fonts)

    def drawable(text: str) -> str:
        return "".join(
            char
            if char == " " or (char.isprintable() and has_glyph(char))
            else char.encode("unicode_escape").decode("ascii")
            for char in text
        )

    return drawable
