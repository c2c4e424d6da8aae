"""Export of the enhancement network to portable formats (ONNX)."""

from __future__ import annotations

from rave.export.onnx_model import (
    DEFAULT_OPSET,
    OnnxExportError,
    export_onnx,
    exportable_enhancer,
)

__all__ = ["DEFAULT_OPSET", "OnnxExportError", "export_onnx", "exportable_enhancer"]
