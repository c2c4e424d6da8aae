"""Where a training run is, and the rules that move it: stages, rounds, restarts, extensions.

A run is a reconstruction stage (round 0: the network learns the identity) followed by
guided rounds 1, 2, ... of ``round_iterations`` network iterations each (the authors'
numbering: their ``best_model_round0.pth`` is the reconstruction stage's best). Three rules
act on that schedule, each a small function here so the loop reads top to bottom:

* :func:`restart_reason`: the dead-start policy (when to re-initialise the network);
* :func:`extended_end`: the authors' round extension of the network's rounds (CLIP-LIT's
  prompt stages apply the same rule inline, in ``PromptGuidedMethod._run_stage``);
* :class:`RunState`: the counters, the best-checkpoint tracker and the best weights that a
  checkpoint carries, with ``state_dict``/``load_state_dict``.

docs/method.md ("Training schedule, checkpoint selection and restarts") states the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rave.training.best import BestTracker
from rave.training.config import TrainConfig
from rave.training.methods.base import Stage

__all__ = ["RunState", "dead_patience", "extended_end", "restart_reason"]


def extended_end(end: int, done: int, loss: float, above: float | None, step: int) -> int:
    """The authors' extension rule: a stage goes on past its planned end while its loss is high.

    At the planned end (``done == end``), if ``loss > above`` the stage is extended by
    ``step`` iterations, and the rule is asked again at the new end. The authors extend
    network rounds by 60 while ``320 L_res + 22.5 L_id`` (RAVE) or the total loss
    (CLIP-LIT) is above 90, and CLIP-LIT's prompt stages by 100 while the prompt loss is
    above 60.

    Args:
        end: the iteration count at which the stage is planned to end.
        done: iterations of the stage (or run) completed, counted as ``end`` is.
        loss: the loss of the last iteration (one batch, as the authors).
        above: the threshold; None disables the rule.
        step: iterations added per extension.

    Returns:
        the new planned end (``end`` or ``end + step``).

    Example:
        >>> extended_end(2100, 2100, 95.0, 90.0, 60), extended_end(2100, 2100, 80.0, 90.0, 60)
        (2160, 2100)
    """
    if above is not None and done == end and loss > above:
        return end + step
    return end


def dead_patience(config: TrainConfig) -> int:
    """Iterations without any gradient after which a reconstruction-stage network is dead."""
    return max(1, min(config.best_window, config.reconstruction_iterations))


@dataclass
class RunState:
    """Everything about a run's progress that is not weights, optimiser or random streams.

    Attributes:
        iteration: network iterations completed.
        guided_start: the first guided iteration (moves when the network is re-initialised).
        round: 0 during the reconstruction stage, k >= 1 in the k-th guided round.
        round_end: the iteration count at which the current stage or round ends
            (extensions move it).
        reinits: re-initialisations so far.
        dead_streak: consecutive iterations (the last ones) without any gradient at a
            positive loss.
        tracker: the best-checkpoint tracker of the current stage/round.
        best_model: a copy of the best network's state so far (None before the first).
        best_info: where that best was found (iteration, stage, round, score).
        averaged_model: exponential moving average of the network's weights over the
            guided iterations (``ema_decay > 0``; None before the first guided one).
        averaged_updates: guided iterations averaged into ``averaged_model``.
        last_values: the logged terms of the last iteration completed.
    """

    iteration: int
    guided_start: int
    round: int
    round_end: int
    tracker: BestTracker
    reinits: int = 0
    dead_streak: int = 0
    best_model: dict[str, Tensor] | None = None
    best_info: dict[str, Any] = field(default_factory=dict)
    averaged_model: dict[str, Tensor] | None = None
    averaged_updates: int = 0
    # the logged terms of the last iteration: a round's end interrupted by Ctrl-C is done
    # on resume with them (the extension rule and the round's last metrics row)
    last_values: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fresh(cls, config: TrainConfig) -> RunState:
        """The state before the first iteration."""
        recon = config.reconstruction_iterations
        tracker = BestTracker(
            config.best_window,
            "max" if recon > 0 else "min",
            zero_fill=config.best_rule == "reference",
            every=config.best_every,
        )
        if recon > 0:
            return cls(0, recon, 0, recon, tracker)
        return cls(0, 0, 1, config.round_iterations, tracker)

    @property
    def stage(self) -> Stage:
        """The stage of the next iteration."""
        return "reconstruction" if self.iteration < self.guided_start else "guided"

    def record(
        self, score: float, loss: float, grad_norm: float, model_state: dict[str, Tensor]
    ) -> bool:
        """Count the iteration just completed (``iteration`` already advanced).

        Args:
            score: its PSNR (reconstruction) or loss (guided).
            loss: its training loss.
            grad_norm: its gradient norm (0 when no gradient flowed).
            model_state: the network's state now; copied if it is a new best.

        Returns:
            True when it is a new best.
        """
        completed = self.iteration - 1
        # No gradient at a positive loss: stuck (a dead light map). A network at the exact
        # identity also has no gradient in reconstruction, but its loss is 0: not dead.
        stuck = grad_norm == 0 and loss > 0
        self.dead_streak = self.dead_streak + 1 if stuck else 0
        if not self.tracker.update(score, completed):
            return False
        self.best_model = {k: v.detach().clone() for k, v in model_state.items()}
        stage = "reconstruction" if completed < self.guided_start else "guided"
        self.best_info = {
            "iteration": completed,
            "stage": stage,
            "round": self.round,
            "score": self.tracker.best,
        }
        return True

    def average_weights(self, model_state: dict[str, Tensor], decay: float) -> None:
        """Fold the network's current weights into :attr:`averaged_model`.

        ``avg <- d avg + (1 - d) w`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n``
        updates, so that the first guided iterations (and the identity the run started
        from) do not dominate the average of a short run. Non-float tensors are copied.
        """
        if self.averaged_model is None:
            self.averaged_model = {k: v.detach().clone() for k, v in model_state.items()}
        else:
            d = min(decay, (1 + self.averaged_updates) / (10 + self.averaged_updates))
            with torch.no_grad():
                for name, value in model_state.items():
                    average = self.averaged_model[name]
                    if average.is_floating_point():
                        average.mul_(d).add_(value.detach(), alpha=1 - d)
                    else:
                        average.copy_(value)
        self.averaged_updates += 1

    def restart_reconstruction(self, config: TrainConfig) -> None:
        """A re-initialised network starts a whole reconstruction stage from here."""
        self.reinits += 1
        self.guided_start = self.round_end = self.iteration + config.reconstruction_iterations
        self.round = 0
        self.dead_streak = 0
        self.tracker.reset("max")
        self.best_model, self.best_info = None, {}
        self.averaged_model, self.averaged_updates = None, 0

    def next_round(self, config: TrainConfig, *, reset_tracker: bool) -> None:
        """The current stage or round ended: the next guided round starts."""
        self.round += 1
        self.round_end = self.iteration + config.round_iterations
        if reset_tracker:
            self.tracker.reset("min")

    def state_dict(self) -> dict[str, Any]:
        """Plain containers and CPU tensors (checkpoints load with ``weights_only=True``)."""
        return {
            "iteration": self.iteration,
            "guided_start": self.guided_start,
            "round": self.round,
            "round_end": self.round_end,
            "reinits": self.reinits,
            "dead_streak": self.dead_streak,
            "tracker": self.tracker.state_dict(),
            "best_model": None
            if self.best_model is None
            else {k: v.cpu() for k, v in self.best_model.items()},
            "best_info": dict(self.best_info),
            "averaged_model": None
            if self.averaged_model is None
            else {k: v.cpu() for k, v in self.averaged_model.items()},
            "averaged_updates": self.averaged_updates,
            "last_values": {k: float(v) for k, v in self.last_values.items()},
        }

    def load_state_dict(self, state: dict[str, Any], device: Any = None) -> None:
        """Restore :meth:`state_dict`'s output (best weights moved to ``device``)."""
        for key in ("iteration", "guided_start", "round", "round_end", "reinits", "dead_streak"):
            setattr(self, key, int(state[key]))
        self.tracker.load_state_dict(state["tracker"])
        best = state.get("best_model")
        self.best_model = None if best is None else {k: v.to(device) for k, v in best.items()}
        self.best_info = dict(state.get("best_info") or {})
        averaged = state.get("averaged_model")
        self.averaged_model = (
            None if averaged is None else {k: v.to(device) for k, v in averaged.items()}
        )
        self.averaged_updates = int(state.get("averaged_updates", 0))
        self.last_values = {str(k): float(v) for k, v in (state.get("last_values") or {}).items()}


def restart_reason(state: RunState, config: TrainConfig) -> str:
    """Why the network should be re-initialised after the iteration just completed ('' if not).

    The dead-start policy, asked only during the reconstruction stage: about half of all
    random initialisations give a light map of 0 (negative output bias, then ReLU) or one so
    small that every pixel clamps to 1, and no gradient flows. The network is replaced

    * as soon as it had no gradient for :func:`dead_patience` iterations in a row, or
    * at the end of the stage, if its last iteration had no gradient, or if the mean
      luma PSNR of its last ``best_window`` iterations (fewer if the stage is shorter) is
      under ``reinit_below_psnr`` (the authors' 8 dB, in their pyiqa units).

    Each reason is given once (the loop warns once when no re-initialisation is left).
    """
    if state.iteration > state.guided_start:
        return ""
    if state.dead_streak == dead_patience(config):
        return f"no gradient for {state.dead_streak} iterations (dead light map)"
    if state.iteration < state.guided_start:
        return ""
    if state.dead_streak > 0:
        return "no gradient in the last reconstruction iteration (dead light map)"
    mean = state.tracker.mean()
    if mean is not None and mean < config.reinit_below_psnr:
        count = len(state.tracker.recent)
        return (
            f"reconstruction PSNR-Y {mean:.2f} dB (mean of the last {count} iterations) "
            f"< {config.reinit_below_psnr:.2f} dB"
        )
    return ""
