"""Tiny training fixtures shared by the trainer tests: a micro model config and data files written in code.

Everything here is small enough that a training step takes milliseconds on a 2-core CPU: a ViT/text
model with 32-wide towers and a 16-token context, Fashion-MNIST-format IDX files of a few dozen images,
a CSV of generated PNGs.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipworks.data import FASHION_MNIST_CLASSES

# vocab_size stays CLIP's: the tokenizer emits ids up to 49407. Everything else is as small as it gets.
MICRO_MODEL = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def write_model_config(path: Path, **changes: object) -> Path:
    config = json.loads(json.dumps(MICRO_MODEL))
    for key, value in changes.items():  # "vision_cfg.width" style keys
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(json.dumps(config))
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    """The real IDX layout: 0, 0, 0x08 (ubyte), ndim, big-endian sizes, then the bytes."""
    raw = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def class_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """28×28 uint8 images whose class is visible: a bright horizontal band whose row depends on the label."""
    rs = np.random.RandomState(seed)
    images = rs.randint(0, 60, (len(labels), 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * int(label): 5 + 2 * int(label), :] = 255
    return images


def write_fashion_mnist(folder: Path, n_train: int = 64, n_test: int = 20) -> Path:
    """Train/test IDX files in Fashion-MNIST's names; every class appears in both splits."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        labels = np.arange(n) % len(FASHION_MNIST_CLASSES)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", class_images(labels, seed))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def write_csv(folder: Path, n: int = 40, corrupt: int = 0) -> Path:
    """``folder/data.csv`` of n generated PNGs with captions; the first ``corrupt`` images are truncated."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    rows = ["filepath,title"]
    rs = np.random.RandomState(0)
    for i in range(n):
        path = folder / "imgs" / f"{i:03d}.png"
        color = rs.randint(0, 256, 3)
        pixels = np.broadcast_to(color, (20, 20, 3)).astype(np.uint8) ^ rs.randint(0, 16, (20, 20, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        if i < corrupt:
            path.write_bytes(path.read_bytes()[:30])
        rows.append(f"imgs/{i:03d}.png,a picture number {i % 7} of colour {int(color[0]) // 64}")
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    return folder / "data.csv"


def base_config(tmp: Path, data: str | Path, **overrides: object) -> dict:
    """A TrainConfig mapping for a few-step CPU run of the micro model."""
    model = tmp / "micro.json"
    if not model.is_file():
        write_model_config(model)
    cfg = dict(model=str(model), data=str(data), batch_size=8, max_steps=4, lr=1e-3, warmup=2, save_every=1000,
               log_every=1, progress=False, tensorboard=False, device="cpu", seed=0, out=str(tmp / "run"))
    cfg.update(overrides)
    return cfg


def changed(model: torch.nn.Module, before: dict[str, torch.Tensor], prefix: str) -> set[str]:
    """Names under ``prefix`` of the parameters a step moved away from ``before``."""
    return {n for n, p in model.named_parameters() if n.startswith(prefix) and not torch.equal(p, before[n])}


def names(model: torch.nn.Module, prefix: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefix)}
