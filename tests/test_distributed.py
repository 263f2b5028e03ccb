"""Two CPU processes (torchrun, gloo; DDP, and FSDP2 sharding) on halves of a batch get the loss and the
gradients of one process on the whole batch, for every exact loss variant: dense, tiled, multi-positive,
local, no-grad gather."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_worker import GROUPS, VARIANTS, batch, build_model, flat_grads, step

import clipworks
from clipworks.train.distributed import DistEnv, all_reduce_mean, broadcast_object, init_distributed, is_main

RTOL = 1e-5
pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    worker = Path(__file__).with_name("distributed_worker.py")
    src = str(Path(clipworks.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker)]
    cmd.append(str(out))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return torch.load(out)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp(min=1e-12)).item()


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_two_processes_equal_one_process_on_the_whole_batch(name: str, parallel: str, two_process_results) -> None:
    make_loss, grouped, local = VARIANTS[name]
    model = build_model()
    images, tokens = batch()
    loss = step(model, make_loss(), images, tokens, GROUPS if grouped else None)
    got = two_process_results[name if parallel == "ddp" else f"fsdp {name}"]
    assert relative_error(got["mean_loss" if local else "loss"], loss) <= RTOL
    assert relative_error(got["grads"], flat_grads(model)) <= RTOL
    # The temperature's gradient is where a wrong world-size factor would show alone.
    assert relative_error(got["scale_grad"], model.logit_scale.grad) <= RTOL
    if "siglip" in name:
        assert relative_error(got["bias_grad"], model.logit_bias.grad) <= RTOL
    else:  # b cancels in a softmax
        assert got["bias_grad"].abs().item() <= 1e-6 and model.logit_bias.grad.abs().item() <= 1e-6


def test_process_group_helpers(two_process_results) -> None:
    helpers = two_process_results["helpers"]
    assert helpers["world_size"] == 2 and helpers["device"] == "cpu" and helpers["broadcast"].item() == 0.0


def test_single_process_env_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = init_distributed("cpu")
    assert env == DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")) and is_main(env)
    assert all_reduce_mean(torch.tensor(3.0), env).item() == 3.0 and broadcast_object("x", env) == "x"
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, got 'tpu'"):
        init_distributed("tpu")
