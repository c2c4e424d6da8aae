"""ONNX export of the enhancement network, with a dynamic image size.

``torch.onnx.export`` refuses the network as it is: ONNX has no adaptive average pooling
whose bins overlap, so the pyramid pooling fails at any size its bins do not divide. The
exported copy pools with :func:`rave.network.enhancer.adaptive_avg_pool_by_membership`
(two matrix products with 0/1 bin-membership matrices built from the traced image size),
which gives the same values at every size; everything else is the network's own forward,
followed by the model's light-map refinement where its weights file records one
(:mod:`rave.network.refinement`; the built-in ``default`` does; its settings are in the
ONNX metadata's ``light_refinement``).

The exported graph runs the whole image at once, so its memory grows with the photo (in ONNX
Runtime about 0.35 GB + 1.06 GB per megapixel; see README): large photos need rave's tiled
engine (:mod:`rave.inference.tiled`).

Inputs and outputs of the exported model:

- ``image``: ``(B, 3, H, W)`` float32 RGB in [0, 1], any ``H, W >= 2``.
- ``strength`` (``output="enhanced"`` only): ``(1,)`` float32, the exponent ``S`` of
  ``clamp(I / L**S, 0, 1)`` (1 = the method's enhancement, 0 = the input unchanged).
- ``light_map``: ``(B, 1, H, W)`` float32, non-negative; or ``enhanced``:
  ``(B, 3, H, W)`` float32 in [0, 1].
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from rave import __version__
from rave.network.enhancer import EnhancementNet, apply_light_map

if TYPE_CHECKING:
    import onnx

__all__ = ["DEFAULT_OPSET", "OnnxExportError", "export_onnx", "exportable_enhancer"]

DEFAULT_OPSET = 17
# Reflection padding and align-corners Resize need opset 11; the legacy exporter stops at 20.
_OPSETS = range(11, 21)
Output = Literal["light", "enhanced"]


class OnnxExportError(RuntimeError):
    """The model cannot be exported (missing ``onnx`` package, bad option)."""


class _Exportable(nn.Module):
    """The network with exportable pooling; returns the light map or the enhanced image."""

    def __init__(self, net: EnhancementNet, output: Output) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).float().eval()
        self.net.PPM1.pool_by_membership = True
        self.output = output

    def forward(self, image: Tensor, strength: Tensor | None = None) -> Tensor:
        light = self.net.light_map(image)  # with the model's refinement, if any
        if self.output == "light":
            return light
        assert strength is not None
        return apply_light_map(image, light**strength)


def exportable_enhancer(net: EnhancementNet, output: Output = "light") -> nn.Module:
    """A copy of ``net`` that ``torch.onnx.export`` can trace with a dynamic image size.

    Args:
        net: the enhancement network (left unchanged).
        output: ``"light"``: ``forward(image) -> (B, 1, H, W)`` light map;
            ``"enhanced"``: ``forward(image, strength) -> (B, 3, H, W)`` in [0, 1], the
            strength a ``(1,)`` tensor.
    """
    if output not in ("light", "enhanced"):
        raise OnnxExportError(f"output must be 'light' or 'enhanced', got {output!r}")
    return _Exportable(net, output)


@dataclass(frozen=True)
class _Provenance:
    name: str
    sha256: str
    licence: str
    training: str | None = None  # JSON: what rave train recorded in its checkpoint


def _provenance(model: str | Path) -> tuple[EnhancementNet, _Provenance]:
    from rave.zoo import load_enhancer, looks_like_path, resolve_checkpoint
    from rave.zoo.download import sha256_file
    from rave.zoo.registry import MODELS

    net = load_enhancer(model)
    path = resolve_checkpoint(model)
    sha256 = sha256_file(path)
    if looks_like_path(model):
        # A file of the zoo passed by its path (the authors' .pth, a cached copy) is
        # that model: name it and state its licence rather than "not stated".
        known = next((info for info in MODELS.values() if info.sha256 == sha256), None)
        if known is not None:
            name, licence = f"{known.name} ({Path(model).name})", known.licence
        else:
            name, licence = Path(model).name, "as the checkpoint's (not stated in the file)"
    else:
        name, licence = str(model), MODELS[str(model)].licence
    return net, _Provenance(name, sha256, licence, _training_record(path))


def _training_record(path: Path) -> str | None:
    """Method, iteration and guidance of a ``rave train`` checkpoint (``best.pt`` of every
    run has the same name: the sha256 alone does not say which run it was), else ``None``."""
    from rave.network.checkpoint import CheckpointError, load_checkpoint_file

    try:
        checkpoint = load_checkpoint_file(path)
    except CheckpointError:
        return None
    fmt = checkpoint.get("format")
    if not (isinstance(fmt, str) and fmt.startswith("rave-train/")):
        return None
    best, config = checkpoint.get("best_info"), checkpoint.get("config")
    best = best if isinstance(best, dict) else {}
    config = config if isinstance(config, dict) else {}
    record = {
        "format": fmt,
        "method": checkpoint.get("method_name"),
        "iteration": best.get("iteration", checkpoint.get("iteration")),
        "stage": best.get("stage"),
        "guidance_encoder": config.get("guidance_encoder"),
    }
    plain = (str, int, float, bool)
    return json.dumps({k: v for k, v in record.items() if isinstance(v, plain)})


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise OnnxExportError(
            'ONNX export needs the onnx package: pip install "rave-enhance[export]"'
        ) from err


def _trace(module: nn.Module, output: Output, opset: int) -> bytes:
    image = torch.rand(1, 3, 24, 32)
    args: tuple[Tensor, ...] = (image,)
    inputs, dynamic = ["image"], {"image": {0: "batch", 2: "height", 3: "width"}}
    out_name = "light_map" if output == "light" else "enhanced"
    dynamic[out_name] = {0: "batch", 2: "height", 3: "width"}
    if output == "enhanced":
        args += (torch.ones(1),)
        inputs.append("strength")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated and about traced shape
        # comparisons (the input checks); the dynamo exporter would need minutes per size.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            # torch documents file objects here; its type hint lists only paths
            buffer,  # pyright: ignore[reportArgumentType]
            input_names=inputs,
            output_names=[out_name],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _weights_to_float16(model: onnx.ModelProto) -> None:
    """Store float32 weights as float16, cast back to float32 when the graph starts.

    The arithmetic stays float32, so the model runs on every ONNX Runtime execution
    provider (the CPU one has few float16 kernels); the file is half the size. Measured on
    the zoo's nine models (256 px photos, noise, near-black noise): the light map moves by
    at most 3e-4, the enhanced image by at most 1.1e-3 (a third of an 8-bit level).
    Tensors with values beyond float16's range stay float32.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts = []
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(initializer)
        if values.size < 2:  # scalars (PReLU slopes, constants) gain nothing
            continue
        if not np.all(np.abs(values) <= np.finfo(np.float16).max):
            # float16 would turn these into inf (and the light map into NaN): keep float32
            continue
        name = initializer.name
        half_name = f"{name}__float16"
        initializer.CopyFrom(numpy_helper.from_array(values.astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [name], to=TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)


def export_onnx(
    model: str | Path,
    destination: str | Path,
    *,
    output: Output = "light",
    opset: int = DEFAULT_OPSET,
    float16: bool = False,
) -> onnx.ModelProto:
    """Export a model of the zoo or a checkpoint file to an ONNX file.

    Args:
        model: a name from ``rave models`` (``default`` included) or a checkpoint path.
        destination: the ``.onnx`` file to write (atomically: complete or untouched).
        output: ``"light"`` (light map) or ``"enhanced"`` (``clamp(I / L**S, 0, 1)`` with
            a ``strength`` input); see the module docstring for the signatures.
        opset: ONNX opset version (11 to 20).
        float16: store the weights as float16 (arithmetic stays float32).

    Returns:
        The written model, whose ``metadata_props`` hold the model name, the sha256 of its
        checkpoint file, its licence, rave's version and the inputs' meaning (and, for a
        ``rave train`` checkpoint, ``training``: its method, iteration and guidance).

    Raises:
        OnnxExportError: ``onnx`` not installed or an option out of range.
    """
    _require_onnx()
    import onnx

    from rave.io.write import atomic_write

    if opset not in _OPSETS:
        raise OnnxExportError(f"opset must be between {_OPSETS[0]} and {_OPSETS[-1]}, got {opset}")
    net, provenance = _provenance(model)
    proto = onnx.load_from_string(_trace(exportable_enhancer(net, output), output, opset))
    if float16:
        _weights_to_float16(proto)
    inputs = {"image": "(B, 3, H, W) float32 RGB in [0, 1], H, W >= 2"}
    if output == "enhanced":
        inputs["strength"] = "(1,) float32: the exponent S of clamp(I / L**S, 0, 1)"
    metadata = {
        "model": provenance.name,
        "checkpoint_sha256": provenance.sha256,
        "licence": provenance.licence,
        "producer": f"rave-enhance {__version__}",
        "output": output,
        "weights": "float16" if float16 else "float32",
        "inputs": json.dumps(inputs),
    }
    if provenance.training is not None:
        metadata["training"] = provenance.training
    if net.light_refinement is not None:
        metadata["light_refinement"] = net.light_refinement.to_metadata()
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = (
        f"rave enhancement network {provenance.name}: light map L of an RGB image; "
        "enhanced = clamp(I / L**S, 0, 1)"
    )
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    atomic_write(destination, data)
    return proto
