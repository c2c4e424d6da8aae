"""The training loop, written to be read top to bottom (nanoGPT style, no callbacks).

``train(config)`` does, in order: processes and devices (torchrun/DDP when ``WORLD_SIZE>1``),
the run directory, data, the enhancement network (zero padding while training), the
optimiser, the guidance method, resume, then the loop. Each iteration: a batch, the light
map, ``clamp(I / (L + eps), 0, 1)``, the method's loss, one Adam step, then logging, best
checkpoint tracking, samples and checkpoints. Ctrl-C saves ``last.pt`` before leaving.

Files in the run directory (rank 0 only):
    config.yaml           the resolved config
    last.pt, best.pt      checkpoints (``{"model": state_dict, ...}``; ``rave enhance
                          --model`` loads them and switches padding to reflection)
    metrics.csv           logged terms per iteration
    loss_curves.png       the logged terms against the iteration
    samples/iter_N.png    fixed backlit images (top) and their enhancements (bottom)
    tensorboard/          the same metrics for TensorBoard, when it is installed
    residual.pt           RAVE's residual vector, when computed at the start of the run
"""

from __future__ import annotations

import copy
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

from rave.encoders.base import ImageEncoder
from rave.network import (
    EnhancementNet,
    apply_light_map,
    extract_state_dict,
    load_checkpoint_file,
    start_as_identity,
)
from rave.training.artifacts import MetricsCSV, save_checkpoint, save_loss_plot, save_sample_grid
from rave.training.best import BestTracker, psnr_y
from rave.training.config import TrainConfig, config_to_dict, save_config
from rave.training.data import (
    AugmentParams,
    FolderImages,
    ResumableBatchSampler,
    TrainingImages,
    list_images,
    pair_by_stem,
)
from rave.training.methods import GuidanceMethod, MethodContext, get_method

__all__ = ["CHECKPOINT_FORMAT", "EncoderFactory", "TrainResult", "train"]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "rave-train/1"
EncoderFactory = Callable[[str, torch.device], ImageEncoder]
# config keys that may change between a run and its resumption without changing the result
_RESUMABLE_CHANGES = frozenset(
    {"iterations", "checkpoint_every", "sample_every", "log_every", "device", "num_workers",
     "output_dir", "tensorboard", "num_samples"}
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


@dataclass(frozen=True)
class _Processes:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we destroy it


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    encoder_factory: EncoderFactory | None = None,
) -> TrainResult:
    """Train an enhancement network as ``config`` says.

    Args:
        config: the resolved configuration.
        resume: None for a fresh run; ``"last"`` for ``<output_dir>/last.pt``; or a path to a
            checkpoint written by this loop. A resumed run continues exactly where the
            checkpoint stopped (same batches, same losses).
        encoder_factory: ``(name, device) -> ImageEncoder``; by default
            :func:`rave.encoders.create_encoder` (tests pass small stand-ins).

    Returns:
        the run's :class:`TrainResult`.

    Raises:
        FileExistsError: a fresh run in a directory that already holds a checkpoint.
    """
    procs = _setup_processes(config.device)
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

    # ---- resume point (read before anything is written)
    checkpoint: dict[str, Any] | None = None
    if resume is not None:
        resume_path = last_path if str(resume) == "last" else Path(resume)
        checkpoint = load_checkpoint_file(resume_path)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{resume_path}: not a training checkpoint of this loop")
        _warn_config_changes(checkpoint["config"], config, resume_path)
    elif is_main and last_path.exists():
        raise FileExistsError(
            f"{run_dir}: already holds a checkpoint; resume it (--resume) or pick another "
            "output_dir"
        )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    # ---- data: the backlit images are the training set; both folders feed the method
    backlit_files = list_images(config.backlit_dir)
    well_lit_files = list_images(config.well_lit_dir) if config.well_lit_dir else []
    if config.regime == "paired":
        backlit_files, well_lit_files = pair_by_stem(backlit_files, well_lit_files)
    images = FolderImages(backlit_files, config.crop_size, cache=config.cache_images)
    augment_params = _augment_params(config) if config.augment else None
    dataset = TrainingImages(images, augment_params)
    held = torch.stack([images.get(i) for i in range(min(config.num_samples, len(images)))])

    # ---- network and optimiser (same seed on every rank: identical initial weights)
    torch.manual_seed(config.seed)
    core = EnhancementNet(padding_mode="zeros").to(device)
    model: nn.Module = core
    if procs.world_size > 1:
        model = DistributedDataParallel(
            core, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = _make_optimizer(core, config)
    use_amp = config.amp
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and device.type == "cuda")

    # ---- the guidance method
    encoders: dict[str, ImageEncoder] = {}

    def create_encoder(name: str) -> ImageEncoder:
        if name not in encoders:
            encoders[name] = factory(name, device).eval().requires_grad_(False)
            encoders[name].squash_antialias = config.loss_resize_antialias
        return encoders[name]

    context = MethodContext(
        config=config,
        device=device,
        run_dir=run_dir,
        is_main=is_main,
        rank=procs.rank,
        world_size=procs.world_size,
        create_encoder=create_encoder,
        backlit_files=tuple(images.files),
        well_lit_files=tuple(well_lit_files),
    )
    method: GuidanceMethod = get_method(config.method)(context)

    # ---- state that a checkpoint carries
    start = 0
    guided_start = config.reconstruction_iterations  # moves if the network is re-initialised
    reinits = 0
    dead_streak = 0  # consecutive reconstruction iterations without any gradient
    tracker = BestTracker(config.best_window, "max" if guided_start > 0 else "min")
    best_state: dict[str, Tensor] | None = None
    best_info: dict[str, Any] = {}
    if checkpoint is None:
        if config.init_weights == "identity":
            start_as_identity(core)
        elif config.init_weights:
            init = load_checkpoint_file(config.init_weights)
            core.load_state_dict(extract_state_dict(init, config.init_weights))
        method.setup()
    else:
        core.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        method.load_state_dict(checkpoint["method"])
        start, guided_start, reinits, dead_streak = (
            int(checkpoint[k]) for k in ("iteration", "guided_start", "reinits", "dead_streak")
        )
        tracker.load_state_dict(checkpoint["tracker"])
        if checkpoint.get("best_model") is not None:
            best_state = {k: v.to(device) for k, v in checkpoint["best_model"].items()}
            best_info = dict(checkpoint["best_info"])
        _set_rng_state(checkpoint["rng"])
        log.info("resumed from iteration %d", start)

    def checkpoint_payload(completed: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": _cpu_state(core),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "method_name": config.method,
            "method": method.state_dict(),
            "iteration": completed,
            "guided_start": guided_start,
            "reinits": reinits,
            "dead_streak": dead_streak,
            "tracker": tracker.state_dict(),
            "best_model": None
            if best_state is None
            else {k: v.cpu() for k, v in best_state.items()},
            "best_info": best_info,
            "rng": _get_rng_state(),
            "config": config_to_dict(config),
        }

    def write_checkpoints(completed: int) -> None:
        if not is_main:
            return
        save_checkpoint(checkpoint_payload(completed), last_path)
        model_state = best_state if best_state is not None else _cpu_state(core)
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT + "/best",
                "model": {k: v.cpu() for k, v in model_state.items()},
                "best_info": best_info or {"iteration": completed, "stage": "none"},
                "method_name": config.method,
                "method": method.state_dict(),
                "config": config_to_dict(config),
            },
            best_path,
        )

    # ---- logging sinks (rank 0)
    metrics = (
        MetricsCSV(run_dir / "metrics.csv", resume_from=start if checkpoint else None)
        if is_main
        else None
    )
    writer = _tensorboard_writer(run_dir, start) if is_main and config.tensorboard else None
    from tqdm.auto import tqdm

    progress = tqdm(total=config.iterations, initial=start, disable=not is_main, dynamic_ncols=True)

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
    completed = start
    interrupted = False
    try:
        for it, inputs in enumerate(loader, start=start):
            stage = "reconstruction" if it < guided_start else "guided"
            inputs = inputs.to(device, non_blocking=True)
            autocast = torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext()
            with autocast:
                light = model(inputs)
            # the division in float32: 1e-9 vanishes in float16
            enhanced = apply_light_map(inputs, light.float(), eps=config.light_eps)
            with autocast:
                terms = method.loss(enhanced, inputs, step=it, stage=stage)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms["total"]).backward()
            scaler.unscale_(optimizer)  # true gradients, for their norm
            grad_norm = _grad_norm(core)
            scaler.step(optimizer)
            scaler.update()
            completed = it + 1

            # every rank sees the same (averaged) values, so all take the same decisions
            values = {k: v.detach().float() for k, v in terms.items()}
            values["grad_norm"] = grad_norm
            if stage == "reconstruction":
                values["psnr_y"] = psnr_y(enhanced.detach(), inputs)
            values = _average_over_ranks(values, procs.world_size)
            if not all(math.isfinite(v) for v in values.values()):
                log.warning("iteration %d: non-finite loss terms %s", it, values)

            # best checkpoint: PSNR-Y average in reconstruction, loss average when guided
            score = values["psnr_y"] if stage == "reconstruction" else values["total"]
            if tracker.update(score, it):
                best_state = {k: v.detach().clone() for k, v in core.state_dict().items()}
                best_info = {"iteration": it, "stage": stage, "score": tracker.best,
                             "round": _round_of(it, guided_start, config)}  # fmt: skip

            # Restart the reconstruction stage with fresh weights when the network never learnt
            # identity (the paper's rule, at the end of the stage), or as soon as it is dead:
            # about half of all initialisations give a zero light map (negative output bias,
            # then ReLU) or one so small that every pixel clamps to 1, and no gradient flows.
            dead_streak = (
                dead_streak + 1 if stage == "reconstruction" and values["grad_norm"] == 0 else 0
            )
            restart = ""
            if dead_streak >= config.best_window:
                restart = f"no gradient for {dead_streak} iterations (dead light map)"
            elif completed == guided_start and (tracker.best or 0.0) < config.reinit_below_psnr:
                restart = (
                    f"reconstruction PSNR-Y average {tracker.best or 0.0:.2f} dB < "
                    f"{config.reinit_below_psnr:.2f} dB"
                )
            if restart and reinits < config.max_reinits:
                reinits += 1
                log.warning(
                    "%s: re-initialising the network (%d/%d)", restart, reinits, config.max_reinits
                )
                torch.manual_seed(config.seed + 7919 * reinits)
                core.load_state_dict(EnhancementNet(padding_mode="zeros").state_dict())
                optimizer = _make_optimizer(core, config)
                guided_start = completed + config.reconstruction_iterations
                tracker.reset("max")
                best_state, best_info, dead_streak = None, {}, 0
            elif completed == guided_start:
                tracker.reset("min")  # the guided stage ranks by loss

            # end of a guided round: the method's hook, with the round's best network
            if stage == "guided" and (completed - guided_start) % config.round_iterations == 0:
                round_index = (completed - guided_start) // config.round_iterations - 1
                round_best = copy.deepcopy(core).eval()
                if best_state is not None:
                    round_best.load_state_dict(best_state)
                method.end_of_round(round_index, round_best)
                if not method.losses_comparable_across_rounds:
                    tracker.reset("min")

            # logging, samples, checkpoints (rank 0 writes)
            last_iteration = completed == config.iterations
            if is_main and config.log_every and (it % config.log_every == 0 or last_iteration):
                row = {"iteration": it, "stage": stage, **values}
                assert metrics is not None
                metrics.write(row)
                if writer is not None:
                    for key, value in values.items():
                        writer.add_scalar(f"train/{key}", value, it)
                progress.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)
            progress.update(1)
            if (
                is_main
                and config.sample_every
                and (completed % config.sample_every == 0 or last_iteration)
            ):
                _write_samples(
                    core, held, run_dir / "samples" / f"iter_{completed:06d}.png", config
                )
                assert metrics is not None
                save_loss_plot(metrics.read(), run_dir / "loss_curves.png", guided_start)
            if config.checkpoint_every and completed % config.checkpoint_every == 0:
                write_checkpoints(completed)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: saving a checkpoint at iteration %d", completed)
    finally:
        progress.close()

    write_checkpoints(completed)
    if is_main and metrics is not None:
        save_loss_plot(metrics.read(), run_dir / "loss_curves.png", guided_start)
    if writer is not None:
        writer.close()
    if interrupted:
        raise KeyboardInterrupt
    return TrainResult(run_dir, last_path, best_path, completed, interrupted, core)


# --------------------------------------------------------------------------- helpers
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


def _round_of(iteration: int, guided_start: int, config: TrainConfig) -> int:
    """Guided round of ``iteration`` (-1 during reconstruction)."""
    return -1 if iteration < guided_start else (iteration - guided_start) // config.round_iterations


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


@torch.no_grad()
def _write_samples(core: EnhancementNet, held: Tensor, path: Path, config: TrainConfig) -> None:
    device = next(core.parameters()).device
    inputs = held.to(device)
    outputs = apply_light_map(inputs, core(inputs).float(), eps=config.light_eps)
    save_sample_grid(held, outputs, path)


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
        log.warning(
            "%s: resuming with config values that differ from the checkpoint's (%s): the run "
            "will not match an uninterrupted one",
            source,
            ", ".join(significant),
        )


def _get_rng_state() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
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
