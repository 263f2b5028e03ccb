"""Sharded training (parallel='fsdp'): the same run as one unsharded process, and checkpoints every mode reads.

Two CPU processes under torchrun (gloo) train with FSDP2 on halves of each global batch, with GradCache
micro-batches and in-loop zero-shot evaluation; one process trains on the whole batches unsharded. Their
weights, loss curves and zero-shot results agree, and the sharded run's mid-run checkpoint resumes in a
single unsharded process to the same end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import write_fashion_mnist, write_model_config

import clipworks
from clipworks.checkpoints import load_state
from clipworks.train.config import TrainConfig
from clipworks.train.loop import train
from clipworks.train.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 4


def run_config(tmp: Path, out: str, batch_size: int, **changes: object) -> TrainConfig:
    data = write_fashion_mnist(tmp / "fm")
    return TrainConfig(
        model=str(write_model_config(tmp / "micro.json")), data=str(data), val_data=str(data), val_samples=20,
        batch_size=batch_size, accum_steps=2, max_steps=STEPS, lr=2e-3, warmup=1, save_every=2, keep_last=4,
        eval_every=2, log_every=1, out=str(tmp / out), device="cpu", progress=False, tensorboard=False,
        workers=0, seed=0, **changes,
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_state(run_dir / "checkpoints" / f"step-{STEPS:08d}" / "model")[1]


def max_difference(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    """Largest elementwise difference. Each AdamW step moves a weight by about lr (2e-3) whatever its gradient's
    size, so float noise in a near-zero gradient shows as ~1e-6 here, while a wrong gradient shows as ~lr."""
    assert got.keys() == want.keys()
    return max((got[k] - want[k]).abs().max().item() for k in want)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-rank FSDP run of 4 steps, global batch 16 (8 per rank), checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("fsdp")
    cfg = run_config(tmp, "sharded", batch_size=8, parallel="fsdp")
    config_file = tmp / "run.json"
    config_file.write_text(json.dumps(cfg.to_dict()))
    src = str(Path(clipworks.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "clipworks", "train", str(config_file)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return Path(cfg.out)


def test_two_sharded_processes_train_like_one_unsharded_process(sharded_run: Path, tmp_path: Path) -> None:
    reference = train(run_config(tmp_path, "reference", batch_size=16))
    assert max_difference(final_weights(sharded_run), final_weights(reference.run_dir)) <= 1e-5
    sharded_log, reference_log = read_metrics(sharded_run), read_metrics(reference.run_dir)
    losses = [[r["loss"] for r in log if "loss" in r] for log in (sharded_log, reference_log)]
    assert len(losses[0]) == STEPS and losses[0] == pytest.approx(losses[1], rel=1e-4)
    # Zero-shot under FSDP runs on every rank (the forward gathers weights); rank 0 reports the same result.
    evals = [[r["zeroshot_top1"] for r in log if "zeroshot_top1" in r] for log in (sharded_log, reference_log)]
    assert len(evals[0]) >= 2 and evals[0] == evals[1]
    summary = json.loads((sharded_run / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["zeroshot_n"] == 20


def test_sharded_checkpoint_resumes_unsharded_to_the_same_end(sharded_run: Path, tmp_path: Path) -> None:
    """A checkpoint holds full (gathered) weights and optimizer state, so a run may change its sharding."""
    run_dir = tmp_path / "resumed"
    (run_dir / "checkpoints").mkdir(parents=True)
    middle = sharded_run / "checkpoints" / f"step-{STEPS // 2:08d}"
    subprocess.run(["cp", "-r", str(middle), str(run_dir / "checkpoints")], check=True)
    result = train(run_config(tmp_path, "resumed", batch_size=16, resume="latest"))
    assert result.steps == STEPS
    assert max_difference(final_weights(run_dir), final_weights(sharded_run)) <= 1e-5


def test_one_process_fsdp_without_torchrun_matches_plain_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel='fsdp' in a plain ``python`` process shards over a one-rank group and changes nothing."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    sharded = train(run_config(tmp_path, "one-sharded", batch_size=16, parallel="fsdp", loss="siglip"))
    plain = train(run_config(tmp_path, "one-plain", batch_size=16, loss="siglip"))
    assert max_difference(final_weights(sharded.run_dir), final_weights(plain.run_dir)) <= 1e-6
    assert not torch.distributed.is_initialized()  # the run tears its group down
