"""Inference from an exported folder without torch: ONNX graphs run by onnxruntime, numpy preprocessing, the
model's own tokenizer. Nothing in this package imports torch (onnxruntime is imported when a folder is loaded).

``OnnxEncoder.load(folder)`` (or ``clipworks.load_encoder(folder, backend="onnx")``) gives an encoder the
applications — zero-shot classification, the search index, the CLI, the service — use as they use ``Encoder``.
"""

from .encoder import OnnxEncoder
from .package import MANIFEST, Graph, Package, PackageError
from .preprocess import Preprocess

__all__ = ["MANIFEST", "Graph", "OnnxEncoder", "Package", "PackageError", "Preprocess"]
