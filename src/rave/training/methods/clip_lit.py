"""CLIP-LIT: guidance by a learned pair of text prompts (docs/method.md, "CLIP-LIT").

Lifecycle inside the training loop:

1. :meth:`setup` (fresh runs): read the backlit and well-lit training images at
   ``prompt_image_size`` (256 px, as the authors' prompt loaders), then initialise the prompts
   by cross-entropy (backlit = 0, well-lit = 1) for ``prompt_init_iterations`` iterations.
2. Guided stage: ``clip_weight * L_clip + identity_weight * L_id`` with
   ``L_clip = mean_i p_negative(O_i)``; the prompts are frozen here.
3. :meth:`end_of_round`: enhance the backlit set with this round's best network, then refine
   the prompts for ``refine_iterations`` iterations with margin ranking losses.

As in the authors' code, every prompt iteration draws fresh augmentations (flips, transpose,
zoom in [0.5, 1.5] per axis, rotation), applied identically to a backlit image, its own
enhanced versions and the well-lit image it is paired with, and encodes them; one Adam
optimiser serves the initialisation and every refinement. ``prompt_augment: false`` embeds
every image once instead (much cheaper, not the authors' way).

Ranking pairs ``(a, b, m)`` mean "``a`` is more backlit than ``b`` by ``m``" and are turned into
``ranking_weight * sum_pairs mean_i max(0, m - (p_neg(a_i) - p_neg(b_i)))``, with ``s1`` the
backlit set enhanced by the newest round's best network and ``s2`` by the one before:

- no enhanced set yet: ``(backlit, well-lit, first_margin)``;
- ``s1`` only: ``(backlit, well-lit)``, ``(backlit, s1)`` with ``backlit_margin`` and
  ``(s1, well-lit, s1_well_lit_margin)``;
- ``s1`` and ``s2``: ``(backlit, well-lit)``, ``(backlit, s1)`` with ``backlit_margin``, and
  ``(s1, s2)``, ``(s2, well-lit)`` with ``later_margin``.

Which enhanced sets a refinement sees is the ``refinement_schedule``: ``"clip-lit"`` (the
original CLIP-LIT: refinement ``r`` sees rounds ``r`` and ``r - 1``, so three pairs from
refinement 1) or ``"rave-train-py"`` (the RAVE repository's ``train.py``, whose enhanced sets
are only recorded once its iteration counter passes reconstruction + prompt initialisation,
so the first refinements see the backlit/well-lit pair only). See docs/method.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
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
    "REFINEMENT_SCHEDULES",
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
REFINEMENT_SCHEDULES = ("clip-lit", "rave-train-py")


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
    first_margin: float = 1.0  # no enhanced set yet: (backlit, well-lit)
    backlit_margin: float = 0.9  # (backlit, well-lit) and (backlit, s1)
    s1_well_lit_margin: float = 0.2  # s1 only: (s1, well-lit)
    later_margin: float = 0.1  # s1 and s2: (s1, s2) and (s2, well-lit)
    refinement_schedule: str = "clip-lit"  # or "rave-train-py" (module docstring)
    prompt_image_size: int = 256  # side of the prompt stages' images; 0: the training crop
    prompt_augment: bool = True  # fresh augmentations every prompt iteration (the authors')
    prompt_zoom_range: tuple[float, float] = (0.5, 1.5)  # the prompt loaders' zoom, per axis
    one_prompt_optimizer: bool = True  # one Adam for initialisation and all refinements
    # the authors' extension: while a stage's last loss is above prompt_extend_above, run
    # prompt_extend_iterations more (at most prompt_max_extensions times; 0 iterations: off)
    prompt_extend_iterations: int = 100
    prompt_extend_above: float = 60.0
    prompt_max_extensions: int = 30
    embed_batch_size: int = 16  # images per forward pass when embedding whole sets
    prompts: str = ""  # start from this prompts file (skips the initialisation)

    def __post_init__(self) -> None:
        from rave.training.config import ConfigError

        problems = []
        for name in ("prompt_batch_size", "embed_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in (
            "prompt_init_iterations",
            "refine_iterations",
            "prompt_image_size",
            "prompt_extend_iterations",
            "prompt_max_extensions",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.prompt_lr <= 0 or self.prompt_weight_decay < 0 or self.logit_scale <= 0:
            problems.append("prompt_lr and logit_scale must be > 0, prompt_weight_decay >= 0")
        if self.refinement_schedule not in REFINEMENT_SCHEDULES:
            problems.append(
                f"refinement_schedule must be one of {', '.join(REFINEMENT_SCHEDULES)}, "
                f"got {self.refinement_schedule!r}"
            )
        low, high = self.prompt_zoom_range
        if not 0 < low <= high:
            problems.append(f"prompt_zoom_range must be (low, high), 0 < low <= high: {low, high}")
        if problems:
            raise ConfigError("invalid method_options: " + "; ".join(problems))


@dataclass(frozen=True)
class ClipLitOptions(PromptOptions):
    """CLIP-LIT's settings: :class:`PromptOptions` plus the text prompt's shape."""

    n_ctx: int = 16  # learnable words per prompt
    init_word: str = "X"


def ranking_pairs(
    backlit: Any, well_lit: Any, enhanced: Sequence[Any], options: PromptOptions
) -> list[tuple[Any, Any, float]]:
    """The ``(a, b, margin)`` pairs of a prompt refinement (see the module docstring).

    Args:
        backlit: the backlit set (embeddings, or anything standing for the set).
        well_lit: the well-lit set.
        enhanced: the backlit set enhanced by earlier rounds' best networks, **newest first**
            (``s1``, then ``s2``; only the first two are used).
        options: margins.

    Returns:
        the pairs, each ``(a, b, m)`` with ``a`` expected more backlit than ``b`` by ``m``.
    """
    if not enhanced:
        return [(backlit, well_lit, options.first_margin)]
    s1 = enhanced[0]
    if len(enhanced) == 1:
        return [
            (backlit, well_lit, options.backlit_margin),
            (backlit, s1, options.backlit_margin),
            (s1, well_lit, options.s1_well_lit_margin),
        ]
    s2 = enhanced[1]
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
    """``(3, size, size)`` uint8 RGB, resized as the training images are; None if unreadable."""
    # The loop's reader, so prompts see exactly the images the network trains on.
    from rave.io.views import unit_float
    from rave.training.data import load_image

    try:
        return unit_float(load_image(path, size))
    except (OSError, ValueError) as err:
        log.warning("skipped: %s", err)
        return None


class _PromptSet:
    """One image set of the prompt stages: ``(N, 3, S, S)`` uint8 images, embeddings cached
    when the prompt stages do not augment."""

    def __init__(self, name: str, images: Tensor) -> None:
        self.name = name
        self.images = images
        self.embeddings: Tensor | None = None  # (N, D), filled on first use without augmentation

    def __len__(self) -> int:
        return int(self.images.shape[0])


# (set, image index, augmentation seed): the seed is shared by the images of one ranking tuple
_Item = tuple[_PromptSet, int, int]


class PromptGuidedMethod(GuidanceMethod):
    """Shared machinery of CLIP-LIT and CLIP-LIT-Latent; subclasses build the prompt pair."""

    Options: ClassVar[type] = PromptOptions
    losses_comparable_across_rounds: ClassVar[bool] = False

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        self.guidance_encoder = context.create_encoder(self.config.guidance_encoder)
        self.prompts: PromptPair = self.build_prompts().to(context.device)
        self.backlit_set: _PromptSet | None = None
        self.well_lit_set: _PromptSet | None = None
        # Two slots for the enhanced backlit sets, filled and read as the reference code does
        # (see _record_round): each holds the enhancing network's weights and its _PromptSet.
        self.slot_weights: list[dict[str, Tensor] | None] = [None, None]
        self.slot_sets: list[_PromptSet | None] = [None, None]
        self.slot = 0
        self.refinements_done = 0
        self.prompt_iterations_done = 0  # initialisation and refinements, for the metrics file
        self.init_iterations_done = 0
        self.refine_iterations_done = 0
        self._optimizer_obj: torch.optim.Optimizer | None = None
        self._features: Tensor | None = None  # frozen (2, D) prompt features for the loss

    # ------------------------------------------------------------------ to override
    def build_prompts(self) -> PromptPair:
        """The untrained prompt pair."""
        raise NotImplementedError

    # ------------------------------------------------------------------- lifecycle
    def setup(self) -> None:
        opts = self.options
        # a fresh run: rows a run interrupted before its first iteration left are not its own
        self._open_prompt_csv(resume_from=None)
        self._load_sets()
        if opts.prompts:
            self.load_prompts_file(opts.prompts)
            log.info("prompts read from %s (initialisation skipped)", opts.prompts)
        else:
            self._initialise_prompts()
        self._sync_prompts()
        self._publish_prompts()

    def end_of_round(self, round_index: int, best_enhancer: nn.Module) -> None:
        refinement = round_index + 1
        self._record_round(round_index, best_enhancer)
        self._refine_prompts(refinement)
        self.refinements_done = refinement
        self._sync_prompts()
        self._publish_prompts()

    @property
    def enhanced_sets(self) -> list[_PromptSet]:
        """The enhanced backlit sets the next refinement compares, newest (``s1``) first."""
        first, second = self.slot_sets
        if first is None:  # the reference code checks slot 0 first
            return []
        if second is None:
            return [first]
        newest, older = self.slot_sets[1 - self.slot], self.slot_sets[self.slot]
        assert newest is not None and older is not None
        return [newest, older]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "prompts": {k: v.detach().cpu() for k, v in self.prompts.state_dict().items()},
            "prompt_features": self.prompt_features().cpu(),
            "encoder": self.guidance_encoder.name,
            "refinements_done": self.refinements_done,
            "prompt_iterations_done": self.prompt_iterations_done,
            "init_iterations_done": self.init_iterations_done,
            "refine_iterations_done": self.refine_iterations_done,
            "slot": self.slot,
            "slot_weights": [w if w is not None else {} for w in self.slot_weights],
        }
        if self._optimizer_obj is not None:
            state["prompt_optimizer"] = self._optimizer_obj.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.setup()
            return
        self._check_encoder(str(state.get("encoder", "")), "the checkpoint")
        self.prompts.load_state_dict(state["prompts"])
        self.refinements_done = int(state.get("refinements_done", 0))
        self.prompt_iterations_done = int(state.get("prompt_iterations_done", 0))
        # rows past the checkpoint (a refinement cut short by Ctrl-C, done again) go
        self._open_prompt_csv(resume_from=self.prompt_iterations_done + 1)
        self.init_iterations_done = int(state.get("init_iterations_done", 0))
        self.refine_iterations_done = int(state.get("refine_iterations_done", 0))
        self.slot = int(state.get("slot", 0))
        self._load_sets()
        weights = state.get("slot_weights")
        if weights is None:
            log.warning(
                "%s: checkpoint without enhanced-set weights; refinements restart "
                "from the backlit/well-lit pair",
                self.name,
            )
            weights = [{}, {}]
        for index, entry in enumerate(weights):
            if entry:
                self.slot_weights[index] = entry
                self.slot_sets[index] = self._enhance_backlit(self._network(entry))
        if "prompt_optimizer" in state:
            self._optimizer().load_state_dict(state["prompt_optimizer"])
        self._features = None

    # ---------------------------------------------------------------------- losses
    def prompt_features(self) -> Tensor:
        """The current ``(2, D)`` unit prompt features, frozen (cached between refinements)."""
        features = self._features
        if features is None:
            with torch.no_grad():
                features = self._features = self.prompts().detach().float()
        return features

    def guided_loss(
        self, enhanced: Tensor, inputs: Tensor, *, step: int, light: Tensor | None = None
    ) -> dict[str, Tensor]:
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

    @property
    def prompt_image_size(self) -> int:
        return self.options.prompt_image_size or self.config.crop_size

    def _load_sets(self) -> None:
        ctx = self.context
        size = self.prompt_image_size
        log.info(
            "%s: reading %d backlit and %d well-lit images at %d px for the prompt stages",
            self.name,
            len(ctx.backlit_files),
            len(ctx.well_lit_files),
            size,
        )
        if not ctx.well_lit_files:
            from rave.training.config import ConfigError

            raise ConfigError(
                f"{self.name}: set well_lit_dir (the prompts learn from well-lit images)"
            )
        for attribute, name, files in (
            ("backlit_set", "backlit", ctx.backlit_files),
            ("well_lit_set", "well-lit", ctx.well_lit_files),
        ):
            images = [im for im in (_read_image(Path(p), size) for p in files) if im is not None]
            if not images:
                raise ValueError(f"{self.name}: none of the {len(files)} {name} images is readable")
            setattr(self, attribute, _PromptSet(name, torch.stack(images)))

    @staticmethod
    def _network(weights: dict[str, Tensor]) -> nn.Module:
        from rave.network.checkpoint import strip_module_prefix
        from rave.network.enhancer import EnhancementNet

        net = EnhancementNet(padding_mode="zeros")  # the training network, as the authors'
        net.load_state_dict(strip_module_prefix(weights))
        return net

    @torch.no_grad()
    def _enhance_backlit(self, enhancer: nn.Module) -> _PromptSet:
        """The backlit set enhanced at the prompt size, stored in 8 bits as the authors' PNGs."""
        from rave.network.enhancer import apply_light_map

        assert self.backlit_set is not None
        device = self.context.device
        was_training = enhancer.training
        enhancer = enhancer.to(device).eval()
        chunks = []
        for batch in self.backlit_set.images.split(self.options.embed_batch_size):
            x = batch.to(device).float() / 255.0
            out = apply_light_map(x, enhancer(x))
            chunks.append((out * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8).cpu())
        enhancer.train(was_training)
        return _PromptSet("enhanced", torch.cat(chunks))

    def _record_round(self, round_index: int, best_enhancer: nn.Module) -> None:
        """Keep this round's enhanced backlit set where the reference code would.

        Both reference scripts write the enhanced set of a round's best network into slot
        ``slot`` and flip ``slot`` at the start of each refinement, but only once one
        iteration counter has passed a point. In the original CLIP-LIT that counter includes
        the prompt initialisation, so every round is recorded (``"clip-lit"``). The RAVE
        repository's ``train.py`` counts network and refinement iterations only but compares
        with reconstruction + prompt initialisation, so the first rounds are not recorded and
        slots flip only from the refinement whose counter reaches the initialisation's length
        (``"rave-train-py"``). Here a round counts as recorded when its last iteration is past
        that point (their best network may come earlier in that round).
        """
        opts = self.options
        record = flip = True
        if opts.refinement_schedule == "rave-train-py":
            counter = (
                self.config.reconstruction_iterations
                + (round_index + 1) * self.config.round_iterations
                + self.refine_iterations_done
            )
            record = counter > self.config.reconstruction_iterations + opts.prompt_init_iterations
            flip = counter >= opts.prompt_init_iterations
        if record:
            weights = {k: v.detach().cpu().clone() for k, v in best_enhancer.state_dict().items()}
            self.slot_weights[self.slot] = weights
            self.slot_sets[self.slot] = self._enhance_backlit(best_enhancer)
        if flip:
            self.slot = 1 - self.slot

    def _augment_params(self) -> Any:
        from rave.training.data import AugmentParams

        return AugmentParams(zoom_range=self.options.prompt_zoom_range, zoom_per_axis=True)

    @torch.no_grad()
    def _embed_items(self, items: Sequence[_Item]) -> Tensor:
        """``(len(items), D)`` unit embeddings on the method's device.

        With ``prompt_augment`` each image is augmented with its item's seed and encoded now;
        otherwise every image of a set is embedded once and looked up.
        """
        from rave.training.data import augment

        device = self.context.device
        encoder = self.guidance_encoder
        if not self.options.prompt_augment:
            for pset in {id(item[0]): item[0] for item in items}.values():
                if pset.embeddings is None:
                    pset.embeddings = torch.cat(
                        [
                            encoder.embed(b.to(device).float() / 255.0, resize="squash").float()
                            for b in pset.images.split(self.options.embed_batch_size)
                        ]
                    )
            return torch.stack([pset.embeddings[i] for pset, i, _ in items])  # type: ignore[index]
        params = self._augment_params()
        images = [
            augment(pset.images[i].float() / 255.0, torch.Generator().manual_seed(seed), params)
            for pset, i, seed in items
        ]
        return encoder.embed(torch.stack(images).to(device), resize="squash").float()

    def _generator(self, salt: int) -> torch.Generator:
        # Every rank draws the same batches, so the prompts stay identical across processes.
        return torch.Generator().manual_seed(self.config.seed * 1_000_003 + salt)

    def _optimizer(self) -> torch.optim.Optimizer:
        """The prompt optimiser: one for all prompt stages (the authors'), or a new one."""
        if self._optimizer_obj is None or not self.options.one_prompt_optimizer:
            self._optimizer_obj = torch.optim.Adam(
                self.prompts.parameters(),
                lr=self.options.prompt_lr,
                weight_decay=self.options.prompt_weight_decay,
            )
        return self._optimizer_obj

    def _run_stage(
        self, stage: str, round_: int, iterations: int, step: Callable[[], Tensor]
    ) -> int:
        """Run ``iterations`` prompt steps, then the authors' extensions; returns the count."""
        opts = self.options
        done, extensions, total = 0, 0, iterations
        loss: Tensor | None = None
        while done < total:
            loss = step()
            self._log_prompt_step(stage, round_, done, total, loss, None)
            done += 1
            if (
                done == total
                and opts.prompt_extend_iterations > 0
                and extensions < opts.prompt_max_extensions
                and float(loss.detach()) > opts.prompt_extend_above
            ):
                total += opts.prompt_extend_iterations
                extensions += 1
        if extensions:
            log.info(
                "%s: %s stage extended %d times (loss above %g)",
                self.name,
                stage,
                extensions,
                opts.prompt_extend_above,
            )
        return done

    def _seeds(self, generator: torch.Generator, count: int) -> list[int]:
        return torch.randint(0, 2**62, (count,), generator=generator).tolist()

    def _initialise_prompts(self) -> None:
        assert self.backlit_set is not None and self.well_lit_set is not None
        opts = self.options
        device = self.context.device
        # as the reference loader: the shorter set is cycled to the longer one's length, so
        # both labels are equally frequent; epochs of shuffled items
        n = max(len(self.backlit_set), len(self.well_lit_set))
        pool = [(self.backlit_set, i % len(self.backlit_set), 0) for i in range(n)]
        pool += [(self.well_lit_set, i % len(self.well_lit_set), 1) for i in range(n)]
        generator = self._generator(0)
        optimizer = self._optimizer()
        self.prompts.train()
        order: list[int] = []

        def step() -> Tensor:
            nonlocal order
            while len(order) < opts.prompt_batch_size:
                order += torch.randperm(len(pool), generator=generator).tolist()
            index, order = order[: opts.prompt_batch_size], order[opts.prompt_batch_size :]
            seeds = self._seeds(generator, len(index))
            items = [(pool[i][0], pool[i][1], seed) for i, seed in zip(index, seeds, strict=True)]
            labels = torch.tensor([pool[i][2] for i in index], device=device)
            embeddings = self._embed_items(items)
            loss = prompt_classification_loss(embeddings, labels, self.prompts(), opts.logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        self.init_iterations_done = self._run_stage("init", 0, opts.prompt_init_iterations, step)
        optimizer.zero_grad(set_to_none=True)  # no stale gradients on the frozen prompts
        self._features = None
        accuracy = self._accuracy()
        log.info("%s: prompts initialised, training accuracy %.3f", self.name, accuracy)
        self._write_prompt_row("init", 0, float("nan"), accuracy)

    def _refine_prompts(self, refinement: int) -> None:
        assert self.backlit_set is not None and self.well_lit_set is not None
        opts = self.options
        backlit, well_lit = self.backlit_set, self.well_lit_set
        pairs = ranking_pairs(backlit, well_lit, self.enhanced_sets, opts)
        roles = list({id(p): p for a, b, _ in pairs for p in (a, b)}.values())
        generator = self._generator(refinement)
        optimizer = self._optimizer()
        self.prompts.train()
        batch = opts.prompt_batch_size
        order: list[int] = []

        def step() -> Tensor:
            nonlocal order
            # each backlit image with its own enhanced versions; a well-lit partner drawn at
            # random; one augmentation per tuple
            while len(order) < batch:
                order += torch.randperm(len(backlit), generator=generator).tolist()
            ib, order = order[:batch], order[batch:]
            iw = torch.randint(len(well_lit), (batch,), generator=generator).tolist()
            seeds = self._seeds(generator, batch)
            embedded = {
                id(role): self._embed_items(
                    [
                        (role, w if role is well_lit else b, seed)
                        for b, w, seed in zip(ib, iw, seeds, strict=True)
                    ]
                )
                for role in roles
            }
            features = self.prompts()
            loss = features.new_zeros(())
            for a, b, margin in pairs:
                loss = loss + margin_ranking_loss(
                    embedded[id(a)], embedded[id(b)], features, margin, opts.logit_scale
                )
            loss = opts.ranking_weight * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        self.refine_iterations_done += self._run_stage(
            "refine", refinement, opts.refine_iterations, step
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
    def _accuracy(self) -> float:
        """Share of the (unaugmented) training images the prompts classify correctly."""
        assert self.backlit_set is not None and self.well_lit_set is not None
        correct = 0
        total = 0
        features = self.prompts().float()
        device = self.context.device
        for label, pset in ((0, self.backlit_set), (1, self.well_lit_set)):
            for batch in pset.images.split(self.options.embed_batch_size):
                emb = self.guidance_encoder.embed(batch.to(device).float() / 255.0)
                logits = prompt_logits(emb.float(), features, self.options.logit_scale)
                correct += int((logits.argmax(dim=1) == label).sum())
                total += len(batch)
        return correct / max(total, 1)

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

    def _open_prompt_csv(self, resume_from: int | None) -> None:
        """The prompt metrics file: a new one (None), or the rows before ``resume_from``."""
        if not self.context.is_main:
            return
        from rave.training.artifacts import MetricsCSV

        path = self.context.run_dir / PROMPT_METRICS_FILENAME
        self._prompt_csv = MetricsCSV(path, resume_from=resume_from)

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
