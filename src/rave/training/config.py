"""Training configuration: one flat, frozen dataclass whose defaults are the paper's settings.

A YAML file lists only what differs from the defaults; ``--set key=value`` overrides come
last. Unknown keys are rejected with an error naming the file (or the override), so a typo
never silently falls back to a default. The resolved configuration is saved in the run
directory and in every checkpoint.

Method plug-ins that need their own settings read them from ``method_options`` (a mapping
validated by the plug-in's own ``Options`` dataclass; see
:mod:`rave.training.methods.base`). RAVE's ``residual`` and ``residual_weight`` are such
options since they moved out of the top level; a config file that still has them at the top
level is read as if they were under ``method_options`` (with a warning).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rave.training.data import AugmentParams

__all__ = [
    "ConfigError",
    "TrainConfig",
    "apply_overrides",
    "coerce_dataclass",
    "config_to_dict",
    "load_config",
    "save_config",
]


log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""


@dataclass(frozen=True)
class TrainConfig(AugmentParams):
    """Everything a training run depends on (docs/method.md gives the defaults).

    Batch size is per process: under ``torchrun`` with ``W`` processes the effective batch
    is ``W * batch_size`` (as nanoGPT does), and one process reproduces the paper exactly.
    """

    # --- what to train
    method: str = "rave"
    # method-specific settings, validated by the method plug-in's ``Options`` dataclass
    method_options: dict[str, Any] = field(default_factory=dict)

    # initial weights: a checkpoint ``rave enhance --model`` accepts; "identity": random
    # layers with a last conv that outputs L = 1 (see network.start_as_identity); empty:
    # random, as the paper
    init_weights: str = ""

    # --- data
    backlit_dir: str = ""
    well_lit_dir: str = ""
    # "paired": well_lit_dir holds ground truth of the backlit scenes, matched by file stem
    regime: Literal["unpaired", "paired"] = "unpaired"
    guidance_encoder: str = "clip:ViT-B-32"
    identity_encoder: str = "clip:RN101"
    # the loss path's squash to the encoders' 224 px: False is the authors' torchvision 0.14.1
    # (no antialiasing when shrinking), True low-pass filters first (docs/method.md)
    loss_resize_antialias: bool = False
    # every training image is resized to crop_size x crop_size, aspect not kept (as the paper)
    crop_size: int = 512
    # Not in the paper: "random" trains on a random crop_size window of each photo at its
    # own resolution (photos with a side under crop_size enlarged to it, aspect kept), the
    # scale the network is used at; "resize" squashes the whole photo (the paper)
    crop_mode: Literal["resize", "random"] = "resize"
    batch_size: int = 8
    num_workers: int = 0
    # keep decoded, resized images in memory (uint8): the datasets are a few hundred images
    cache_images: bool = True

    # --- augmentation: on/off here; probabilities and ranges (the reference code's) are
    # inherited from rave.training.data.AugmentParams
    augment: bool = True

    # --- schedule and losses
    iterations: int = 3100  # reconstruction stage + one round of 2100 guided iterations
    reconstruction_iterations: int = 1000
    round_iterations: int = 2100
    reconstruction_weight: float = 25.0  # loss = 25 * L_id (all layer weights 1)
    identity_weight: float = 22.5  # 0.9 * 25
    identity_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 0.5)
    light_eps: float = 1e-9  # added to the light map in training only

    # --- optimiser
    lr: float = 2e-5
    weight_decay: float = 1e-3
    # Not in the paper: clip the gradient's global norm to this before each step (0 = off).
    # The light map divides the image, so a dark pixel whose L nears 0 gives a gradient
    # ~ I / L^2: single batches reach norms 50x the usual, inflate Adam's second moment
    # (time constant 1 / (1 - beta2) = 1000 steps) and freeze the network for hundreds of
    # iterations afterwards (docs/model_card.md).
    grad_clip_norm: float = 0.0

    # A guided round ends with round_extension more iterations while the method's loss on
    # the round's last batch is above round_extension_above (the authors: 60 while > 90, in
    # units of CLIP's losses; null: rounds are never extended). See docs/method.md.
    round_extension_above: float | None = None
    round_extension: int = 60

    # --- best checkpoint (moving average of the loss; luma PSNR to the input in
    # reconstruction). "project": one best per run, mean of the last best_window scores;
    # "reference": the authors' rule, one best per round (best_round_NNN.pt) from a
    # zero-filled window. Compared every best_every iterations (the authors: 20).
    best_rule: Literal["project", "reference"] = "project"
    best_window: int = 30
    best_every: int = 1
    # Re-initialise the network when it is dead (no gradient for min(best_window,
    # reconstruction_iterations) iterations) or when, at the end of the reconstruction
    # stage, the mean luma PSNR of its last best_window iterations is under this (dB, pyiqa's
    # BT.601 Y, as the authors' 8 dB).
    reinit_below_psnr: float = 8.0
    max_reinits: int = 3
    # Not in the paper: an exponential moving average of the weights over the guided
    # iterations (0 = off). With batches of a few small crops the network oscillates from
    # one iteration to the next; the average is written as averaged.pt and is what the
    # snapshots hold.
    ema_decay: float = 0.0

    # --- run
    seed: int = 0
    output_dir: str = "runs/rave"
    checkpoint_every: int = 500
    # Every snapshot_every iterations, the network as it is then (model only, the best.pt
    # format; its weight average when ema_decay > 0) goes to snapshots/iter_NNNNNN.pt, so
    # that a checkpoint can be chosen afterwards by a validation score
    # (scripts/select_checkpoint.py); 0 keeps none.
    snapshot_every: int = 0
    sample_every: int = 500
    log_every: int = 10
    num_samples: int = 4  # fixed backlit images shown in the sample grid (0: no grid)
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = False  # autocast: float16 + GradScaler on CUDA, bfloat16 on CPU
    tensorboard: bool = True

    def __post_init__(self) -> None:
        for name in ("backlit_dir", "well_lit_dir", "output_dir", "init_weights"):
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("~"):  # as a shell would
                object.__setattr__(self, name, str(Path(value).expanduser()))
        problems = _non_finite(self)
        if self.regime not in ("unpaired", "paired"):
            problems.append(f"regime must be 'unpaired' or 'paired', got {self.regime!r}")
        if self.crop_mode not in ("resize", "random"):
            problems.append(f"crop_mode must be 'resize' or 'random', got {self.crop_mode!r}")
        if self.best_rule not in ("project", "reference"):
            problems.append(f"best_rule must be 'project' or 'reference', got {self.best_rule!r}")
        for name in (
            "crop_size", "batch_size", "iterations", "round_iterations", "best_window",
            "best_every", "round_extension",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "snapshot_every", "sample_every", "log_every"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0 (0 disables), got {getattr(self, name)}")
        if not self.grad_clip_norm >= 0.0:
            problems.append(f"grad_clip_norm must be >= 0 (0 = off), got {self.grad_clip_norm}")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name in ("reconstruction_iterations", "num_workers", "max_reinits", "num_samples",
                     "seed"):  # fmt: skip
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("hflip_p", "vflip_p", "transpose_p", "zoom_p", "rotate_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.zoom_range) != 2 or not 0 < self.zoom_range[0] <= self.zoom_range[1]:
            problems.append(
                f"zoom_range must be (low, high) with 0 < low <= high: {self.zoom_range}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            problems.append("lr must be > 0 and weight_decay >= 0")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))


def _non_finite(config: Any) -> list[str]:
    """A problem for each float field (or float in a tuple field) that is NaN or infinite.

    The range checks below compare with bounds, which NaN passes: ``lr: .nan`` reached
    the optimiser.
    """
    problems = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            problems.append(f"{f.name} must be a finite number, got {value}")
    return problems


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain containers only (lists, not tuples), so YAML and ``weights_only`` loads accept it."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to the annotated type, or a ConfigError saying what was expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(name, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{name}: {value!r} does not match {hint}")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{name}: expected null, got {value!r}")
        return None
    if origin is tuple:
        if isinstance(value, str):  # "(0.8, 1.2)" or "0.8,1.2", as Python or a shell writes it
            value = _text_as_list(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list such as [0.8, 1.2], got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(name, v, a) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .nan and .inf as floats
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{name}: unsupported config type {hint}")


def _text_as_list(text: str) -> Any:
    """``(a, b)`` or ``a, b`` read as the YAML list ``[a, b]``; other text as it is."""
    inner = text.strip()
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1]
    elif "," not in inner:
        return text
    try:
        values = yaml.load(f"[{inner}]", Loader=_YamlLoader)
    except yaml.YAMLError:
        return text
    return values if isinstance(values, list) else text


def coerce_dataclass(
    cls: type, values: dict[str, Any], source: str, lines: Mapping[str, int] | None = None
) -> Any:
    """An instance of dataclass ``cls`` from ``values``; unknown keys and bad types raise.

    Args:
        cls: a dataclass whose fields all have defaults.
        values: field name -> raw value (from YAML or overrides).
        source: where the values came from, for error messages (a file name or ``--set``).
        lines: the line of each key in the file ``source`` (1-based), for error messages.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    lines = lines or {}
    unknown = sorted(set(values) - known, key=str)
    if unknown:
        described, unmatched = [], False
        for key in unknown:
            notes = [f"line {lines[key]}"] if key in lines else []
            close = difflib.get_close_matches(str(key).lower(), sorted(known), n=1, cutoff=0.6)
            if close:
                notes.append(f"did you mean {close[0]!r}?")
            unmatched = unmatched or not close
            described.append(f"{key!r}" + (f" ({'; '.join(notes)})" if notes else ""))
        valid = f"; valid keys: {', '.join(sorted(known))}" if unmatched else ""
        raise ConfigError(f"{source}: unknown config key(s) {', '.join(described)}{valid}")
    kwargs = {}
    for key, value in values.items():
        try:
            kwargs[key] = _coerce(key, value, hints[key])
        except ConfigError as err:
            line = f" (line {lines[key]})" if key in lines else ""
            raise ConfigError(f"{source}: {err}{line}") from None
    try:
        return cls(**kwargs)
    except ValueError as err:  # ConfigError, or a plug-in's Options checking its values
        raise ConfigError(f"{source}: {err}") from None


# Top-level keys that became options of one method; old config files keep loading.
_MOVED_TO_METHOD_OPTIONS = {"residual": "rave", "residual_weight": "rave"}


def _move_method_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` with the keys of :data:`_MOVED_TO_METHOD_OPTIONS` moved into method_options.

    Raises:
        ConfigError: such a key with another method, or given in both places.
    """
    moved = [k for k in _MOVED_TO_METHOD_OPTIONS if k in values]
    if not moved:
        return values
    values = dict(values)
    options = dict(values.get("method_options") or {})
    method = values.get("method", TrainConfig.method)
    for key in moved:
        owner = _MOVED_TO_METHOD_OPTIONS[key]
        if method != owner:
            raise ConfigError(
                f"{source}: {key!r} is an option of the {owner!r} method "
                f"(method_options.{key}), not of {method!r}"
            )
        if key in options:
            raise ConfigError(
                f"{source}: {key!r} given both at the top level and in method_options"
            )
        options[key] = values.pop(key)
        log.warning("%s: %r is now method_options.%s; read as such", source, key, key)
    values["method_options"] = options
    return values


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` as a float as YAML 1.2 does.

    PyYAML implements YAML 1.1, whose floats need a dot (``1.0e-4``): ``lr: 1e-4`` and
    ``--set lr=1e-4`` would otherwise arrive as the string ``"1e-4"``. A key given twice in
    one mapping is an error (PyYAML keeps the last silently, so an edit near the top of a
    config that repeats a key further down would change nothing).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and where (PyYAML's own text quotes the line
    with a caret under it)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem and err.problem_mark:
        mark = err.problem_mark
        text = f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}"
        context = err.context_mark
        if err.context and context is not None and context.line != mark.line:
            # where the construct that failed began: "batch_size 2" on line 2 is reported
            # as "could not find expected ':' at line 3", the line after the mistake
            text += f", {err.context} at line {context.line + 1}, column {context.column + 1}"
        return text
    return " ".join(str(err).split())


def apply_overrides(config: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """``config`` with ``key=value`` overrides applied (values parsed as YAML scalars/lists).

    ``method_options.KEY=VALUE`` sets one entry of the method's options.
    """
    values = config_to_dict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = yaml.load(raw, Loader=_YamlLoader) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item!r}: value is not valid YAML ({_yaml_problem(err)})"
            ) from None
        if key.startswith("method_options."):
            values["method_options"] = {**values["method_options"], key.split(".", 1)[1]: value}
        else:
            values[key] = value
    return coerce_dataclass(TrainConfig, _move_method_keys(values, "--set"), "--set")


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """Read a YAML config (keys of :class:`TrainConfig`), then apply ``--set`` overrides.

    Raises:
        ConfigError: unreadable file, not a mapping, unknown key or wrong value type.
    """
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            loaded = yaml.load(text, Loader=_YamlLoader)
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path}: not a text config (byte {err.start} is not UTF-8: "
                f"{err.object[err.start : err.start + 1]!r})"
            ) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys at the top level"
                              f"{_what_was_found(loaded)}")  # fmt: skip
        values = loaded
        lines = _key_lines(text)
    source = str(path) if path else "defaults"
    config = coerce_dataclass(TrainConfig, _move_method_keys(values, source), source, lines)
    return apply_overrides(config, overrides) if overrides else config


def _what_was_found(loaded: Any) -> str:
    """What a config file that is not a mapping holds, for its error message."""
    if isinstance(loaded, list):
        return ", got a list (keys are written 'key: value', without a leading '- ')"
    if isinstance(loaded, str) and re.match(r"^\w+:\S", loaded):
        key = loaded.split(":", 1)[0]
        return f", got the text {loaded[:40]!r} (a key needs a space after its colon: '{key}: ...')"
    return f", got {type(loaded).__name__} {str(loaded)[:40]!r}"


def _key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each top-level key of a YAML mapping (empty if there is none)."""
    try:
        node = yaml.compose(text, Loader=_YamlLoader)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        str(key.value): key.start_mark.line + 1
        for key, _ in node.value
        if isinstance(key, yaml.ScalarNode)
    }


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    from rave.training.artifacts import atomic_write_text

    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    atomic_write_text(Path(path), text)
