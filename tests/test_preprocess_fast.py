"""The input pipeline: JPEG files → tensors exactly as open_clip's ``preprocess``; the approximate path only on request."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipworks.embed import embed_images
from clipworks.image.decode import load_image
from clipworks.image.transforms import image_transform

open_clip = pytest.importorskip("open_clip")

SIZES = [(640, 480), (1024, 768), (480, 640), (1920, 1080), (2400, 1800), (333, 221), (224, 224)]


@pytest.fixture(scope="module")
def jpegs(photos, tmp_path_factory) -> list[Path]:
    """Real photos as camera-like JPEGs: several sizes, both orientations, a greyscale and a CMYK one."""
    d = tmp_path_factory.mktemp("jpegs")
    out = []
    for i, (name, im) in enumerate(sorted(photos.items())):
        size = SIZES[i % len(SIZES)]
        p = d / f"{i}_{name}.jpg"
        im.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(p, quality=90)
        out.append(p)
    photos["astronaut"].convert("L").resize((1200, 900)).save(d / "grey.jpg", quality=85)
    photos["coffee"].convert("CMYK").resize((1000, 700)).save(d / "cmyk.jpg", quality=85)
    photos["chelsea"].convert("RGB").resize((900, 1200)).save(d / "chelsea.png")
    return out + [d / "grey.jpg", d / "cmyk.jpg", d / "chelsea.png"]


def _open_clip_preprocess(name: str):
    return open_clip.create_model_and_transforms(name)[2]


@pytest.mark.parametrize("model", ["ViT-B-32", "ViT-B-16-SigLIP"])
def test_files_give_open_clips_tensors_exactly(jpegs, model):
    from clipworks.factory import model_config

    ours = image_transform(model_config(model).preprocess())
    ref = open_clip.image_transform(ours.image_size, is_train=False, mean=ours.mean, std=ours.std,
                                    interpolation=ours.interpolation, resize_mode=ours.resize_mode)
    assert not ours.fast
    for p in jpegs:
        expected = ref(Image.open(p))
        got = ours(load_image(p))
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, expected), p.name


def test_normalize_table_equals_torchvision_on_every_value():
    from torchvision.transforms import Normalize, ToTensor

    t = image_transform(224)
    values = np.arange(256, dtype=np.uint8)
    image = Image.fromarray(np.stack([values, values[::-1], np.roll(values, 7)], axis=-1).reshape(16, 16, 3))
    expected = Normalize(t.mean, t.std)(ToTensor()(image))
    assert torch.equal(t.normalize(image), expected)
    assert torch.equal(t.normalize(np.asarray(image)), expected)


def test_fast_is_opt_in_and_decodes_big_jpegs_small(jpegs):
    big = next(p for p in jpegs if Image.open(p).size == (2400, 1800))
    exact, fast = image_transform(224), image_transform(224, fast=True)
    assert exact.load(big).size == (2400, 1800)
    assert fast.draft_size == (448, 448)
    assert fast.load(big).size == (600, 450)  # 1/4 keeps both sides >= 448; 1/8 would not
    small = next(p for p in jpegs if Image.open(p).size == (640, 480))
    assert fast.load(small).size == (640, 480)  # under 2x the target: decoded in full
    png = next(p for p in jpegs if p.suffix == ".png")
    assert fast.load(png).size == Image.open(png).size


def test_fast_path_within_its_reported_difference(jpegs):
    """bench/preprocess_speed.py reports max |diff| ~0.09 (normalised units) on camera-size photos; hold it under 0.3
    per pixel and 0.01 on average, and show it is a real approximation on a big JPEG (not silently exact)."""
    ref = _open_clip_preprocess("ViT-B-32")
    fast = image_transform(224, fast=True)
    diffs = []
    for p in jpegs:
        d = (fast(fast.load(p)) - ref(Image.open(p))).abs()
        assert d.max() < 0.3, p.name
        diffs.append(float(d.mean()))
    assert max(diffs) < 0.01
    big = next(p for p in jpegs if Image.open(p).size == (2400, 1800))
    assert not torch.equal(fast(fast.load(big)), ref(Image.open(big)))


def test_fast_keeps_the_transforms_other_settings():
    base = image_transform(256, resize_mode="squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    fast = dataclasses.replace(base, fast=True)
    assert (fast.image_size, fast.resize_mode, fast.mean) == (256, "squash", (0.5, 0.5, 0.5))
    assert fast.draft_size == (512, 512)


def test_embed_in_worker_processes_equals_threads(tiny_encoder, jpegs, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(jpegs[0].read_bytes()[:500])
    paths = jpegs[:4] + [bad]
    args = (tiny_encoder.model, tiny_encoder.preprocess, paths, 3)
    threads = embed_images(*args, workers=2)
    procs = embed_images(*args, workers=2, processes=True)
    assert procs.paths == threads.paths == jpegs[:4]
    assert [f[0] for f in procs.failures] == [bad]
    np.testing.assert_array_equal(procs.features, threads.features)


def test_cpu_batches_are_not_pinned(tiny_encoder, jpegs, monkeypatch):
    def no_pin(self, *a, **k):
        raise AssertionError("pin_memory called for a CPU model")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    out = embed_images(tiny_encoder.model, tiny_encoder.preprocess, jpegs[:2], 2, workers=1)
    assert out.features.shape[0] == 2


def test_cuda_batches_are_pinned_and_copied_without_blocking(tiny_encoder, jpegs, monkeypatch):
    """The CUDA branch, on a CPU machine: the device is reported as CUDA, and the copy is checked to come from
    pinned memory with ``non_blocking``."""
    from clipworks import embed

    seen = {}

    class FakeParam:
        device = torch.device("cuda", 0)
        dtype = torch.float32

    def pin(self):
        seen["pinned"] = True
        return self

    real_to = torch.Tensor.to

    def to(self, *a, **k):
        if k.get("device") == FakeParam.device:
            seen["non_blocking"] = k.get("non_blocking")
            k["device"] = "cpu"
            k["non_blocking"] = False
        return real_to(self, *a, **k)

    model = tiny_encoder.model
    monkeypatch.setattr(embed.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(type(model), "parameters", lambda self: iter([FakeParam()]))
    embed_images(model, tiny_encoder.preprocess, jpegs[:2], 2, workers=1)
    assert seen == {"pinned": True, "non_blocking": True}


def test_embed_command_fast_decode_and_processes(tiny_checkpoint, jpegs, tmp_path):
    from typer.testing import CliRunner

    from clipworks.cli import app

    files = [str(p) for p in jpegs[:3]]
    outs = {}
    for name, flags in {"exact": [], "fast": ["--fast-decode"], "procs": ["--processes"]}.items():
        r = CliRunner().invoke(app, ["embed", *files, "--model", str(tiny_checkpoint), "--out",
                                     str(tmp_path / f"{name}.npy"), "--workers", "1", *flags])
        assert r.exit_code == 0, r.output
        outs[name] = np.load(tmp_path / f"{name}.npy")
    np.testing.assert_array_equal(outs["procs"], outs["exact"])
    assert not np.array_equal(outs["fast"], outs["exact"])  # the big JPEG was draft-decoded
    assert (outs["fast"] * outs["exact"]).sum(1).min() > 0.99
