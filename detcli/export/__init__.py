"""Exporting detectors to ONNX with decoding and NMS inside the graph, and checking the result.

``export_checkpoint(cfg, checkpoint, out)`` is what ``det export onnx`` runs; the pieces are
:class:`ExportWrapper` (the traced computation of a single-stage detector),
:class:`TwoStageExportWrapper` (of a two-stage one: RPN, its NMS, RoIAlign, box head, NMS;
:func:`export_wrapper` picks one), :func:`export_onnx` (the exporter call),
:class:`OnnxModel` (onnxruntime) and :func:`verify_onnx` (the comparison with PyTorch).
onnx, onnxruntime and onnxscript are the optional extra ``detcli[export]``; nothing imports
them before it needs them. The names below load their module on first use, so running an
exported model (:mod:`detcli.export.runtime`) does not import the exporter's pieces.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_OPSET": "onnx", "MAX_OPSET": "onnx", "MIN_OPSET": "onnx", "ExportOptions": "onnx",
    "ExportResult": "onnx", "export_onnx": "onnx", "export_wrapper": "onnx",
    "ExportWrapper": "graph", "TwoStageExportWrapper": "two_stage_graph",
    "InputContract": "contract", "ExportRun": "run", "export_checkpoint": "run",
    "OnnxModel": "runtime", "Tolerance": "verify", "VerifyReport": "verify",
    "verify_onnx": "verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"detcli.export.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'detcli.export' has no attribute {name!r}")
