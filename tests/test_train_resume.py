"""Exact resume: a run killed with SIGKILL mid-training and resumed ends bit-identical to one never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import base_config, write_fashion_mnist

import clipworks
from clipworks.train.checkpoint import checkpoint_dirs
from clipworks.train.config import TrainConfig
from clipworks.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS, SAVE_EVERY = 12, 3

# Runs `clipworks train RUN.json` through the CLI once the file GO exists (the imports meanwhile overlap the
# reference run), each step slowed down (numerics untouched) so that the test can kill it after a
# checkpoint with steps still to go, however loaded the machine is.
KILLED_RUN = """
import os, sys, time
import torch
import torch._dynamo  # what the first optimizer imports: seconds, better spent before GO
torch.set_num_threads(1)
from clipworks.train import loop
step = loop._Run._step
def slow_step(self, *args):
    out = step(self, *args)
    time.sleep(0.15)
    return out
loop._Run._step = slow_step
from clipworks.cli import main
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
sys.argv = ["clipworks", "train", sys.argv[1]]
main()
"""


def start_run(tmp: Path, cfg: dict) -> subprocess.Popen:
    """The run in a subprocess that imports, then waits for ``tmp/GO`` to start training."""
    (tmp / "run.json").write_text(json.dumps(cfg))
    src = str(Path(clipworks.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp / "run.json"), str(tmp / "GO")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def kill_after_checkpoint(proc: subprocess.Popen, tmp: Path, cfg: dict, step: int) -> int:
    """Let the run go, SIGKILL it once checkpoint ``step`` is complete; the newest step saved."""
    wanted = Path(cfg["out"]) / "checkpoints" / f"step-{step:08d}" / "trainer.pt"
    (tmp / "GO").touch()
    try:
        deadline = time.monotonic() + 120
        while not wanted.is_file():
            if proc.poll() is not None:
                pytest.fail(f"training exited before step {step}:\n{proc.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint at step {step} after 120 s")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    saved = [int(p.name.split("-")[1]) for p in checkpoint_dirs(Path(cfg["out"]))]
    assert step <= saved[-1] < STEPS, f"the kill came too late to be mid-run: checkpoints {saved}"
    return saved[-1]


def state_of(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict]:
    return load_file(checkpoint / "model" / "model.safetensors"), torch.load(checkpoint / "trainer.pt", weights_only=True)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    data = write_fashion_mnist(tmp_path / "fm", n_train=40)  # 5 batches an epoch: 12 steps cross two epochs
    # patch dropout and random crops: the resumed run must replay the torch RNG and the per-sample crop draws
    common = dict(max_steps=STEPS, save_every=SAVE_EVERY, keep_last=2, patch_dropout=0.3, train_augment=True,
                  warmup=3, seed=7)
    cfg = base_config(tmp_path, data, out=str(tmp_path / "killed"), **common)
    proc = start_run(tmp_path, cfg)
    try:
        reference = train(TrainConfig.from_dict(base_config(tmp_path, data, out=str(tmp_path / "straight"), **common)))
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    assert reference.steps == STEPS

    killed_at = kill_after_checkpoint(proc, tmp_path, cfg, step=6)
    at_kill, at_kill_state = state_of(Path(cfg["out"]) / "checkpoints" / f"step-{killed_at:08d}")
    assert at_kill_state["position"]["step"] == killed_at
    resumed = train(TrainConfig.from_dict({**cfg, "resume": "latest"}))
    assert resumed.steps == STEPS and resumed.final_checkpoint.name == f"step-{STEPS:08d}"

    a_model, a_state = state_of(reference.final_checkpoint)
    b_model, b_state = state_of(resumed.final_checkpoint)
    assert a_model.keys() == b_model.keys()
    differ = [k for k in a_model if not torch.equal(a_model[k], b_model[k])]
    assert not differ, f"resumed from step {killed_at}: {len(differ)} tensors differ, e.g. {differ[:5]}"
    # the resumed part did train: not a vacuous comparison of two copies of the checkpoint
    assert sum(not torch.equal(at_kill[k], b_model[k]) for k in at_kill) > len(at_kill) // 2
    assert a_state["position"] == b_state["position"] == {"step": STEPS, "epoch": 2, "batch": 2}

    opt_a, opt_b = a_state["optimizer"], b_state["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a["state"].keys() == opt_b["state"].keys() and len(opt_a["state"]) > 0
    for index, slots in opt_a["state"].items():
        for name, value in slots.items():
            assert torch.equal(value, opt_b["state"][index][name]), (index, name)
    assert float(next(iter(opt_a["state"].values()))["step"]) == STEPS
    assert torch.equal(a_state["rng"]["torch"], b_state["rng"]["torch"])
    assert a_state["guard"] == b_state["guard"]

    # the resumed run's log continues the killed one's: every step is there, the last ones from the resumed run
    records = [json.loads(line) for line in (Path(cfg["out"]) / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records} == set(range(1, STEPS + 1))
    assert json.loads((Path(cfg["out"]) / "summary.json").read_text())["steps"] == STEPS
