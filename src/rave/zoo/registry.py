"""The table of enhancement networks known by name.

Every downloadable entry pins the sha256 of its file: a download (or a cached copy) whose
hash differs is never loaded. The cached copy of an entry is named
``<stem>-<first 8 hex digits of sha256>.pth`` (for example ``rave_unpaired-21fb4300.pth``),
where ``stem`` is the name the authors' RAVE repository gives the file (``clip_lit_original``
for the original CLIP-LIT model, whose upstream file is ``enhancement_model.pth``).

The name ``default`` is reserved for weights shipped inside the package
(``rave/zoo/weights/default.safetensors`` or ``default.pth``); it has no URL.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelInfo",
    "UnknownModelError",
    "ZooError",
    "get_model_info",
    "model_names",
    "spelled_like",
]

DEFAULT_MODEL = "default"

_RAVE_REPO = "https://github.com/Atmyre/RAVE"
_CLIP_LIT_REPO = "https://github.com/ZhexinLiang/CLIP-LIT"
# Neither repository ships a licence file; say so rather than guess one.
_NO_LICENCE = "no licence stated"
_UNPAIRED_DATA = "BAID 380 backlit + DIV2K 384 well-lit"
_PAIRED_DATA = "BAID 380 backlit + their ground truth"


class ZooError(RuntimeError):
    """A model name that cannot be resolved to weights (unknown, not cached, not shipped)."""


class UnknownModelError(ZooError, ValueError):
    """A name that is neither a known model nor a checkpoint path."""


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the model zoo.

    Attributes:
        name: the name users pass to ``--model`` / :func:`rave.load_enhancer`.
        method: ``"RAVE"``, ``"CLIP-LIT"`` or ``"CLIP-LIT-Latent"``; ``""`` for ``default``.
        regime: ``"paired"`` or ``"unpaired"`` training (``""`` for ``default``).
        training_data: what the network was trained on.
        description: one line for ``rave models``.
        stem: stem of the cached file name (``<stem>-<sha256[:8]>.pth``).
        url: public download address, or ``None`` for the built-in ``default``.
        sha256: pinned hash of the file at ``url`` (64 hex digits), or ``None``.
        source: repository the weights come from.
        licence: licence of the weights as far as the source states it.
        size: the file's size in bytes (a download of another size is stopped early).
    """

    name: str
    method: str
    regime: str
    training_data: str
    description: str
    stem: str
    url: str | None = None
    sha256: str | None = None
    source: str = ""
    licence: str = ""
    size: int | None = None

    @property
    def builtin(self) -> bool:
        """True for the weights shipped inside the package (no download)."""
        return self.url is None

    @property
    def cache_filename(self) -> str:
        """``<stem>-<first 8 hex of sha256>.pth``: the file's name in the cache folder."""
        if self.sha256 is None:
            raise ZooError(f"model {self.name!r} is built in and has no cached file")
        return f"{self.stem}-{self.sha256[:8]}.pth"


def _released(
    name: str,
    stem: str,
    method: str,
    regime: str,
    sha256: str,
    size: int,
    *,
    url: str | None = None,
) -> ModelInfo:
    source = _RAVE_REPO if url is None else _CLIP_LIT_REPO
    data = _PAIRED_DATA if regime == "paired" else _UNPAIRED_DATA
    return ModelInfo(
        name=name,
        method=method,
        regime=regime,
        training_data=data,
        description=(
            f"{method}, {regime}: {data}; {source.removeprefix('https://github.com/')}, "
            f"{_NO_LICENCE}"
        ),
        stem=stem,
        url=url or f"{_RAVE_REPO}/raw/main/pretrained_models/{stem}.pth",
        sha256=sha256,
        source=source,
        licence=_NO_LICENCE,
        size=size,
    )


_ENTRIES: tuple[ModelInfo, ...] = (
    ModelInfo(
        name=DEFAULT_MODEL,
        method="",
        regime="",
        training_data="",
        description=(
            "shipped inside the rave package (no download); trained here, keeps highlights; MIT"
        ),
        stem=DEFAULT_MODEL,
        source="rave-enhance",
        licence="MIT",
    ),
    _released(
        "rave-unpaired",
        "rave_unpaired",
        "RAVE",
        "unpaired",
        "21fb43004af7de2e1782b5799fbaa91dc62ca2730134229323bceab53370742c",
        1127691,
    ),
    _released(
        "rave-paired",
        "rave_paired",
        "RAVE",
        "paired",
        "3d4e27eecbde9b55d2ef96afadc8cf4c2d0927fb8780ce1df6508d01a7ef811f",
        1127691,
    ),
    _released(
        "rave-unpaired-shifted",
        "rave_unpaired_shifted",
        "RAVE, residual shifted by 15 tokens",
        "unpaired",
        "5bcf3feff7dcc4891be878721c2defba0305e343c6b3821f9e88a9950c06ae5e",
        1128144,
    ),
    _released(
        "clip-lit-unpaired",
        "clip_lit_unpaired",
        "CLIP-LIT",
        "unpaired",
        "7b16e3815c1380138ada75ca5000f818db4462c27f4522a1de46023d96c09d0d",
        1127723,
    ),
    _released(
        "clip-lit-paired",
        "clip_lit_paired",
        "CLIP-LIT",
        "paired",
        "5c3e14b3674d516190e77e54614476fe19ac91b9d8419c0c25533e573ff65d2d",
        1127691,
    ),
    _released(
        "clip-lit-latent-unpaired",
        "clip_lit_latent_unpaired",
        "CLIP-LIT-Latent",
        "unpaired",
        "931966b5cbc3320d90a62c9ee7c820e0d291d7abfb85989b8296458e2354f94e",
        1127723,
    ),
    _released(
        "clip-lit-latent-paired",
        "clip_lit_latent_paired",
        "CLIP-LIT-Latent",
        "paired",
        "8bc9d8882837dbee3d266f4407478f63220174cd5838fbcadf2f4b2c070146ec",
        1127723,
    ),
    # The original CLIP-LIT release (ICCV 2023), from the CLIP-LIT authors' repository.
    _released(
        "clip-lit",
        "clip_lit_original",
        "CLIP-LIT (original ICCV 2023 release)",
        "unpaired",
        "67aa1bdbac345842670e494b02953f299e5088bcb3f98a18bd60b06fef48b5c9",
        1126923,
        url=f"{_CLIP_LIT_REPO}/raw/main/pretrained_models/enhancement_model.pth",
    ),
)

MODELS: dict[str, ModelInfo] = {info.name: info for info in _ENTRIES}
if len(MODELS) != len(_ENTRIES):  # pragma: no cover - guards edits to the table
    raise RuntimeError("duplicate model names in rave.zoo.registry")


def model_names() -> list[str]:
    """All model names, ``default`` first, then the released checkpoints."""
    return list(MODELS)


def get_model_info(name: str) -> ModelInfo:
    """The entry called ``name``.

    Raises:
        UnknownModelError: ``name`` is not in the table; the message lists the known names
            and suggests close matches.
    """
    try:
        return MODELS[name]
    except KeyError:
        # A spelling of one model's name: suggest it alone; else the closest spellings.
        same = spelled_like(name)
        key = name.strip().lower()
        close = [same] if same else difflib.get_close_matches(key, MODELS, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(MODELS)}; "
            "or pass the path of a checkpoint file (.pth, .pt or .safetensors)."
        ) from None


def spelled_like(text: str) -> str | None:
    """The model ``text`` spells in another letter case, with ``_`` for ``-``, or as the
    authors' file stem (``rave_unpaired``, ``clip_lit_original``); ``None`` if none."""
    key = text.strip().lower().replace("_", "-").removesuffix(".pth")
    for info in _ENTRIES:
        if key in (info.name, info.stem.replace("_", "-")):
            return info.name
    return None
