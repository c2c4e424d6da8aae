"""The training loop, written to be read top to bottom (nanoGPT style, no callbacks).

``train(config)`` does, in order: processes and devices (torchrun/DDP when ``WORLD_SIZE>1``),
the run directory, data, the enhancement network (zero padding while training), the
optimiser, the guidance method, the run's state (fresh or resumed), then the loop. Each
iteration: one optimisation step (:func:`_step`: the light map, ``clamp(I / (L + eps), 0,
1)``, the method's loss, one Adam step), then the schedule's rules
(:mod:`rave.training.schedule`: best checkpoint, dead-start restarts, end or extension of a
round), logging, samples and checkpoints. Ctrl-C (and SIGTERM under ``rave train``) saves
``last.pt`` before leaving; a run that ends with a dead network (no gradient) raises
:class:`DeadNetworkError` after saving.

Files in the run directory (rank 0 only):
    config.yaml           the resolved config
    last.pt, best.pt      checkpoints (``{"model": state_dict, ...}``; ``rave enhance
                          --model`` loads them and switches padding to reflection)
    best_round_NNN.pt     each round's best network (``best_rule: reference``; round 0 is
                          the reconstruction stage)
    averaged.pt           the weights' moving average at the end (``ema_decay > 0``)
    snapshots/iter_N.pt   the network every ``snapshot_every`` iterations (averaged if kept)
    metrics.csv           logged terms per iteration
    loss_curves.png       the logged terms against the iteration
    samples/iter_N.png    fixed backlit images (top) and their enhancements (bottom)
    tensorboard/          the same metrics for TensorBoard, when it is installed
    residual.pt           RAVE's residual vector, when computed at the start of the run
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rave.encoders.base import ImageEncoder
from rave.errors import describe_failure
from rave.network import (
    CheckpointError,
    EnhancementNet,
    apply_light_map,
    build_enhancer,
    extract_state_dict,
    load_checkpoint_file,
    start_as_identity,
)
from rave.training.artifacts import MetricsCSV, save_checkpoint, save_loss_plot, save_sample_grid
from rave.training.best import reconstruction_psnr
from rave.training.config import (
    ConfigError,
    TrainConfig,
    coerce_dataclass,
    config_to_dict,
    save_config,
)
from rave.training.data import (
    AugmentParams,
    FolderImages,
    ResumableBatchSampler,
    TrainingImages,
    list_images,
    pair_by_stem,
)
from rave.training.methods import GuidanceMethod, MethodContext, Stage, get_method
from rave.training.schedule import RunState, extended_end, restart_reason

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointWriteError",
    "DeadNetworkError",
    "EncoderError",
    "EncoderFactory",
    "TrainResult",
    "round_best_filename",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rave-train/2"
_CHECKPOINT_FORMAT_V1 = "rave-train/1"  # still resumed: counters at the top level
EncoderFactory = Callable[[str, torch.device], ImageEncoder]
# config keys that may change between a run and its resumption without changing the result
_RESUMABLE_CHANGES = frozenset(
    {"iterations", "checkpoint_every", "snapshot_every", "sample_every", "log_every", "device",
     "num_workers", "output_dir", "tensorboard", "num_samples"}
)  # fmt: skip


@dataclass(frozen=True)
class TrainResult:
    """Where a run ended: its directory, checkpoints, completed iterations, the network.

    ``model`` is the trained network as it is at the end (zero padding, this process's
    device); the checkpoints hold the same weights.
    """

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    iterations: int
    interrupted: bool
    model: EnhancementNet
    # resumed a run that had already done config.iterations: nothing was trained or written
    already_complete: bool = False
    # where best.pt's network was found: iteration, stage, round, score (empty: no best)
    best_info: dict[str, Any] = dataclasses.field(default_factory=dict)


class EncoderError(RuntimeError):
    """An encoder the config names cannot be created (unknown, or its weights unavailable)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk): the run stops there.

    Checkpoints are written atomically, so the file it would have replaced is kept whole.
    """


class DeadNetworkError(RuntimeError):
    """A run ended with a dead network (no gradient); its checkpoints are written.

    Attributes:
        result: the run's :class:`TrainResult`.
    """

    def __init__(self, message: str, result: TrainResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class _Processes:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we destroy it
    show_progress: bool = True  # progress bars, on rank 0 only


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    encoder_factory: EncoderFactory | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train an enhancement network as ``config`` says.

    Args:
        config: the resolved configuration.
        resume: None for a fresh run; ``"last"`` for ``<output_dir>/last.pt``; or a path to a
            checkpoint written by this loop. A resumed run continues exactly where the
            checkpoint stopped (same batches, same losses).
        encoder_factory: ``(name, device) -> ImageEncoder``; by default
            :func:`rave.encoders.create_encoder` (tests pass small stand-ins).
        progress: show progress bars (iterations, the residual's images) on rank 0.

    Returns:
        the run's :class:`TrainResult`.

    A resumed run that has already done ``config.iterations`` returns at once with
    ``already_complete`` set, writing nothing.

    Raises:
        FileExistsError: a fresh run in a directory that already holds a checkpoint.
        CheckpointError: a resume checkpoint that is not one of this loop's, or holds
            another network; an ``init_weights`` file that cannot be used.
        ConfigError: a data folder that is not set, missing, or holds no images.
        EncoderError: an encoder the config names cannot be created.
    """
    procs = dataclasses.replace(_setup_processes(config.device), show_progress=progress)
    try:
        return _train(config, procs, resume, encoder_factory or _default_encoder_factory)
    finally:
        if procs.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(
    config: TrainConfig, procs: _Processes, resume: str | Path | None, factory: EncoderFactory
) -> TrainResult:
    is_main, device = procs.rank == 0, procs.device
    run_dir = Path(config.output_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    _check_method(config)  # a config mistake, found before data and encoders are loaded
    _check_output_dir_apart(config)

    # ---- resume point (read before anything is written)
    checkpoint = _read_resume_checkpoint(resume, last_path, config) if resume is not None else None
    if checkpoint is None and is_main and last_path.exists():
        raise FileExistsError(
            f"{run_dir}: already holds a checkpoint; resume it (--resume) or pick another "
            "output_dir"
        )
    if checkpoint is not None and checkpoint["iteration"] >= config.iterations:
        # Nothing to train: leave every file as it is (the loop would rewrite last.pt).
        done = build_enhancer(checkpoint["model"], padding_mode="zeros").to(device)
        return TrainResult(run_dir, last_path, best_path, checkpoint["iteration"], False,
                           done, already_complete=True)  # fmt: skip

    # A run that fails before its first iteration leaves no folder it created behind.
    created = is_main and not run_dir.exists()
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(config, procs, checkpoint, factory, run_dir)
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty: the run started
                run_dir.rmdir()


def _run(
    config: TrainConfig,
    procs: _Processes,
    checkpoint: dict[str, Any] | None,
    factory: EncoderFactory,
    run_dir: Path,
) -> TrainResult:
    is_main, device = procs.rank == 0, procs.device
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    # ---- data: the backlit images are the training set; both folders feed the method
    backlit_files = _data_files(config, "backlit_dir")
    well_lit_files = _data_files(config, "well_lit_dir") if config.well_lit_dir else []
    if config.regime == "paired":
        try:
            backlit_files, well_lit_files = pair_by_stem(backlit_files, well_lit_files)
        except ValueError as err:  # no pair: the folders the config names do not fit
            raise ConfigError(
                f"backlit_dir {config.backlit_dir}, well_lit_dir {config.well_lit_dir}: {err}"
            ) from None
    try:
        images = FolderImages(
            backlit_files,
            config.crop_size,
            cache=config.cache_images,
            crop=config.crop_mode == "random",
        )
    except ValueError as err:  # not one readable image: the folder the config names
        raise ConfigError(f"backlit_dir {config.backlit_dir}: {err}") from None
    if config.regime == "paired":  # the partners of the backlit images that could be read
        partner = dict(zip(backlit_files, well_lit_files, strict=True))
        well_lit_files = [partner[path] for path in images.files]
    dataset = TrainingImages(images, _augment_params(config) if config.augment else None)
    held = [images.get(i) for i in range(min(config.num_samples, len(images)))]  # 0: no grid

    # ---- network and optimiser (same seed on every rank: identical initial weights)
    torch.manual_seed(config.seed)
    core = EnhancementNet(padding_mode="zeros").to(device)
    model: nn.Module = core
    if procs.world_size > 1:
        model = DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = _make_optimizer(core, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp and device.type == "cuda")

    # ---- the guidance method
    method = get_method(config.method)(_method_context(config, procs, run_dir, images,
                                                       well_lit_files, factory))  # fmt: skip
    method.check_identity_layer_weights()

    # ---- the run's state: fresh, or as the checkpoint left it
    state = RunState.fresh(config)
    if checkpoint is None:
        _initial_weights(core, config)
        method.setup()
    else:
        core.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        method.load_state_dict(checkpoint["method"])
        state.load_state_dict(_run_state_of(checkpoint, config), device)
        _set_rng_state(checkpoint["rng"])
        log.info("resumed from iteration %d", state.iteration)
    files = _RunFiles(run_dir, config, method, is_main)
    if is_main:  # only now: a config that failed before this point leaves no trace
        save_config(config, run_dir / "config.yaml")

    # ---- logging sinks (rank 0) and the batches still to come
    start = state.iteration
    resume_rows = start if checkpoint else None
    metrics = MetricsCSV(run_dir / "metrics.csv", resume_rows) if is_main else None  # rank 0
    writer = _tensorboard_writer(run_dir, start) if is_main and config.tensorboard else None
    shown = is_main and procs.show_progress
    progress = tqdm(total=config.iterations, initial=start, disable=not shown, dynamic_ncols=True)
    loader = DataLoader(
        dataset,
        batch_sampler=ResumableBatchSampler(
            len(dataset), config.batch_size, config.seed, start, config.iterations,
            procs.rank, procs.world_size,
        ),
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
    )  # fmt: skip

    # ---- the loop
    interrupted: KeyboardInterrupt | None = None
    bar_label = ""  # the progress bar's description (a disabled bar has none)
    try:
        with logging_redirect_tqdm():
            if checkpoint is not None and state.iteration == state.round_end:
                row = _finish_interrupted_round(state, method, core, config, files)
                if metrics is not None and row is not None:
                    _log_row(metrics, writer, progress, row)
            for it, inputs in enumerate(loader, start=start):
                stage, round_number = state.stage, state.round
                # the bar says where the run is: its stage, and which guided round
                where = "reconstruction" if stage == "reconstruction" else f"round {round_number}"
                if shown and where != bar_label:  # drawn at once: a short round shows too
                    progress.set_description_str(where, refresh=True)
                    bar_label = where
                values = _step(model, core, optimizer, scaler, method, inputs, it, stage, config)
                values = _average_over_ranks(values, procs.world_size)
                if not all(math.isfinite(v) for v in values.values()):
                    skipped = "" if math.isfinite(values["grad_norm"]) else " (step skipped)"
                    log.warning("iteration %d: non-finite loss terms %s%s", it, values, skipped)
                state.iteration = it + 1
                state.last_values = values
                score = values["psnr_y"] if stage == "reconstruction" else values["total"]
                state.record(score, values["total"], values["grad_norm"], core.state_dict())
                if config.ema_decay and stage == "guided":
                    state.average_weights(core.state_dict(), config.ema_decay)

                reason = restart_reason(state, config)
                if reason and state.iteration == config.iterations:
                    # a new random network that no iteration is left to train would replace
                    # the trained one in last.pt and best.pt
                    log.warning("iteration %d: %s, but the run ends here: the network is kept",
                                it, reason)  # fmt: skip
                elif reason and state.reinits < config.max_reinits:
                    state.restart_reconstruction(config)
                    log.warning("iteration %d: %s: re-initialising the network (%d/%d)",
                                it, reason, state.reinits, config.max_reinits)  # fmt: skip
                    optimizer = _reinitialise(core, config, state.reinits)
                elif reason:
                    log.warning("iteration %d: %s, but no re-initialisation is left "
                                "(max_reinits=%d)", it, reason, config.max_reinits)  # fmt: skip
                if state.iteration == state.round_end:
                    _end_of_round(state, values, method, core, config, files)

                if metrics is not None and _due(config.log_every, it, config.iterations - 1):
                    row = {"iteration": it, "stage": stage, "round": round_number, **values}
                    _log_row(metrics, writer, progress, row)
                progress.update(1)
                if metrics is not None and _due(config.sample_every, state.iteration,
                                                config.iterations):  # fmt: skip
                    _write_pictures(core, held, run_dir, state, metrics, config)
                if config.checkpoint_every and state.iteration % config.checkpoint_every == 0:
                    files.write_checkpoints(state, core, optimizer, scaler)
                if config.snapshot_every and state.iteration % config.snapshot_every == 0:
                    files.write_snapshot(state, core)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM as rave train turns it into one
        interrupted = err
        log.warning("interrupted: saving a checkpoint at iteration %d", state.iteration)
    finally:
        progress.close()

    files.write_checkpoints(state, core, optimizer, scaler)
    files.write_average(state)
    if metrics is not None:
        _write_loss_plot(metrics, run_dir, state)
    if writer is not None:
        writer.close()
    if interrupted is not None:
        raise interrupted  # as it came: rave train's exit status depends on the signal
    result = TrainResult(run_dir, last_path, best_path, state.iteration, False, core,
                         best_info=dict(state.best_info))  # fmt: skip
    planned_guidance = config.iterations > config.reconstruction_iterations
    if planned_guidance and state.reinits and state.iteration <= state.guided_start:
        log.warning(
            "%s: the run ends in a reconstruction stage: %d re-initialisations moved the "
            "guided stage to iteration %d, so the network was never guided; --resume with "
            "--set iterations=N (N > %d) trains it further",
            run_dir, state.reinits, state.guided_start, state.guided_start,
        )  # fmt: skip
    if state.dead_streak > 0:
        raise DeadNetworkError(
            f"{run_dir}: the network ends dead (no gradient in its last {state.dead_streak} "
            f"iterations, after {state.reinits} re-initialisations): its light map is 0 or "
            "so small that every pixel clamps; train again with another seed, a higher "
            "max_reinits or init_weights: identity",
            result,
        )
    return result


def _step(
    model: nn.Module,
    core: EnhancementNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    method: GuidanceMethod,
    inputs: Tensor,
    iteration: int,
    stage: Stage,
    config: TrainConfig,
) -> dict[str, Tensor]:
    """One optimisation step on ``inputs``; the logged values as detached 0-d tensors."""
    device = next(core.parameters()).device
    inputs = inputs.to(device, non_blocking=True)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    autocast = torch.autocast(device.type, dtype=amp_dtype) if config.amp else nullcontext()
    with autocast:
        light = model(inputs)
    # the division in float32: 1e-9 vanishes in float16
    enhanced = apply_light_map(inputs, light.float(), eps=config.light_eps)
    with autocast:
        terms = method.loss(enhanced, inputs, step=iteration, stage=stage, light=light.float())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["total"]).backward()
    scaler.unscale_(optimizer)  # true gradients, for their norm
    if config.grad_clip_norm > 0:  # returns the norm before clipping: bursts stay in the log
        grad_norm = torch.nn.utils.clip_grad_norm_(core.parameters(), config.grad_clip_norm)
    else:
        grad_norm = _grad_norm(core)
    if scaler.is_enabled() or torch.isfinite(grad_norm):  # the scaler skips such steps itself
        scaler.step(optimizer)
        scaler.update()
    # else: one NaN or infinite gradient would make every weight NaN for the rest of the run
    # (Adam's moments keep it); the step is skipped and the loop warns of the non-finite terms
    values = {k: v.detach().float() for k, v in terms.items()}
    values["grad_norm"] = grad_norm
    if stage == "reconstruction":
        values["psnr_y"] = reconstruction_psnr(enhanced.detach(), inputs)
    return values


def _end_of_round(
    state: RunState,
    values: dict[str, float] | None,
    method: GuidanceMethod,
    core: EnhancementNet,
    config: TrainConfig,
    files: _RunFiles,
) -> None:
    """The current stage or round reached its planned end: extend it, or start the next.

    ``values`` are the round's last logged terms, for the extension rule (None: not known,
    no extension). Ctrl-C during the method's hook (CLIP-LIT's prompt refinement takes
    minutes) puts the method's state back as it was before the hook, so that ``last.pt``
    holds the round's end as still to do (``iteration == round_end``); a resumed run does
    it first (:func:`_finish_interrupted_round`).
    """
    if state.round > 0:
        if values is not None:
            loss = method.extension_loss(values)
            end = extended_end(state.round_end, state.iteration, loss,
                               config.round_extension_above, config.round_extension)  # fmt: skip
            if end != state.round_end:
                log.info("round %d: loss %.4g > %g: %d more iterations", state.round, loss,
                         config.round_extension_above, end - state.round_end)  # fmt: skip
                state.round_end = end
                return
        # the method's hook, with the round's best network
        round_best = copy.deepcopy(core).eval()
        if state.best_model is not None:
            round_best.load_state_dict(state.best_model)
        before = copy.deepcopy(method.state_dict())
        try:
            method.end_of_round(state.round - 1, round_best)
        except KeyboardInterrupt:
            method.load_state_dict(before)  # not half a refinement
            raise
    files.write_round_best(state)
    per_round = config.best_rule == "reference" or not method.losses_comparable_across_rounds
    state.next_round(config, reset_tracker=state.round == 0 or per_round)


def _finish_interrupted_round(
    state: RunState,
    method: GuidanceMethod,
    core: EnhancementNet,
    config: TrainConfig,
    files: _RunFiles,
) -> dict[str, Any] | None:
    """A resumed run whose checkpoint was saved by Ctrl-C during a round's end: that end is
    done now, and the round's last iteration logged (its row was not written), as an
    uninterrupted run would have. Before, the round never ended: ``round_end`` stayed
    behind the iteration count, so no later round began and CLIP-LIT's prompts were never
    refined again (and kept half a refinement).

    Returns:
        the round's last metrics row, when it is due (None otherwise).
    """
    done = state.iteration - 1
    stage = "reconstruction" if done < state.guided_start else "guided"
    row = {"iteration": done, "stage": stage, "round": state.round, **state.last_values}
    log.info("iteration %d: ending round %d first (Ctrl-C interrupted its end)", done,
             state.round)  # fmt: skip
    _end_of_round(state, state.last_values or None, method, core, config, files)
    due = state.last_values and _due(config.log_every, done, config.iterations - 1)
    return row if due else None


class _RunFiles:
    """Checkpoints a run writes (rank 0 only): last/best/averaged.pt, rounds' bests, snapshots."""

    def __init__(
        self, run_dir: Path, config: TrainConfig, method: GuidanceMethod, is_main: bool
    ) -> None:
        self.run_dir, self.config, self.method, self.is_main = run_dir, config, method, is_main
        self.last_saved: int | None = None  # the iteration of the last.pt this run wrote

    def write_checkpoints(
        self,
        state: RunState,
        core: EnhancementNet,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> None:
        """``last.pt`` (everything to resume), ``best.pt`` and the current round's best."""
        if not self.is_main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model": _cpu_state(core),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "method_name": self.config.method,
            "method": self.method.state_dict(),
            "run": state.state_dict(),
            "iteration": state.iteration,
            "rng": _get_rng_state(),
            "config": config_to_dict(self.config),
        }
        self._save(payload, self.run_dir / "last.pt", state)
        if state.best_model is None:
            model, info = _cpu_state(core), {"iteration": state.iteration, "stage": "none"}
        else:
            model, info = state.best_model, state.best_info
        self._save(self._best_payload(model, info), self.run_dir / "best.pt", state)
        self.write_round_best(state)

    def write_snapshot(self, state: RunState, core: EnhancementNet) -> None:
        """``snapshots/iter_NNNNNN.pt``: the network now (its weight average, if kept)."""
        if not self.is_main:
            return
        info = {"iteration": state.iteration, "stage": "snapshot", "round": state.round}
        weights = _cpu_state(core)
        if state.averaged_model is not None:
            weights = {k: v.cpu() for k, v in state.averaged_model.items()}
            info["averaged_updates"] = state.averaged_updates
        path = self.run_dir / "snapshots" / f"iter_{state.iteration:06d}.pt"
        self._save(self._best_payload(weights, info), path, state)

    def write_average(self, state: RunState) -> None:
        """``averaged.pt``: the weight average at the end of the run (``ema_decay > 0``)."""
        if not self.is_main or state.averaged_model is None:
            return
        info = {"iteration": state.iteration, "stage": "averaged",
                "averaged_updates": state.averaged_updates}  # fmt: skip
        weights = {k: v.cpu() for k, v in state.averaged_model.items()}
        self._save(self._best_payload(weights, info), self.run_dir / "averaged.pt", state)

    def write_round_best(self, state: RunState) -> None:
        """``best_round_NNN.pt`` of the current round, under the authors' per-round rule."""
        if not self.is_main or self.config.best_rule != "reference" or state.best_model is None:
            return
        if state.best_info.get("round") != state.round:
            return  # no best found in this round yet
        path = self.run_dir / round_best_filename(state.round)
        self._save(self._best_payload(state.best_model, state.best_info), path, state)

    def _save(self, payload: dict[str, Any], path: Path, state: RunState) -> None:
        """:func:`save_checkpoint`; a file that cannot be written stops the run in one line.

        Raises:
            CheckpointWriteError: naming the file, why, and what ``last.pt`` still holds.
        """
        last = self.run_dir / "last.pt"
        try:
            save_checkpoint(payload, path)
        except OSError as err:
            if self.last_saved is not None:
                kept = f"{last} holds iteration {self.last_saved}"
            elif last.exists():
                kept = f"{last} is kept as it was"
            else:
                kept = "no checkpoint of this run was saved"
            raise CheckpointWriteError(
                f"iteration {state.iteration}: cannot write {path} "
                f"({err.strerror or describe_failure(err)}); "
                f"{kept}"
            ) from None
        if path == last:
            self.last_saved = state.iteration

    def _best_payload(self, model: dict[str, Tensor], info: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT + "/best",
            "model": {k: v.cpu() for k, v in model.items()},
            "best_info": info,
            "method_name": self.config.method,
            "method": self.method.state_dict(),
            "config": config_to_dict(self.config),
        }


def round_best_filename(round_number: int) -> str:
    """File of round ``round_number``'s best network (0: the reconstruction stage)."""
    return f"best_round_{round_number:03d}.pt"


# --------------------------------------------------------------------------- helpers
# What a checkpoint must hold to be resumed (version 1 kept the run's counters at the top).
_RESUME_KEYS = ("model", "optimizer", "scaler", "method", "rng", "config", "iteration")
_RESUME_KEYS_V1 = ("guided_start", "reinits", "dead_streak", "tracker")


def _read_resume_checkpoint(
    resume: str | Path, last_path: Path, config: TrainConfig
) -> dict[str, Any]:
    """The checkpoint to resume, checked before anything is written.

    Raises:
        CheckpointError: one line naming the file: not a training checkpoint of this loop,
            a missing entry, an iteration that is not a count, or another network.
    """
    path = last_path if str(resume) == "last" else Path(resume)
    checkpoint = load_checkpoint_file(path)
    version = checkpoint.get("format")
    if version not in (CHECKPOINT_FORMAT, _CHECKPOINT_FORMAT_V1):
        raise CheckpointError(f"{path}: not a training checkpoint of this loop")
    needed = _RESUME_KEYS + (("run",) if version == CHECKPOINT_FORMAT else _RESUME_KEYS_V1)
    missing = [key for key in needed if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path}: an incomplete training checkpoint (no {', '.join(map(repr, missing))})"
        )
    for key in ("model", "config", *(("run",) if version == CHECKPOINT_FORMAT else ())):
        if not isinstance(checkpoint[key], dict):
            raise CheckpointError(f"{path}: damaged training checkpoint: {key!r} is not a mapping")
    iteration = checkpoint["iteration"]
    counted = checkpoint["run"].get("iteration") if version == CHECKPOINT_FORMAT else iteration
    if not _is_count(iteration) or counted != iteration:
        raise CheckpointError(
            f"{path}: damaged training checkpoint: iteration {iteration!r} is not the "
            "number of iterations done"
        )
    # The network's keys and shapes, checked now: load_state_dict would raise PyTorch's
    # multi-line RuntimeError only after the run folder and the data were set up.
    build_enhancer(checkpoint["model"], str(path))
    # the method's state is that method's: another one cannot read it (KeyError mid-setup)
    trained_with = checkpoint.get("method_name", checkpoint["config"].get("method"))
    if trained_with is not None and not _same_method_family(str(trained_with), config.method):
        raise CheckpointError(
            f"{path}: a run of method {trained_with!r}, but the config says method "
            f"{config.method!r}; resume it with method: {trained_with}, or start a new run "
            "from its weights with init_weights"
        )
    _warn_config_changes(checkpoint["config"], config, path)
    return checkpoint


def _check_method(config: TrainConfig) -> None:
    """The config's ``method`` and ``method_options``, checked as the method will read them.

    Raises:
        ConfigError: an unknown method, an unknown option or a value its options refuse.
    """
    try:
        method = get_method(config.method)
    except ValueError as err:
        raise ConfigError(f"method: {err}") from None
    source = f"method_options of {config.method!r}"
    coerce_dataclass(method.Options, dict(config.method_options), source)


def _check_output_dir_apart(config: TrainConfig) -> None:
    """The run folder must not be a data folder: its PNGs (``loss_curves.png``) would be
    read as training images by the next run, and a fresh run replaces ``metrics.csv``.

    Raises:
        ConfigError: output_dir is backlit_dir or well_lit_dir.
    """
    output = Path(config.output_dir).resolve()
    for key in ("backlit_dir", "well_lit_dir"):
        folder = getattr(config, key)
        if folder and Path(folder).resolve() == output:
            raise ConfigError(
                f"output_dir {config.output_dir} is the {key}: the run's pictures "
                "(loss_curves.png) would become training images; give the run its own folder"
            )


def _same_method_family(saved: str, configured: str) -> bool:
    """Whether method ``configured`` reads the state of a run of method ``saved``: the same
    method, or one derived from the other (a variant keeps its base's state)."""
    if saved == configured:
        return True
    try:
        first, second = get_method(saved), get_method(configured)
    except ValueError:  # the saved method is not available here
        return False
    return issubclass(first, second) or issubclass(second, first)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _data_files(config: TrainConfig, key: str) -> list[Path]:
    """The image files of the folder that config key ``key`` names.

    Raises:
        ConfigError: naming the key and the folder: not set, missing, or without images.
    """
    folder = getattr(config, key)
    if not folder:
        raise ConfigError(f"{key} is not set: give the folder of training images")
    try:
        return list_images(folder)
    except FileNotFoundError:
        raise ConfigError(f"{key} {folder}: no such folder") from None
    except NotADirectoryError:
        raise ConfigError(f"{key} {folder}: not a folder") from None
    except ValueError as err:  # no image files
        raise ConfigError(f"{key} {err}") from None


def _run_state_of(checkpoint: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """The :class:`RunState` dict of a checkpoint (version 1 kept its counters at the top)."""
    if "run" in checkpoint:
        return checkpoint["run"]
    iteration, guided_start = int(checkpoint["iteration"]), int(checkpoint["guided_start"])
    if iteration < guided_start:
        round_number, round_end = 0, guided_start
    else:  # version 1 had no round extensions: rounds of round_iterations from guided_start
        round_number = (iteration - guided_start) // config.round_iterations + 1
        round_end = guided_start + round_number * config.round_iterations
    info = dict(checkpoint.get("best_info") or {})
    if "round" in info:
        info["round"] = int(info["round"]) + 1  # version 1 numbered guided rounds from 0
    return {
        "iteration": iteration,
        "guided_start": guided_start,
        "round": round_number,
        "round_end": round_end,
        "reinits": checkpoint["reinits"],
        "dead_streak": checkpoint["dead_streak"],
        "tracker": checkpoint["tracker"],
        "best_model": checkpoint.get("best_model"),
        "best_info": info,
    }


def _method_context(
    config: TrainConfig,
    procs: _Processes,
    run_dir: Path,
    images: FolderImages,
    well_lit_files: list[Path],
    factory: EncoderFactory,
) -> MethodContext:
    encoders: dict[str, ImageEncoder] = {}

    def create_encoder(name: str) -> ImageEncoder:
        if name not in encoders:
            try:
                created = factory(name, procs.device)
            except (ValueError, RuntimeError, OSError) as err:  # names, tags, weight files
                keys = [k for k in ("guidance_encoder", "identity_encoder")
                        if getattr(config, k) == name] or ["encoder"]  # fmt: skip
                message = " ".join(str(err).split())
                raise EncoderError(f"{' and '.join(keys)} {name!r}: {message}") from err
            encoders[name] = created.eval().requires_grad_(False)
            # the authors' pinned torchvision resizes without antialiasing (docs/method.md)
            encoders[name].squash_antialias = config.loss_resize_antialias
        return encoders[name]

    return MethodContext(
        config=config,
        device=procs.device,
        run_dir=run_dir,
        is_main=procs.rank == 0,
        show_progress=procs.rank == 0 and procs.show_progress,
        rank=procs.rank,
        world_size=procs.world_size,
        create_encoder=create_encoder,
        backlit_files=tuple(images.files),
        well_lit_files=tuple(well_lit_files),
    )


def _initial_weights(core: EnhancementNet, config: TrainConfig) -> None:
    """``config.init_weights``: the seeded random layers, the identity, or a checkpoint's."""
    if config.init_weights == "identity":
        start_as_identity(core)
    elif config.init_weights:
        source = f"init_weights {config.init_weights}"
        try:
            init = extract_state_dict(load_checkpoint_file(config.init_weights), source)
        except CheckpointError as err:  # its message names the file, not the config key
            raise CheckpointError(f"init_weights: {err}") from None
        # build_enhancer words a mismatch in one line (load_state_dict: PyTorch's key list)
        core.load_state_dict(build_enhancer(init, source).state_dict())


def _reinitialise(core: EnhancementNet, config: TrainConfig, reinits: int) -> torch.optim.Optimizer:
    """Fresh random weights (seeded by the restart count) and a fresh optimiser."""
    torch.manual_seed(config.seed + 7919 * reinits)
    core.load_state_dict(EnhancementNet(padding_mode="zeros").state_dict())
    return _make_optimizer(core, config)


def _log_row(metrics: MetricsCSV, writer: Any, progress: Any, row: dict[str, Any]) -> None:
    metrics.write(row)
    numbers = {k: v for k, v in row.items() if isinstance(v, float)}
    if writer is not None:
        for key, value in numbers.items():
            writer.add_scalar(f"train/{key}", value, row["iteration"])
    progress.set_postfix({k: f"{v:.4g}" for k, v in numbers.items()}, refresh=False)


def _due(every: int, count: int, last: int) -> bool:
    """Every ``every``-th ``count`` (0: never), and always at ``last``."""
    return bool(every) and (count % every == 0 or count == last)


def _setup_processes(device_name: str) -> _Processes:
    """Rank, world size and device; joins the torchrun process group when ``WORLD_SIZE>1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device_name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_name)
    if world_size <= 1:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return _Processes(0, 1, device, owns_group=False)
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        # MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE come from torchrun's environment
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Processes(rank, world_size, device, owns_group=owns)


def _default_encoder_factory(name: str, device: torch.device) -> ImageEncoder:
    from rave.encoders import create_encoder

    return create_encoder(name, device=device)


def _make_optimizer(core: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Adam with L2 weight decay (not AdamW), as the reference code
    return torch.optim.Adam(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _augment_params(config: TrainConfig) -> AugmentParams:
    return AugmentParams.of(config)


def _average_over_ranks(values: dict[str, Tensor], world_size: int) -> dict[str, float]:
    stacked = torch.stack(list(values.values()))
    if world_size > 1:
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked / world_size
    return dict(zip(values, stacked.cpu().tolist(), strict=True))


def _grad_norm(module: nn.Module) -> Tensor:
    """L2 norm of all gradients of ``module`` (a 0-d float32 tensor)."""
    grads = [
        p.grad.detach().float().pow(2).sum() for p in module.parameters() if p.grad is not None
    ]
    return torch.stack(grads).sum().sqrt() if grads else torch.zeros(())


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _write_pictures(
    core: EnhancementNet,
    held: list[Tensor],
    run_dir: Path,
    state: RunState,
    metrics: MetricsCSV,
    config: TrainConfig,
) -> None:
    """The sample grid and the loss plot; a failure to write them is a warning, not the end
    of the run (they are for looking at: the run's checkpoints are what matters)."""
    try:
        path = run_dir / "samples" / f"iter_{state.iteration:06d}.png"
        _write_samples(core, held, path, config)
        save_loss_plot(metrics.read(), run_dir / "loss_curves.png", state.guided_start)
    except Exception as err:  # a full disk, or a plotting library's own failure
        log.warning("iteration %d: no sample grid or loss plot (%s); training goes on",
                    state.iteration - 1, describe_failure(err))  # fmt: skip


def _write_loss_plot(metrics: MetricsCSV, run_dir: Path, state: RunState) -> None:
    """The run's last ``loss_curves.png``, after its checkpoints: a failure is a warning.

    Also after Ctrl-C, when a first import of matplotlib that the interruption cut short
    leaves it half-initialised (its next import raises KeyError): that failure must not
    replace the interruption's exit status by a traceback.
    """
    try:
        save_loss_plot(metrics.read(), run_dir / "loss_curves.png", state.guided_start)
    except Exception as err:
        log.warning("no loss plot (%s); the checkpoints are written", describe_failure(err))


@torch.no_grad()
def _write_samples(
    core: EnhancementNet, held: list[Tensor], path: Path, config: TrainConfig
) -> None:
    if not held:  # num_samples: 0
        return
    device = next(core.parameters()).device
    inputs = torch.stack(held).to(device)
    outputs = apply_light_map(inputs, core(inputs).float(), eps=config.light_eps)
    save_sample_grid(inputs, outputs, path)


def _tensorboard_writer(run_dir: Path, start: int) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a minimal install may lack it
        log.warning("tensorboard is not installed: metrics go to metrics.csv only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=start or None)


def _warn_config_changes(saved: dict[str, Any], config: TrainConfig, source: Path) -> None:
    current = config_to_dict(config)
    changed = sorted(k for k in current if k in saved and saved[k] != current[k])
    significant = [k for k in changed if k not in _RESUMABLE_CHANGES]
    if significant:

        def brief(value: Any) -> str:
            text = repr(value)
            return text if len(text) <= 60 else text[:57] + "..."

        log.warning(
            "%s: resuming with config values that differ from the checkpoint's (%s): the run "
            "will not match an uninterrupted one",
            source,
            ", ".join(f"{k} {brief(saved[k])} -> {brief(current[k])}" for k in significant),
        )


def _get_rng_state() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the global MT19937 generator gives the legacy form
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss)
    )
