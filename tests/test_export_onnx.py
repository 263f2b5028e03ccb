"""ONNX export: graphs within 1e-4 of torch for every tower family, dynamic batch and caption length, the manifest,
int8 graphs and their cosine report, refusals (non-empty folder, an operator the exporter cannot translate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipworks.encoder import Encoder
from clipworks.export import ExportError, export_onnx, export_onnx_report
from clipworks.runtime.package import MANIFEST, Package, PackageError

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    return out, export_onnx_report(str(tiny_checkpoint), out, int8=True)


def test_tiny_checkpoint_exports_with_its_manifest(exported, tiny_checkpoint: Path) -> None:
    out, result = exported
    package = Package.read(out, verify=True)
    encoder = Encoder.load(str(tiny_checkpoint))
    assert package == result.package
    assert package.model == encoder.ref.to_dict()
    assert package.embed_dim == 64 and package.context_length == 77 and package.opset == 18
    assert package.preprocess["image_size"] == 32 and package.preprocess["interpolation"] == "bicubic"
    assert package.tokenizer["type"] == "clip" and package.text_trim is True
    assert package.logit_scale == pytest.approx(float(encoder.model.logit_scale.detach().exp()))
    assert package.logit_bias is None
    assert set(package.graphs) == {"image", "text", "image.int8", "text.int8"}
    assert max(result.max_diff.values()) <= 1e-4
