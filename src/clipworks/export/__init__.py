"""Exporting a model to run elsewhere: ``export_onnx`` writes the two-graph folder ``runtime.package`` describes
(image and text towers, resolved preprocessing and tokenizer), checked against torch, optionally with int8 graphs.

Needs the ``export`` extra (onnx, onnxscript, onnxruntime; importing this package does not import them) and torch,
which traces the model (the ``torch`` extra where the core is installed without it).
"""

from __future__ import annotations

from ..errors import require

require("torch", "torch", "exporting to ONNX (the exporter traces the PyTorch model)")

from .onnx import ExportError, ExportResult, export_onnx, export_onnx_report
from .quantize import Int8Report, int8_parity

__all__ = ["ExportError", "ExportResult", "Int8Report", "export_onnx", "export_onnx_report", "int8_parity"]
