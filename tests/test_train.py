"""The trainer end to end on tiny runs: schedule, per-tower rates, weight decay, locking, losses, precision,
logging, fine-tuning, corrupt data, and the demo."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import MICRO_MODEL, base_config, write_csv, write_fashion_mnist
from typer.testing import CliRunner

from clipworks import Clip, ClipConfig, load_checkpoint
from clipworks.checkpoints import openai
from clipworks.cli import app
from clipworks.data.fashion_mnist import ENV_VAR
from clipworks.train.config import TrainConfig
from clipworks.train.loop import train
from clipworks.train.optim import lr_factor, param_groups

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()


@pytest.fixture()
def fm(tmp_path: Path) -> Path:
    return write_fashion_mnist(tmp_path / "fm", n_train=48, n_test=20)


def run(tmp_path: Path, data: Path, **overrides):
    cfg = base_config(tmp_path, data, **overrides)
    return train(TrainConfig.from_dict(cfg)), Path(cfg["out"])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model" / "model.safetensors")


def step0(out: Path) -> dict[str, torch.Tensor]:
    return weights(out / "checkpoints" / f"step-{0:08d}")


def records(out: Path, split: str = "train") -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def test_schedule_metrics_tensorboard_eval_and_plot(tmp_path, fm):
    result, out = run(tmp_path, fm, max_steps=10, warmup=3, lr=1e-3, tensorboard=True, val_data=str(fm),
                      eval_every=5, val_samples=10)
    logged = records(out)
    assert [r["step"] for r in logged] == list(range(1, 11))
    lrs = [r["lr"] for r in logged]
    assert lrs == pytest.approx([1e-3 * lr_factor(s, 10, 3, "cosine") for s in range(10)])
    assert lrs[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])  # linear warmup …
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.06e-3  # … then cosine towards 0
    for r in logged:
        assert {"loss", "lr", "logit_scale", "samples_per_s", "data_wait_pct", "grad_norm"} <= r.keys()
        assert math.isfinite(r["loss"]) and r["samples_per_s"] > 0 and 0 <= r["data_wait_pct"] <= 100
        assert r["logit_scale"] == pytest.approx(1 / 0.07, rel=0.05)
    evals = records(out, "eval")
    assert [r["step"] for r in evals] == [5, 10] and all(0 <= r["zeroshot_top1"] <= 1 for r in evals)
    assert result.zeroshot is not None and result.zeroshot.n == 20  # the final evaluation covers the whole split
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["zeroshot_n"] == 20 and summary["final_checkpoint"].endswith("step-00000010")
    assert json.loads((out / "train_config.json").read_text())["warmup"] == 3
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))

    r = runner.invoke(app, ["plot", str(out)])
    assert r.exit_code == 0, r.stderr
    assert (out / "curves.png").stat().st_size > 1000 and "curves.png" in r.stdout


def test_per_tower_learning_rates(tmp_path, fm):
    result, out = run(tmp_path, fm, max_steps=2, lr=1e-3, lr_image=1e-4, lr_text=3e-4, schedule="constant", warmup=0)
    groups = torch.load(result.final_checkpoint / "trainer.pt", weights_only=True)["optimizer"]["param_groups"]
    lr_of = {g["tower"]: g["lr"] for g in groups}
    assert lr_of == pytest.approx({"image": 1e-4, "text": 3e-4, "shared": 1e-3})
    assert {g["tower"] for g in groups if g["weight_decay"] > 0} == {"image", "text"}


def test_weight_decay_spares_gains_biases_embeddings_and_temperature():
    model = Clip(ClipConfig.from_dict({**MICRO_MODEL, "init_logit_bias": -10.0}))
    cfg = TrainConfig(weight_decay=0.2)
    groups = param_groups(model, cfg)
    decay = {n for g in groups if g["weight_decay"] == 0.2 for n in g["names"]}
    no_decay = {n for g in groups if g["weight_decay"] == 0.0 for n in g["names"]}
    assert decay | no_decay == {n for n, _ in model.named_parameters()} and not decay & no_decay
    for name in no_decay:
        assert name.endswith(("bias", "logit_scale", "_embedding", "token_embedding.weight")) or \
            name.split(".")[-2].startswith("ln_"), name
    assert {"logit_scale", "logit_bias", "visual.class_embedding", "visual.positional_embedding",
            "text.positional_embedding", "text.token_embedding.weight", "visual.ln_pre.weight",
            "text.ln_final.bias"} <= no_decay
    assert {"visual.conv1.weight", "visual.proj", "text.text_projection",
            "visual.transformer.resblocks.0.attn.in_proj_weight"} <= decay
    # a Hugging Face text tower names its embedding tables itself (Tower.no_weight_decay)
    from clipworks.model.config import TextConfig, get_model_config
    from clipworks.model.towers.hf_text import minilm_dir

    hf_model = Clip(dataclasses.replace(get_model_config("tiny-vit"), text_cfg=TextConfig(hf_model_name=str(minilm_dir()))))
    groups = param_groups(hf_model, cfg)
    decay = {n for g in groups if g["weight_decay"] == 0.2 for n in g["names"]}
    assert {"text.transformer.embeddings.word_embeddings.weight",
            "text.transformer.embeddings.position_embeddings.weight"} <= {n for g in groups for n in g["names"]} - decay
    assert "text.transformer.encoder.layer.0.attention.self.query.weight" in decay


@pytest.mark.parametrize("accum", [1, 2])
def test_locked_image_tower_stays_bit_identical(tmp_path, fm, accum):
    result, out = run(tmp_path, fm, max_steps=3, lock_image=True, accum_steps=accum)
    start, end = step0(out), weights(result.final_checkpoint)
    image = [k for k in start if k.startswith("visual.")]
    assert image and all(torch.equal(start[k], end[k]) for k in image)
    assert all(not torch.equal(start[k], end[k]) for k in ("text.text_projection", "logit_scale"))
    groups = torch.load(result.final_checkpoint / "trainer.pt", weights_only=True)["optimizer"]["param_groups"]
    assert "image" not in {g["tower"] for g in groups}


def test_lit_unlocked_last_block(tmp_path, fm):
    result, out = run(tmp_path, fm, max_steps=2, lock_image=True, lock_image_unlocked_groups=1)
    start, end = step0(out), weights(result.final_checkpoint)
    changed = {k for k in start if k.startswith("visual.") and not torch.equal(start[k], end[k])}
    assert "visual.proj" in changed and "visual.transformer.resblocks.1.mlp.c_fc.weight" in changed
    assert not any(k.startswith(("visual.transformer.resblocks.0.", "visual.conv1")) for k in changed)


def test_siglip_multi_positive_bf16_and_grad_checkpointing_run(tmp_path, fm):
    result, out = run(tmp_path, fm, max_steps=3, loss="siglip", multi_positive="label", out=str(tmp_path / "siglip"))
    start, end = step0(out), weights(result.final_checkpoint)
    assert float(start["logit_bias"]) == -10.0 and float(end["logit_bias"]) != -10.0  # the bias trains
    assert float(start["logit_scale"]) == pytest.approx(math.log(10.0))  # SigLIP's t = log 10
    logged = records(out)
    assert all(math.isfinite(r["loss"]) and "logit_bias" in r for r in logged)

    result, out = run(tmp_path, fm, max_steps=3, precision="bf16", multi_positive="caption", out=str(tmp_path / "bf16"))
    assert result.skipped_steps == 0 and all(math.isfinite(r["loss"]) for r in records(out))

    plain, _ = run(tmp_path, fm, max_steps=2, out=str(tmp_path / "plain"))
    ckpt, _ = run(tmp_path, fm, max_steps=2, grad_checkpointing=True, out=str(tmp_path / "ckpt"))
    a, b = weights(plain.final_checkpoint), weights(ckpt.final_checkpoint)
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)  # recomputation changes nothing


def test_fine_tune_from_native_dir_and_open_clip_state_dict(tmp_path, fm):
    base, _ = run(tmp_path, fm, max_steps=2, out=str(tmp_path / "base"))
    native = base.final_checkpoint / "model"
    tuned, out = run(tmp_path, fm, max_steps=2, init=str(native), out=str(tmp_path / "ft"), model=None)  # config from init
    start = step0(out)
    assert all(torch.equal(start[k], v) for k, v in weights(base.final_checkpoint).items())
    assert tuned.steps == 2 and not torch.equal(start["visual.proj"], weights(tuned.final_checkpoint)["visual.proj"])

    sd = openai.from_native(load_checkpoint(native).state_dict())  # open_clip's layout, as its trainer saves it
    torch.save({"epoch": 3, "name": "micro", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "oc.pt")
    tuned, out = run(tmp_path, fm, max_steps=1, init=str(tmp_path / "oc.pt"), out=str(tmp_path / "ft2"))
    start = step0(out)
    assert all(torch.equal(start[k], v) for k, v in weights(base.final_checkpoint).items())


def test_corrupt_images_are_skipped_and_reported(tmp_path):
    data = write_csv(tmp_path / "table", n=40, corrupt=2)  # 5%
    result, out = run(tmp_path, data, max_steps=5, train_augment=True, workers=0)  # one epoch: every image read
    assert result.steps == 5 and result.skipped_images == 2 and result.skipped_steps == 0
    assert json.loads((out / "summary.json").read_text())["skipped_images"] == 2
    assert records(out)[-1]["skipped_images"] == 2


def test_cli_train_run_file_and_flags(tmp_path, fm):
    cfg = base_config(tmp_path, fm, max_steps=50)
    (tmp_path / "run.toml").write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in cfg.items()))
    r = runner.invoke(app, ["train", str(tmp_path / "run.toml"), "--max-steps", "2", "--lr", "2e-3", "--set", "warmup=0",
                            "--set", "schedule=constant"])
    assert r.exit_code == 0, r.stderr
    assert "trained 2 steps" in r.stdout
    saved = json.loads((Path(cfg["out"]) / "train_config.json").read_text())
    assert (saved["max_steps"], saved["lr"], saved["warmup"], saved["schedule"]) == (2, 2e-3, 0, "constant")


def test_demo_smoke(tmp_path, monkeypatch):
    from clipworks.demo import run_demo

    monkeypatch.setenv(ENV_VAR, str(write_fashion_mnist(tmp_path / "fm", n_train=64, n_test=20)))
    model = tmp_path / "micro.json"
    model.write_text(json.dumps(MICRO_MODEL))
    result = run_demo(tmp_path / "demo", epochs=1, model=str(model), batch_size=16, max_steps=3, warmup=1, log_every=1,
                      save_every=1000, eval_every=0, tensorboard=False, progress=False)
    out = tmp_path / "demo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["zeroshot_top1"] <= 1 and metrics["test_images"] == 20 and metrics["steps"] == 3
    assert len(metrics["per_class_accuracy"]) == 10
    for name in ("confusion.png", "curves.png", "retrieval.png", "metrics.json"):
        assert (out / name).is_file() and (out / name) in result.files
    assert (out / "confusion.png").stat().st_size > 1000


def test_demo_refuses_a_used_out_dir_unless_overwrite(tmp_path, monkeypatch):
    from clipworks.demo import run_demo

    monkeypatch.setenv(ENV_VAR, str(write_fashion_mnist(tmp_path / "fm", n_train=64, n_test=20)))
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    with pytest.raises(ValueError, match="already holds files"):
        run_demo(out, epochs=1)
    assert (out / "keep.txt").read_text() == "earlier work"
    model = tmp_path / "micro.json"
    model.write_text(json.dumps(MICRO_MODEL))
    run_demo(out, epochs=1, overwrite=True, model=str(model), batch_size=16, max_steps=2, warmup=1, log_every=1,
             save_every=1000, eval_every=0, tensorboard=False, progress=False)
    assert not (out / "keep.txt").exists() and (out / "metrics.json").is_file()
