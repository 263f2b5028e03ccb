"""int8 graphs: onnxruntime's dynamic quantization of the exported fp32 graphs, and how far they move embeddings.

Weights are quantized to int8 once (per output channel), activations per batch at run time, so no calibration
data is needed. Only ``MatMul`` and ``Gemm`` with a constant weight are quantized: they are the linear layers
(QKV, attention output, MLP, projections) that carry nearly all of a transformer tower's FLOPs, and onnxruntime
runs them as ``DynamicQuantizeMatMul``/``MatMulInteger`` on its int8 GEMM kernels. Left in fp32: attention's
activation×activation products (``MatMulConstBOnly``: quantizing both sides of softmax(QK^T)V costs accuracy for
little time), ``Conv`` (onnxruntime's ``ConvInteger`` has no fast CPU kernel, so a quantized patch embedding or
ResNet runs slower than fp32), and ``Gather`` (the token embedding is a lookup; int8 would only shrink the file).

``int8_parity`` measures the damage: the cosine of each int8 embedding to its fp32 one, mean and minimum, on the
images and captions given (by default synthetic ones, which exercise every weight but say nothing about a
dataset's accuracy; ``bench/onnx_parity.py`` measures the zero-shot change on a trained model).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..errors import require
from ..runtime.package import Graph, Package, sha256_file

OP_TYPES = ["MatMul", "Gemm"]
SAMPLE_TEXTS = [
    "a photo of a dog", "a photo of a cat", "a close-up photo of a red apple on a table", "a diagram",
    "a blurry photo of a car", "an astronaut on the moon", "a painting of a ship in a storm", "two people hiking",
    "a plate of food", "a black and white photo of a city street at night", "a bird", "a screenshot of a website",
    "a sketch of a house", "a photo of a T-shirt", "a pair of sneakers", "a handbag",
]


@dataclass
class Int8Report:
    """Cosine of int8 to fp32 embeddings per graph (``None`` where that int8 graph is absent)."""

    image_mean: float | None
    image_min: float | None
    text_mean: float | None
    text_min: float | None
    images: int
    texts: int
    defaults: tuple[bool, bool] = (False, False)  # (images, texts) were the built-in synthetic/sample ones

    def lines(self) -> list[str]:
        out = []
        for kind, mean, low, n, default in (("image", self.image_mean, self.image_min, self.images, self.defaults[0]),
                                            ("text", self.text_mean, self.text_min, self.texts, self.defaults[1])):
            if mean is not None:
                what = ("synthetic images" if kind == "image" else "sample captions") if default else f"{kind}s"
                out.append(f"{kind}.int8.onnx: cosine to fp32 mean {mean:.5f}, min {low:.5f} ({n} {what})")
        return out


def quantize_graphs(directory: Path, package: Package) -> None:
    """Write ``image.int8.onnx`` and ``text.int8.onnx`` next to the fp32 graphs and register them in ``package``."""
    require("onnxruntime.quantization", "export", "int8 quantization")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.getLogger()  # the quantizer logs a pre-processing suggestion on the root logger for every call
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        for kind in ("image", "text"):
            _quantize(directory, package, kind, quantize_dynamic, QuantType)
    finally:
        quiet.setLevel(level)


def _quantize(directory: Path, package: Package, kind: str, quantize_dynamic: Any, QuantType: Any) -> None:
    fp32 = package.graph(kind)
    out = directory / f"{kind}.int8.onnx"
    quantize_dynamic(directory / fp32.file, out, op_types_to_quantize=OP_TYPES, per_channel=True,
                     weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True},
                     use_external_data_format=fp32.data is not None)
    data = out.with_name(out.name + ".data")
    package.graphs[f"{kind}.int8"] = Graph(kind=kind, precision="int8", file=out.name, sha256=sha256_file(out),
                                           input=fp32.input, data=data.name if data.is_file() else None)


def synthetic_images(n: int = 16, size: int = 256, seed: int = 0) -> list[Image.Image]:
    """Deterministic picture-like images (gradients, shapes, noise): inputs with a photo's range of values."""
    rng = np.random.default_rng(seed)
    images = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(n):
        base = np.stack([a * xx + b * yy + c for a, b, c in rng.uniform(-0.5, 1, (3, 3))], -1)
        base = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        im = Image.fromarray((base * 255).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = rng.integers(0, size - 32, 2)
            x1, y1 = x0 + rng.integers(16, size // 2), y0 + rng.integers(16, size // 2)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x1), int(y1)], fill=colour)
        images.append(im)
    return images


def int8_parity(directory: str | Path, images: Sequence[Image.Image] | None = None,
                texts: Sequence[str] | None = None, encoder: Any = None, batch_size: int = 16) -> Int8Report:
    """Cosine of the int8 graphs' embeddings to the fp32 graphs' on ``images`` and ``texts`` (defaults:
    ``synthetic_images()`` and ``SAMPLE_TEXTS``). Preprocessing and tokenizing are the exported model's: the
    ``encoder``'s when given, else rebuilt from the manifest."""
    from .onnx import session_for

    directory = Path(directory)
    package = Package.read(directory)
    transform, tokenizer = _inputs_for(directory, package, encoder)
    defaults = (images is None, texts is None)
    images = list(images) if images is not None else synthetic_images()
    texts = list(texts) if texts is not None else SAMPLE_TEXTS
    stats: dict[str, tuple[float, float] | None] = {}
    for kind, items in (("image", images), ("text", texts)):
        if f"{kind}.int8" not in package.graphs or not items:
            stats[kind] = None
            continue
        sessions = [session_for(directory / package.graph(kind, p).file) for p in ("fp32", "int8")]
        cos = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            if kind == "image":
                import torch

                x = torch.stack([transform(im.convert("RGB")) for im in chunk]).numpy()
            else:
                x = tokenizer(list(chunk)).numpy().astype(np.int64)
            name = package.graph(kind).input
            a, b = (s.run(None, {name: x})[0] for s in sessions)
            cos.append(np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12))
        c = np.concatenate(cos)
        stats[kind] = (float(c.mean()), float(c.min()))
    img, txt = stats["image"], stats["text"]
    return Int8Report(img and img[0], img and img[1], txt and txt[0], txt and txt[1], len(images), len(texts),
                      defaults)


def _inputs_for(directory: Path, package: Package, encoder: Any) -> tuple[Any, Any]:
    if encoder is not None:
        return encoder.preprocess, encoder.tokenizer
    from ..image.transforms import ImageTransform
    from ..model.config import TokenizerConfig
    from ..text import build_tokenizer

    p = package.preprocess
    transform = ImageTransform(image_size=p["image_size"], mean=tuple(p["mean"]), std=tuple(p["std"]),
                               interpolation=p["interpolation"], resize_mode=p["resize_mode"],
                               fill_color=p["fill_color"], resize_size=p["resize_size"])
    cfg = TokenizerConfig(**package.tokenizer)
    if cfg.type == "hf":
        cfg.name = str(directory / cfg.name)
    return transform, build_tokenizer(cfg, package.context_length)
