"""Fixtures build what the tests need in code: tiny models, real photos from scikit-image, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry", "horse", "page"]


def photo(name: str) -> Image.Image:
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.dtype != np.uint8:
        a = (a * 255).astype(np.uint8)
    return Image.fromarray(a)


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return {n: photo(n) for n in PHOTOS}


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    """Three good images, a truncated JPEG, a zero-byte file, a text file named .png, and a subdirectory."""
    d = tmp_path / "images"
    d.mkdir()
    for i, name in enumerate(["astronaut", "coffee", "chelsea"]):
        photo(name).resize((96, 64)).save(d / f"{i}_{name}.jpg")
    full = (d / "0_astronaut.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("not an image")
    (d / "sub").mkdir()
    photo("rocket").resize((64, 64)).save(d / "sub" / "rocket.png")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny models: on a shared 2-core machine two threads spin-wait on each
    other and run them 10-30× slower; the resume test also needs the same kernels in the test process and its
    subprocess."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _saved_tiny(root: Path, name: str, **overrides) -> Path:
    import dataclasses

    import clipworks

    from clipworks.factory import model_config

    config = model_config("tiny-vit")
    torch.manual_seed(0)
    model = clipworks.Clip(dataclasses.replace(config, **overrides)).eval()
    clipworks.save_pretrained(model, root / name)
    return root / name


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny-vit (64-d, 32 px) with fixed random weights: a real checkpoint directory that applications
    (index, classifier files, scores) can record and reload."""
    return _saved_tiny(tmp_path_factory.mktemp("tiny"), "tiny-vit")


@pytest.fixture(scope="session")
def tiny_sigmoid_checkpoint(tmp_path_factory) -> Path:
    """The same tiny model made SigLIP-style (a ``logit_bias``): probabilities are per-label sigmoids."""
    return _saved_tiny(tmp_path_factory.mktemp("tiny-sig"), "tiny-vit-sigmoid", init_logit_bias=-10.0)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint: Path):
    from clipworks.encoder import Encoder

    return Encoder.load(str(tiny_checkpoint))
