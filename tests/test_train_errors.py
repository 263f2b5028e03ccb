"""The trainer's guard rails: non-finite steps skipped and rolled back; bad input refused before the first step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import base_config, write_csv, write_fashion_mnist, write_model_config
from typer.testing import CliRunner

from clipworks.checkpoints import CheckpointError
from clipworks.cli import app
from clipworks.data import DataError, ShardWriter
from clipworks.loss import ClipLoss
from clipworks.model import ConfigError
from clipworks.train import loop
from clipworks.train.config import TrainConfig
from clipworks.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()


@pytest.fixture()
def fm(tmp_path: Path) -> Path:
    return write_fashion_mnist(tmp_path / "fm", n_train=48, n_test=10)


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:08d}" / "model" / "model.safetensors")


def trainer_state(run: Path, step: int) -> dict:
    return torch.load(run / "checkpoints" / f"step-{step:08d}" / "trainer.pt", weights_only=True)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- stability guard


class _NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad * float("nan")


def poison(monkeypatch: pytest.MonkeyPatch, bad: dict[int, str]) -> None:
    """The trainer's ClipLoss, made non-finite at the given (1-based) calls: 'loss' → NaN loss, 'grad' → NaN grads.
    With accum_steps=1 the loss runs once per step, so call n is step n."""
    calls = [0]

    class Poisoned(ClipLoss):
        def forward(self, *args, **kwargs):
            loss = super().forward(*args, **kwargs)
            calls[0] += 1
            kind = bad.get(calls[0])
            if kind == "loss":
                return loss * float("nan")
            if kind == "grad":
                return _NaNGradient.apply(loss)
            return loss

    monkeypatch.setattr(loop, "ClipLoss", Poisoned)


def test_non_finite_steps_are_skipped_and_counted(tmp_path, fm, monkeypatch):
    poison(monkeypatch, {3: "loss", 5: "grad"})
    cfg = base_config(tmp_path, fm, max_steps=6, save_every=1, keep_last=10)
    result = train(TrainConfig.from_dict(cfg))
    run = Path(cfg["out"])
    assert (result.steps, result.skipped_steps, result.rollbacks) == (6, 2, 0)
    for bad in (3, 5):  # a skipped step leaves weights and optimizer state exactly as they were
        assert same(weights(run, bad - 1), weights(run, bad))
        before, after = trainer_state(run, bad - 1)["optimizer"]["state"], trainer_state(run, bad)["optimizer"]["state"]
        assert all(torch.equal(before[i][k], after[i][k]) for i in before for k in before[i])
    for good in (2, 4, 6):
        assert not same(weights(run, good - 1), weights(run, good))
    records = {r["step"]: r for r in metrics(run)}
    assert records[3]["loss"] is None and records[5]["loss"] is not None  # NaN logged as null, never as 0
    assert records[6]["skipped_steps"] == 2
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 2


def test_too_many_bad_steps_roll_back_with_a_lower_lr(tmp_path, fm, monkeypatch):
    poison(monkeypatch, {3: "loss", 4: "grad"})
    cfg = base_config(tmp_path, fm, max_steps=6, save_every=4, keep_last=5, max_bad_steps=2, schedule="constant",
                      warmup=0, lr=1e-3, rollback_lr_factor=0.25)
    result = train(TrainConfig.from_dict(cfg))
    run = Path(cfg["out"])
    assert (result.steps, result.skipped_steps, result.rollbacks) == (6, 2, 1)
    assert any("rolled back to step-00000000" in w for w in result.warnings), result.warnings
    # steps 1-2 trained, then the rollback at step 4 restored the step-0 weights (saved as step 4)
    assert same(weights(run, 0), weights(run, 4))
    lrs = {r["step"]: r["lr"] for r in metrics(run)}
    assert [lrs[s] for s in (1, 2, 3)] == pytest.approx([1e-3] * 3)
    assert [lrs[s] for s in (5, 6)] == pytest.approx([2.5e-4] * 2)
    state = trainer_state(run, 6)
    assert state["guard"] == {"in_a_row": 0, "skipped": 2, "rollbacks": 1, "lr_scale": 0.25}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rollbacks"] == 1 and summary["warnings"] == result.warnings


# ---------------------------------------------------------------- bad input, before the first step


def assert_nothing_trained(out: Path) -> None:
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


def test_unknown_config_keys_are_named(tmp_path, fm):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'bogus' in train config; known keys: .*batch_size"):
        TrainConfig.from_dict({"bogus": 1, "lr": 1e-3})
    with pytest.raises(ConfigError, match="divisible by accum_steps"):
        TrainConfig(batch_size=10, accum_steps=4)
    with pytest.raises(ConfigError, match="parallel must be 'ddp' or 'fsdp', got 'zero3'"):
        TrainConfig(parallel="zero3")

    r = runner.invoke(app, ["train", "--data", str(fm), "--out", str(tmp_path / "run"), "--set", "bogus=1"])
    assert r.exit_code == 1 and "unknown key(s) 'bogus'" in r.stderr and "known keys:" in r.stderr
    assert "save_every" in r.stderr

    run_file = tmp_path / "run.json"
    run_file.write_text(json.dumps({"data": str(fm), "lr_imgae": 1e-4}))
    r = runner.invoke(app, ["train", str(run_file)])
    assert r.exit_code == 1 and f"'lr_imgae' in {run_file}" in r.stderr and "lr_image" in r.stderr
    assert_nothing_trained(tmp_path / "run")


def test_bad_data_fails_before_training(tmp_path):
    out = tmp_path / "run"
    nowhere = tmp_path / "nowhere.csv"
    with pytest.raises(DataError, match=f"{nowhere}: no such file"):
        train(TrainConfig.from_dict(base_config(tmp_path, nowhere)))

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=f"{empty} is empty"):
        train(TrainConfig.from_dict(base_config(tmp_path, empty)))

    csv = write_csv(tmp_path / "table", n=4)
    with pytest.raises(DataError, match=r"has no column 'caption' \(columns: 'filepath', 'title'\)"):
        train(TrainConfig.from_dict(base_config(tmp_path, csv, csv_caption_key="caption")))

    with ShardWriter(tmp_path / "shards") as writer:
        for i in range(3):
            writer.write(f"s{i}", {"png": (tmp_path / "table" / "imgs" / f"{i:03d}.png").read_bytes()})
    with pytest.raises(DataError, match=r"shards: 3 images but no captions"):
        train(TrainConfig.from_dict(base_config(tmp_path, tmp_path / "shards")))
    assert_nothing_trained(out)

    r = runner.invoke(app, ["train", "--model", "tiny-vit", "--data", str(nowhere), "--out", str(out), "--set", "progress=false"])
    assert r.exit_code == 1 and "nowhere.csv: no such file" in r.stderr
    # no model named: refused, not a silent test-sized default
    r = runner.invoke(app, ["train", "--data", str(csv), "--out", str(out), "--set", "progress=false"])
    assert r.exit_code == 1 and "no model to train" in r.stderr
    assert_nothing_trained(out)


def test_unwritable_or_full_run_dir_fails_at_start(tmp_path, fm, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="a-file/run is not writable"):
        train(TrainConfig.from_dict(base_config(tmp_path, fm, out=str(blocker / "run"))))
    if os.geteuid() != 0:  # root writes into read-only directories anyway
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="not writable"):
            train(TrainConfig.from_dict(base_config(tmp_path, fm, out=str(locked / "run"))))

    class Usage:
        free = 10 * 2**20

    monkeypatch.setattr(loop.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(ValueError, match="only 10 MiB free under"):
        train(TrainConfig.from_dict(base_config(tmp_path, fm)))
    assert_nothing_trained(tmp_path / "run")


def test_resume_refuses_another_model_config(tmp_path, fm):
    first = base_config(tmp_path, fm, max_steps=2)
    train(TrainConfig.from_dict(first))
    run = Path(first["out"])
    before = weights(run, 2)
    wide = write_model_config(tmp_path / "wide.json", **{"vision_cfg.width": 64, "text_cfg.width": 64})
    for resume in ("latest", str(run / "checkpoints" / "step-00000002")):
        with pytest.raises(CheckpointError, match=r"model config differs from this run's in text_cfg\.width, vision_cfg\.width"):
            train(TrainConfig.from_dict({**first, "model": str(wide), "resume": resume, "max_steps": 4}))
    with pytest.raises(ConfigError, match=r"global batch/seed \(\d+, \d+\) differ from this run.s"):
        train(TrainConfig.from_dict({**first, "batch_size": 4, "resume": "latest", "max_steps": 4}))
    with pytest.raises(ConfigError, match="already holds checkpoints of an earlier run .*resume='latest'"):
        train(TrainConfig.from_dict({**first, "max_steps": 4}))  # a fresh run would prune the old one's checkpoints
    r = runner.invoke(app, ["train", "--model", "tiny-vit", "--data", str(fm), "--out", str(run), "--resume", "latest",
                            "--batch-size", "8", "--set", "progress=false"])
    assert r.exit_code == 1 and "vision_cfg.width" in r.stderr and "text_cfg.width" in r.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000000", "step-00000002"]
    assert same(before, weights(run, 2))


def test_siglip_needs_a_model_with_logit_bias(tmp_path, fm):
    first = base_config(tmp_path, fm, max_steps=1)
    result = train(TrainConfig.from_dict(first))
    with pytest.raises(ConfigError, match="loss 'siglip' needs a model with logit_bias"):
        train(TrainConfig.from_dict({**first, "init": str(result.final_checkpoint / "model"), "loss": "siglip",
                                     "out": str(tmp_path / "ft")}))


def test_demo_takes_a_device_and_refuses_one_it_cannot_use(tmp_path):
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d1"), "--device", "tpu"])
    assert r.exit_code == 1 and "device must be one of" in r.stderr
    if not torch.cuda.is_available():
        r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d2"), "--device", "cuda"])
        assert r.exit_code == 1 and "no CUDA device" in r.stderr
    assert not any((tmp_path / d / "checkpoints").exists() for d in ("d1", "d2"))
