"""The plug-in interface between the training loop and a guidance method.

The loop (:mod:`rave.training.loop`) owns the enhancement network, its optimiser, data,
checkpoints and logging. A method owns everything that turns an enhanced batch into a loss:
its frozen encoders, its guidance target (RAVE's residual vector, CLIP-LIT's prompts) and
any state it learns on the side. The loop calls, in order:

1. ``method = MethodClass(context)``: cheap; build encoders, validate ``Options``.
2. ``method.setup()`` on a fresh run, or ``method.load_state_dict(state)`` on resume
   (so expensive initialisation such as CLIP-LIT's prompt training runs once).
3. every iteration ``terms = method.loss(enhanced, inputs, step=i, stage=s, light=L)``; the loop
   backpropagates ``terms["total"]`` and logs every term (scalars, detached by the loop).
4. at the planned end of each guided round (``config.round_iterations`` iterations), the
   loop asks ``method.extension_loss(values)`` whether to extend the round (when
   ``config.round_extension_above`` is set; :func:`rave.training.schedule.extended_end`);
   when the round really ends, ``method.end_of_round(round_index, best_enhancer)``
   (CLIP-LIT fine-tunes its prompts here, with the round's best network).
5. ``method.state_dict()`` is stored in every checkpoint: plain containers and tensors only,
   because checkpoints are read with ``torch.load(weights_only=True)``.

The reconstruction stage (the first ``config.reconstruction_iterations`` iterations) is the
same for every method (``reconstruction_weight * L_id`` with all layer weights 1) and is
implemented here; a method implements :meth:`GuidanceMethod.guided_loss`.

Methods are looked up by name in :data:`rave.training.methods.METHODS`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from rave.encoders.base import ImageEncoder
from rave.losses import identity_loss
from rave.training.config import ConfigError, TrainConfig, coerce_dataclass

__all__ = ["GuidanceMethod", "MethodContext", "NoOptions", "Stage"]

Stage = Literal["reconstruction", "guided"]


@dataclass(frozen=True)
class NoOptions:
    """Options of a method that has none (``method_options`` must then be empty)."""


@dataclass(frozen=True)
class MethodContext:
    """What the loop hands a method.

    Attributes:
        config: the resolved training config.
        device: where the enhancer and the method's encoders live.
        run_dir: the run directory; only write there when ``is_main``.
        is_main: True on rank 0, the only process that writes files or logs progress.
        rank: this process's rank (0 without torchrun).
        world_size: number of processes (1 without torchrun).
        create_encoder: ``name -> ImageEncoder`` on ``device``, frozen; cached, so asking for
            the same name twice returns the same instance.
        backlit_files: the training images (sorted).
        well_lit_files: the well-lit images (sorted; in the paired regime, only those whose
            stem matches a backlit image, in the same order as their backlit partners).
        show_progress: whether long steps (e.g. encoding the data) may show progress bars;
            False off rank 0 and under ``rave train --quiet``.
    """

    config: TrainConfig
    device: torch.device
    run_dir: Path
    is_main: bool
    rank: int
    world_size: int
    create_encoder: Callable[[str], ImageEncoder]
    backlit_files: tuple[Path, ...]
    well_lit_files: tuple[Path, ...]
    show_progress: bool = True


class GuidanceMethod(abc.ABC):
    """Base class of guidance methods (RAVE, CLIP-LIT, CLIP-LIT-Latent).

    Subclasses set :attr:`name`, optionally :attr:`Options` (a frozen dataclass with defaults;
    ``config.method_options`` is validated against it, unknown keys rejected) and implement
    :meth:`guided_loss`.

    Attributes:
        name: registry name, e.g. ``"rave"``.
        Options: dataclass of method-specific settings, parsed into ``self.options``.
        losses_comparable_across_rounds: False when the loss changes between rounds (CLIP-LIT
            retrains its prompts), so the best checkpoint is then chosen within each round.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    losses_comparable_across_rounds: ClassVar[bool] = True

    def __init__(self, context: MethodContext) -> None:
        self.context = context
        self.config = context.config
        self.options = coerce_dataclass(
            self.Options, dict(self.config.method_options), f"method_options of {self.name!r}"
        )
        self.identity_encoder = context.create_encoder(self.config.identity_encoder)

    def check_identity_layer_weights(self) -> None:
        """One ``identity_layer_weights`` entry per feature map of the identity encoder.

        Checked on a blank image by the training loop once the method is built (after its
        own checks), before RAVE's residual or any iteration: otherwise a wrong count
        surfaced only at the first iteration.

        Raises:
            ConfigError: naming the key, both counts and the encoder.
        """
        encoder = self.identity_encoder
        device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
        side = encoder.input_size
        with torch.no_grad():
            maps = len(encoder.features(torch.zeros(1, 3, side, side, device=device)))
        given = len(self.config.identity_layer_weights)
        if given != maps:
            raise ConfigError(
                f"identity_layer_weights: {given} weight(s), but the identity encoder "
                f"{self.config.identity_encoder} gives {maps} feature maps: give {maps}"
            )

    # ----------------------------------------------------------------- lifecycle hooks
    def setup(self) -> None:  # noqa: B027 (optional hook)
        """One-off initialisation on a fresh run (not called on resume)."""

    def end_of_round(self, round_index: int, best_enhancer: nn.Module) -> None:  # noqa: B027
        """Called after each round of guided iterations (round_index from 0).

        Args:
            round_index: the round that just ended.
            best_enhancer: a copy of the round's best network (eval mode, zero padding).
        """

    def extension_loss(self, values: Mapping[str, float]) -> float:
        """The loss the round-extension rule compares with ``config.round_extension_above``.

        Args:
            values: the logged terms of the round's last iteration (this method's
                :meth:`loss` terms as floats, averaged over processes).

        Returns:
            by default ``values["total"]``, the loss the network was trained on.
        """
        return values["total"]

    def state_dict(self) -> dict[str, Any]:
        """State to resume from: plain containers and tensors only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore :meth:`state_dict`'s output (replaces :meth:`setup` on resume)."""

    # ----------------------------------------------------------------------- losses
    def loss(
        self,
        enhanced: Tensor,
        inputs: Tensor,
        *,
        step: int,
        stage: Stage,
        light: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Named loss terms for one batch; ``"total"`` is what the loop backpropagates.

        Args:
            enhanced: ``(B, 3, H, W)`` network output in [0, 1], differentiable.
            inputs: ``(B, 3, H, W)`` the batch fed to the network, in [0, 1].
            step: the iteration (0-based, counted over the whole run).
            stage: ``"reconstruction"`` or ``"guided"``.
            light: the ``(B, 1, H, W)`` light map that gave ``enhanced`` (differentiable),
                for terms that need the output before its clamp at 1; None when unknown.

        Returns:
            name -> scalar tensor; must include ``"total"``.
        """
        if stage == "reconstruction":
            return self.reconstruction_loss(enhanced, inputs)
        return self.guided_loss(enhanced, inputs, step=step, light=light)

    def reconstruction_loss(self, enhanced: Tensor, inputs: Tensor) -> dict[str, Tensor]:
        """``reconstruction_weight * L_id``, every layer weight 1: the network learns identity."""
        n_layers = len(self.config.identity_layer_weights)
        l_id = self.identity(enhanced, inputs, weights=(1.0,) * n_layers)
        return {"identity": l_id, "total": self.config.reconstruction_weight * l_id}

    def identity(
        self, enhanced: Tensor, inputs: Tensor, weights: tuple[float, ...] | None = None
    ) -> Tensor:
        """``L_id`` between ``enhanced`` and ``inputs`` with the identity encoder's features.

        Uses the encoder's ``feature_scales`` attribute (per-layer MSE normalisers) when it
        has one, so encoders whose layers differ by orders of magnitude stay balanced.
        """
        weights = self.config.identity_layer_weights if weights is None else weights
        encoder = self.identity_encoder
        with torch.no_grad():
            feats_in = encoder.features(inputs)
        feats_out = encoder.features(enhanced)
        # an empty tuple (CLIP, as the paper) means raw MSEs
        scales = tuple(getattr(encoder, "feature_scales", ()) or ()) or None
        return identity_loss(feats_out, feats_in, weights=weights, scales=scales)

    @abc.abstractmethod
    def guided_loss(
        self, enhanced: Tensor, inputs: Tensor, *, step: int, light: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Loss terms of the guided stage (same arguments and result as :meth:`loss`)."""
