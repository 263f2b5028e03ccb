"""GradCache: K micro-batches give the gradients of one full-batch step, dropout masks replayed."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import MICRO_MODEL, base_config, write_fashion_mnist

from clipworks import Clip, ClipConfig
from clipworks.loss import ClipLoss, SigLipLoss
from clipworks.model.config import get_model_config
from clipworks.train.accumulate import grad_cache_step
from clipworks.train.config import TrainConfig
from clipworks.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

BATCH, K = 16, 4


def tiny_model(siglip: bool = False, patch_dropout: float = 0.0, dtype: torch.dtype = torch.float64,
               name: str = "micro") -> Clip:
    """``tiny-vit``, or the same ViT CLIP with 32-wide towers and a 16-token context (4× less to compute)."""
    config = get_model_config("tiny-vit") if name == "tiny-vit" else ClipConfig.from_dict(MICRO_MODEL)
    config.vision_cfg.patch_dropout = patch_dropout
    if siglip:
        config = dataclasses.replace(config, init_logit_bias=-10.0)  # SigLIP's learnable bias
    torch.manual_seed(0)
    return Clip(config).to(dtype).train()


def batch(dtype: torch.dtype = torch.float64, context: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, 32, 32, generator=g, dtype=dtype)
    tokens = torch.randint(1, 49406, (BATCH, context), generator=g)
    tokens[:, 0], tokens[:, 9], tokens[:, 10:] = 49406, 49407, 0  # start, end, padding: 8 random words
    tokens[3] = tokens[11]  # a repeated caption: the forward embeds it once and gathers it back
    labels = torch.arange(BATCH) % 5
    return images, tokens, labels


def grads(model: Clip) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def assert_close(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], rel: float) -> None:
    assert ref.keys() == got.keys() and len(ref) > 20
    for name, a in ref.items():
        err = (a - got[name]).norm() / a.norm().clamp(min=1e-30)
        assert err <= rel, f"{name}: relative error {err:.2e}"


def loss_fn(kind: str, tile: int | None) -> torch.nn.Module:
    return SigLipLoss(tile_size=tile) if kind == "siglip" else ClipLoss(tile_size=tile)


@pytest.mark.parametrize("kind,tile,multi,name", [("clip", None, False, "tiny-vit"), ("siglip", None, False, "tiny-vit"),
                                                  ("clip", 6, True, "micro"), ("siglip", 6, True, "micro")])
def test_grad_cache_equals_the_full_batch_step(kind, tile, multi, name):
    model = tiny_model(siglip=kind == "siglip", name=name)
    images, tokens, labels = batch(context=model.context_length)
    ids = labels if multi else None  # multi-positive: samples of one label are positives of each other
    loss = loss_fn(kind, tile)  # tile 6 does not divide 16: ragged tiles too

    out = model(images, tokens)
    full = loss(out[0], out[1], out[2], out[3] if len(out) > 3 else None, ids)
    full.backward()
    full = full.detach()
    reference = grads(model)

    micro = list(zip(images.chunk(K), tokens.chunk(K)))
    cached = grad_cache_step(model, micro, lambda x, y, s, b: loss(x, y, s, b, ids))
    got = grads(model)
    assert abs(float(cached) - float(full)) <= 1e-12 * abs(float(full))
    assert_close(reference, got, 1e-9)  # float64: the result is exact, not merely close
    assert "logit_scale" in got and (kind != "siglip" or "logit_bias" in got)
    assert float(got["logit_scale"]) != 0.0


def test_grad_cache_float32_within_1e5():
    model = tiny_model(dtype=torch.float32)
    images, tokens, _ = batch(torch.float32)
    loss = ClipLoss()
    out = model(images, tokens)
    loss(*out).backward()
    reference = grads(model)
    grad_cache_step(model, list(zip(images.chunk(K), tokens.chunk(K))), lambda x, y, s, b: loss(x, y, s, b))
    assert_close(reference, grads(model), 1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_grad_cache_replays_patch_dropout(kind):
    """With random patch dropout, GradCache equals forwarding the same micro-batches with a graph (the same
    masks: one RNG stream from the same start), concatenating, and back-propagating the loss once."""
    model = tiny_model(siglip=kind == "siglip", patch_dropout=0.5)
    images, tokens, _ = batch()
    micro = list(zip(images.chunk(K), tokens.chunk(K)))
    loss = loss_fn(kind, None)

    torch.manual_seed(123)
    outs = [model(i, t) for i, t in micro]
    x, y = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    ref_loss = loss(x, y, outs[0][2], outs[0][3] if kind == "siglip" else None)
    ref_loss.backward()
    ref_loss = ref_loss.detach()
    reference, rng_after = grads(model), torch.get_rng_state()

    torch.manual_seed(123)
    got_loss = grad_cache_step(model, micro, lambda x, y, s, b: loss(x, y, s, b))
    assert_close(reference, grads(model), 1e-9)
    assert abs(float(got_loss) - float(ref_loss)) <= 1e-12 * abs(float(ref_loss))
    assert torch.equal(torch.get_rng_state(), rng_after)  # the stream continues as if each sample ran once

    torch.manual_seed(124)  # other masks, other gradients: the dropout is live in this test
    grad_cache_step(model, micro, lambda x, y, s, b: loss(x, y, s, b))
    other = grads(model)
    assert max(float((other[n] - reference[n]).norm() / reference[n].norm()) for n in reference) > 1e-3


def test_grad_cache_with_a_locked_tower():
    """LiT: the locked tower's features have no graph; only the other tower (and the temperature) get gradients."""
    model = tiny_model()
    model.lock_image_tower()
    images, tokens, _ = batch()
    loss = ClipLoss()
    loss(*model(images, tokens)).backward()
    reference = grads(model)
    grad_cache_step(model, list(zip(images.chunk(K), tokens.chunk(K))), lambda x, y, s, b: loss(x, y, s, b))
    got = grads(model)
    assert not any(n.startswith("visual.") for n in got)
    assert_close(reference, got, 1e-9)


def test_trainer_accum_steps_matches_one_big_batch(tmp_path):
    data = write_fashion_mnist(tmp_path / "fm", n_train=32)
    runs = {}
    for accum in (1, 2, 4):
        cfg = base_config(tmp_path, data, max_steps=3, batch_size=16, accum_steps=accum, out=str(tmp_path / f"a{accum}"))
        result = train(TrainConfig.from_dict(cfg))
        assert result.steps == 3 and result.skipped_steps == 0
        runs[accum] = load_file(result.final_checkpoint / "model" / "model.safetensors")
    start = load_file(tmp_path / "a1" / "checkpoints" / f"step-{0:08d}" / "model" / "model.safetensors")
    for accum in (2, 4):
        for name, value in runs[1].items():
            assert torch.allclose(runs[accum][name], value, rtol=0, atol=2e-5), (accum, name)
    assert sum(not torch.equal(start[n], runs[1][n]) for n in start) == len(start)  # every tensor trained
