"""CLIP-LIT: guidance by a learned pair of text prompts (METHOD.md section 3).

Lifecycle inside the training loop:

1. :meth:`setup` (fresh runs): embed the backlit and well-lit training images once with the
   frozen guidance encoder, then initialise the prompts by cross-entropy (backlit = 0,
   well-lit = 1) for ``prompt_init_iterations`` iterations.
2. Guided stage: ``clip_weight * L_clip + identity_weight * L_id`` with
   ``L_clip = mean_i p_negative(O_i)``; the prompts are frozen here.
3. :meth:`end_of_round`: refine the prompts for ``refine_iterations`` iterations with margin
   ranking losses on the training images and on the backlit set enhanced by the best networks
   of earlier rounds (``s1`` older, ``s2`` newer), then embed the backlit set enhanced by this
   round's best network for the rounds after it.

Because the encoder is frozen and the prompt stages use no augmentation, every image's
embedding is fixed: they are computed once and the prompt stages run on embeddings only,
which makes them cheap (the text tower, for CLIP-LIT, is the only network evaluated).

Ranking pairs ``(a, b, m)`` mean "``a`` is more backlit than ``b`` by ``m``" and are turned into
``ranking_weight * sum_pairs mean_i max(0, m - (p_neg(a_i) - p_neg(b_i)))``:

- refinement 1: ``(backlit, well-lit, first_margin)``;
- refinement 2: ``(backlit, well-lit)``, ``(backlit, s1)`` with ``backlit_margin``, and
  ``(s1, well-lit, s1_well_lit_margin)``;
- later: ``(backlit, well-lit)``, ``(backlit, s1)`` with ``backlit_margin``, and
  ``(s1, s2)``, ``(s2, well-lit)`` with ``later_margin``.

METHOD.md calls ``s1, s2`` "the backlit set enhanced by the previous two rounds' best
networks"; here "previous" means rounds before the one whose refinement is running, which
is why refinement 1 has no enhanced set.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rave.guidance.prompts import (
    PromptPair,
    TextPromptPair,
    margin_ranking_loss,
    negative_probability_loss,
    prompt_classification_loss,
    prompt_logits,
)
from rave.network.checkpoint import CheckpointError, load_torch_payload
from rave.training.methods.base import GuidanceMethod, MethodContext

__all__ = [
    "PROMPTS_FILENAME",
    "ClipLitMethod",
    "ClipLitOptions",
    "PromptGuidedMethod",
    "PromptOptions",
    "load_prompt_features",
    "ranking_pairs",
    "save_prompt_features",
]

log = logging.getLogger(__name__)

# written in the run directory after initialisation and after each refinement
PROMPTS_FILENAME = "prompts.safetensors"
PROMPT_METRICS_FILENAME = "prompt_metrics.csv"
PROMPT_PLOT_FILENAME = "prompt_loss.png"


@dataclass(frozen=True)
class PromptOptions:
    """Settings shared by CLIP-LIT and CLIP-LIT-Latent (defaults: the reference code's)."""

    clip_weight: float = 320.0  # weight of L_clip in the guided stage
    logit_scale: float = 100.0  # p_k = softmax(logit_scale * cos)
    prompt_init_iterations: int = 8000
    prompt_batch_size: int = 16
    prompt_lr: float = 5e-6
    prompt_weight_decay: float = 1e-3
    refine_iterations: int = 1000  # prompt iterations after each round of network iterations
    ranking_weight: float = 200.0
    first_margin: float = 1.0  # refinement 1: (backlit, well-lit)
    backlit_margin: float = 0.9  # later: (backlit, well-lit) and (backlit, s1)
    s1_well_lit_margin: float = 0.2  # refinement 2: (s1, well-lit)
    later_margin: float = 0.1  # refinement >= 3: (s1, s2) and (s2, well-lit)
    embed_batch_size: int = 16  # images per forward pass when embedding whole sets
    prompts: str = ""  # start from this prompts file (skips the initialisation)

    def __post_init__(self) -> None:
        from rave.training.config import ConfigError

        problems = []
        for name in ("prompt_batch_size", "embed_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("prompt_init_iterations", "refine_iterations"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.prompt_lr <= 0 or self.prompt_weight_decay < 0 or self.logit_scale <= 0:
            problems.append("prompt_lr and logit_scale must be > 0, prompt_weight_decay >= 0")
        if problems:
            raise ConfigError("invalid method_options: " + "; ".join(problems))


@dataclass(frozen=True)
class ClipLitOptions(PromptOptions):
    """CLIP-LIT's settings: :class:`PromptOptions` plus the text prompt's shape."""

    n_ctx: int = 16  # learnable words per prompt
    init_word: str = "X"


def ranking_pairs(
    refinement: int,
    backlit: Tensor,
    well_lit: Tensor,
    outputs: Sequence[Tensor],
    options: PromptOptions,
) -> list[tuple[Tensor, Tensor, float]]:
    """The ``(a, b, margin)`` pairs of a prompt refinement (see the module docstring).

    Args:
        refinement: 1 for the refinement after the first round, 2 after the second, ...
        backlit: ``(N_b, D)`` embeddings of the backlit set.
        well_lit: ``(N_w, D)`` embeddings of the well-lit set.
        outputs: embeddings of the backlit set enhanced by earlier rounds' best networks,
            oldest first (only the last two are used).
        options: margins.

    Returns:
        the pairs, each ``(a, b, m)`` with ``a`` expected more backlit than ``b`` by ``m``.
    """
    if refinement <= 1 or not outputs:
        return [(backlit, well_lit, options.first_margin)]
    if refinement == 2 or len(outputs) == 1:
        s1 = outputs[-1]
        return [
            (backlit, well_lit, options.backlit_margin),
            (backlit, s1, options.backlit_margin),
            (s1, well_lit, options.s1_well_lit_margin),
        ]
    s1, s2 = outputs[-2], outputs[-1]
    return [
        (backlit, well_lit, options.backlit_margin),
        (backlit, s1, options.backlit_margin),
        (s1, s2, options.later_margin),
        (s2, well_lit, options.later_margin),
    ]


def save_prompt_features(path: Path, features: Tensor, encoder: str, method: str) -> None:
    """Write a prompts file: ``(2, D)`` unit features (negative, positive) and their encoder."""
    from safetensors.torch import save

    from rave.training.artifacts import atomic_write_bytes

    data = save(
        {"prompt_features": features.detach().float().cpu().contiguous()},
        metadata={"encoder": encoder, "method": method},
    )
    atomic_write_bytes(Path(path), data)


def load_prompt_features(path: str | Path) -> tuple[Tensor, str]:
    """Read ``(features (2, D), encoder name)`` from a prompts file or a training checkpoint.

    Accepts the ``prompts.safetensors`` a CLIP-LIT run writes, or a checkpoint (read with
    ``torch.load(weights_only=True)``) holding a method state with ``prompt_features``.

    Raises:
        ValueError: naming the file, if it holds no prompt pair.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                if "prompt_features" not in handle.keys():  # noqa: SIM118 (not a dict)
                    raise ValueError(f"{path}: no prompt_features tensor in this file")
                features = handle.get_tensor("prompt_features")
        except (OSError, RuntimeError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
        return features.float(), metadata.get("encoder", "")
    payload = load_torch_payload(path)  # CheckpointError (a ValueError) names the file
    found = _find_prompt_state(payload)
    if found is None:
        raise ValueError(f"{path}: no learned prompt pair (prompt_features) in this checkpoint")
    return found["prompt_features"].float(), str(found.get("encoder", ""))


def _find_prompt_state(obj: Any, depth: int = 0) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or depth > 4:
        return None
    if isinstance(obj.get("prompt_features"), Tensor):
        return obj
    for value in obj.values():
        found = _find_prompt_state(value, depth + 1)
        if found is not None:
            return found
    return None


def _read_image(path: Path, size: int) -> Tensor | None:
    """``(3, size, size)`` float RGB in [0, 1], resized as the training images are; None if bad."""
    # The loop's reader, so prompts see exactly the images the network trains on.
    from rave.io.views import unit_float
    from rave.training.data import load_image

    try:
        return unit_float(load_image(path, size))
    except (OSError, ValueError) as err:
        log.warning("skipped: %s", err)
        return None


class PromptGuidedMethod(GuidanceMethod):
    """Shared machinery of CLIP-LIT and CLIP-LIT-Latent; subclasses build the prompt pair."""

    Options: ClassVar[type] = PromptOptions
    losses_comparable_across_rounds: ClassVar[bool] = False

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.guidance_encoder = context.create_encoder(self.config.guidance_encoder)
        self.prompts: PromptPair = self.build_prompts().to(context.device)
        self.backlit_embeddings: Tensor | None = None  # (N_b, D) on the CPU
        self.well_lit_embeddings: Tensor | None = None  # (N_w, D)
        self.round_outputs: list[Tensor] = []  # the last two enhanced backlit sets, oldest first
        self.refinements_done = 0
        self.prompt_iterations_done = 0
        self._features: Tensor | None = None  # frozen (2, D) prompt features for the loss

    # ------------------------------------------------------------------ to override
    def build_prompts(self) -> PromptPair:
        """The untrained prompt pair."""
        raise NotImplementedError

    # ------------------------------------------------------------------- lifecycle
    def setup(self) -> None:
        opts = self.options
        self._embed_training_sets()
        if opts.prompts:
            self.load_prompts_file(opts.prompts)
            log.info("prompts read from %s (initialisation skipped)", opts.prompts)
        else:
            self._initialise_prompts()
        self._sync_prompts()
        self._publish_prompts()

    def end_of_round(self, round_index: int, best_enhancer: nn.Module) -> None:
        refinement = round_index + 1
        self._refine_prompts(refinement)
        self.refinements_done = refinement
        enhanced = self._embed_enhanced_backlit(best_enhancer)
        self.round_outputs = [*self.round_outputs, enhanced][-2:]
        self._sync_prompts()
        self._publish_prompts()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "prompts": {k: v.detach().cpu() for k, v in self.prompts.state_dict().items()},
            "prompt_features": self.prompt_features().cpu(),
            "encoder": self.guidance_encoder.name,
            "refinements_done": self.refinements_done,
            "prompt_iterations_done": self.prompt_iterations_done,
            "round_outputs": [t.cpu() for t in self.round_outputs],
        }
        if self.backlit_embeddings is not None and self.well_lit_embeddings is not None:
            state["backlit_embeddings"] = self.backlit_embeddings
            state["well_lit_embeddings"] = self.well_lit_embeddings
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.setup()
            return
        self._check_encoder(str(state.get("encoder", "")), "the checkpoint")
        self.prompts.load_state_dict(state["prompts"])
        self.refinements_done = int(state.get("refinements_done", 0))
        self.prompt_iterations_done = int(state.get("prompt_iterations_done", 0))
        self.round_outputs = [t.float() for t in state.get("round_outputs", [])]
        if "backlit_embeddings" in state:
            self.backlit_embeddings = state["backlit_embeddings"].float()
            self.well_lit_embeddings = state["well_lit_embeddings"].float()
        else:
            self._embed_training_sets()
        self._features = None

    # ---------------------------------------------------------------------- losses
    def prompt_features(self) -> Tensor:
        """The current ``(2, D)`` unit prompt features, frozen (cached between refinements)."""
        if self._features is None:
            with torch.no_grad():
                self._features = self.prompts().detach().float()
        return self._features

    def guided_loss(self, enhanced: Tensor, inputs: Tensor, *, step: int) -> dict[str, Tensor]:
        embeddings = self.guidance_encoder.embed(enhanced, resize="squash")
        features = self.prompt_features().to(embeddings.device)
        l_clip = negative_probability_loss(embeddings, features, self.options.logit_scale)
        l_id = self.identity(enhanced, inputs)
        total = self.options.clip_weight * l_clip + self.config.identity_weight * l_id
        return {"clip": l_clip, "identity": l_id, "total": total}

    # --------------------------------------------------------------------- helpers
    def _check_encoder(self, encoder: str, source: str) -> None:
        from rave.encoders import canonical_name

        if encoder and canonical_name(encoder) != canonical_name(self.guidance_encoder.name):
            raise ValueError(
                f"{source}: prompts were learned with encoder {encoder!r}, but this run guides "
                f"with {self.guidance_encoder.name!r}"
            )

    def load_prompts_file(self, path: str | Path) -> None:
        """Start from prompts saved earlier (replaces the initialisation)."""
        raise NotImplementedError

    def _sync_prompts(self) -> None:
        # Every rank trains the prompts on the same batches; copying rank 0's guards against
        # tiny numerical differences between devices drifting apart over rounds.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and self.context.world_size > 1:
            for parameter in self.prompts.parameters():
                dist.broadcast(parameter.data, src=0)

    @torch.no_grad()
    def _embed_images(self, files: Sequence[Path], enhancer: nn.Module | None = None) -> Tensor:
        size = self.config.crop_size
        device = self.context.device
        chunks: list[Tensor] = []
        batch: list[Tensor] = []
        files = list(files)
        for index, path in enumerate(files):
            image = _read_image(Path(path), size)
            if image is not None:
                batch.append(image)
            if batch and (len(batch) == self.options.embed_batch_size or index == len(files) - 1):
                images = torch.stack(batch).to(device)
                if enhancer is not None:
                    from rave.network.enhancer import apply_light_map

                    images = apply_light_map(images, enhancer(images))
                chunks.append(self.guidance_encoder.embed(images, resize="squash").float().cpu())
                batch = []
        if not chunks:
            raise ValueError(f"{self.name}: none of the {len(files)} images could be read")
        return torch.cat(chunks)

    def _embed_training_sets(self) -> None:
        ctx = self.context
        log.info(
            "%s: embedding %d backlit and %d well-lit images",
            self.name,
            len(ctx.backlit_files),
            len(ctx.well_lit_files),
        )
        self.backlit_embeddings = self._embed_images(ctx.backlit_files)
        self.well_lit_embeddings = self._embed_images(ctx.well_lit_files)

    def _embed_enhanced_backlit(self, enhancer: nn.Module) -> Tensor:
        enhancer = enhancer.to(self.context.device).eval()
        return self._embed_images(self.context.backlit_files, enhancer=enhancer)

    def _generator(self, salt: int) -> torch.Generator:
        # Every rank draws the same batches, so the prompts stay identical across processes.
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + salt)

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.prompts.parameters(),
            lr=self.options.prompt_lr,
            weight_decay=self.options.prompt_weight_decay,
        )

    def _initialise_prompts(self) -> None:
        assert self.backlit_embeddings is not None and self.well_lit_embeddings is not None
        opts = self.options
        device = self.context.device
        embeddings = torch.cat([self.backlit_embeddings, self.well_lit_embeddings]).to(device)
        labels = torch.cat(
            [
                torch.zeros(len(self.backlit_embeddings), dtype=torch.long),
                torch.ones(len(self.well_lit_embeddings), dtype=torch.long),
            ]
        ).to(device)
        generator = self._generator(0)
        optimizer = self._optimizer()
        self.prompts.train()
        order = torch.empty(0, dtype=torch.long)
        for iteration in range(opts.prompt_init_iterations):
            if len(order) < opts.prompt_batch_size:
                # epochs of shuffled images, as a shuffling data loader would give
                order = torch.cat([order, torch.randperm(len(labels), generator=generator)])
            index, order = order[: opts.prompt_batch_size], order[opts.prompt_batch_size :]
            index = index.to(device)
            features = self.prompts()
            loss = prompt_classification_loss(
                embeddings[index], labels[index], features, opts.logit_scale
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self._log_prompt_step("init", 0, iteration, opts.prompt_init_iterations, loss, None)
        optimizer.zero_grad(set_to_none=True)  # no stale gradients on the frozen prompts
        self._features = None
        accuracy = self._accuracy(embeddings, labels)
        log.info("%s: prompts initialised, training accuracy %.3f", self.name, accuracy)
        self._write_prompt_row("init", 0, float("nan"), accuracy)

    def _refine_prompts(self, refinement: int) -> None:
        assert self.backlit_embeddings is not None and self.well_lit_embeddings is not None
        opts = self.options
        device = self.context.device
        pairs = [
            (a.to(device), b.to(device), m)
            for a, b, m in ranking_pairs(
                refinement,
                self.backlit_embeddings,
                self.well_lit_embeddings,
                self.round_outputs,
                opts,
            )
        ]
        generator = self._generator(refinement)
        optimizer = self._optimizer()
        self.prompts.train()
        batch = opts.prompt_batch_size
        for iteration in range(opts.refine_iterations):
            features = self.prompts()
            loss = features.new_zeros(())
            for a, b, margin in pairs:
                ia = torch.randint(len(a), (batch,), generator=generator).to(device)
                ib = torch.randint(len(b), (batch,), generator=generator).to(device)
                loss = loss + margin_ranking_loss(a[ia], b[ib], features, margin, opts.logit_scale)
            loss = opts.ranking_weight * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self._log_prompt_step(
                "refine", refinement, iteration, opts.refine_iterations, loss, None
            )
        optimizer.zero_grad(set_to_none=True)
        self._features = None
        log.info(
            "%s: prompts refined after round %d (%d ranking pairs)",
            self.name,
            refinement,
            len(pairs),
        )

    @torch.no_grad()
    def _accuracy(self, embeddings: Tensor, labels: Tensor) -> float:
        logits = prompt_logits(embeddings, self.prompts().float(), self.options.logit_scale)
        return float((logits.argmax(dim=1) == labels).float().mean())

    def _log_prompt_step(
        self, stage: str, round_: int, iteration: int, total: int, loss: Tensor, acc: float | None
    ) -> None:
        self.prompt_iterations_done += 1
        every = max(1, self.config.log_every)
        if iteration % every == 0 or iteration == total - 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"{self.name}: prompt loss became {value} ({stage})")
            log.debug(
                "%s prompts %s %d/%d loss %.5f", self.name, stage, iteration + 1, total, value
            )
            self._write_prompt_row(stage, round_, value, acc)

    def _write_prompt_row(self, stage: str, round_: int, loss: float, acc: float | None) -> None:
        if not self.context.is_main:
            return
        from rave.training.artifacts import MetricsCSV

        if not hasattr(self, "_prompt_csv"):
            # keep rows of an earlier (resumed) run: prompt stages are never re-run on resume
            self._prompt_csv = MetricsCSV(
                self.context.run_dir / PROMPT_METRICS_FILENAME, resume_from=1 << 62
            )
        row: dict[str, float | int | str] = {
            "iteration": self.prompt_iterations_done,
            "stage": stage,
            "round": round_,
            "loss": loss,
            "accuracy": float("nan") if acc is None else acc,
        }
        self._prompt_csv.write(row)

    def _publish_prompts(self) -> None:
        """Refresh the frozen features; rank 0 writes the prompts file and the prompt plot."""
        self._features = None
        features = self.prompt_features()
        if not self.context.is_main:
            return
        run_dir = self.context.run_dir
        save_prompt_features(
            run_dir / PROMPTS_FILENAME, features, self.guidance_encoder.name, self.name
        )
        if hasattr(self, "_prompt_csv"):
            from rave.training.artifacts import save_loss_plot

            rows = [
                {k: v for k, v in r.items() if k in ("iteration", "loss")}
                for r in self._prompt_csv.read()
                if r.get("loss") not in ("", "nan")
            ]
            try:
                save_loss_plot(rows, run_dir / PROMPT_PLOT_FILENAME, stage_boundary=None)
            except Exception as err:  # a plot must never stop training
                log.warning("could not draw %s: %s", PROMPT_PLOT_FILENAME, err)


class ClipLitMethod(PromptGuidedMethod):
    """CLIP-LIT: two learned 16-word text prompts read through CLIP's text transformer."""

    name = "clip-lit"
    Options = ClipLitOptions

    def build_prompts(self) -> PromptPair:
        encoder = self.guidance_encoder
        model = getattr(encoder, "model", None)
        tokenizer = getattr(encoder, "tokenizer", None)
        if model is None or tokenizer is None:
            raise ValueError(
                f"clip-lit needs a CLIP guidance encoder with a text tower, got "
                f"{encoder.name!r}; use clip-lit-latent for image-only encoders"
            )
        return TextPromptPair(
            model, tokenizer, n_ctx=self.options.n_ctx, init_word=self.options.init_word
        )

    def load_prompts_file(self, path: str | Path) -> None:
        """Load text prompts: a checkpoint of a clip-lit run, or the reference code's tensor.

        The reference code saves the token embeddings as a ``(2, 77, W)`` tensor; a run's
        checkpoint holds them in its method state. A ``prompts.safetensors`` file holds only
        the encoded features, from which the token embeddings cannot be recovered.
        """
        path = Path(path)
        try:
            payload = load_torch_payload(path)
        except CheckpointError as err:
            raise ValueError(
                f"clip-lit prompts must be a checkpoint or a (2, 77, W) tensor file: {err}"
            ) from None
        assert isinstance(self.prompts, TextPromptPair)
        if isinstance(payload, Tensor):
            self.prompts.load_reference_embeddings(payload)
            return
        found = _find_prompt_state(payload)
        if found is None or "embeddings" not in found.get("prompts", {}):
            raise ValueError(f"{path}: no clip-lit text prompts in this checkpoint")
        self._check_encoder(str(found.get("encoder", "")), str(path))
        self.prompts.load_reference_embeddings(found["prompts"]["embeddings"])
