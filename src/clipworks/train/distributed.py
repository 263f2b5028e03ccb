"""Process-group helpers for torchrun: one ``DistEnv`` that the trainer passes around, and collectives that
are no-ops in a single process, so the training loop has no ``if distributed`` branches of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import ConfigError

T = TypeVar("T")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def init_distributed(device: str = "auto", need_group: bool = False) -> DistEnv:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK (gloo on CPU, NCCL on CUDA,
    each rank on GPU LOCAL_RANK); without torchrun, a single-process env — with a one-rank group when
    ``need_group`` (FSDP shards over a group even when it holds one process)."""
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dev = torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")
    if (world_size > 1 or need_group) and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if world_size == 1 and "MASTER_ADDR" not in os.environ:  # plain `python`, not torchrun: an in-memory store
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def is_main(env: DistEnv) -> bool:
    """Rank 0 writes checkpoints, logs and progress; the others stay quiet."""
    return env.rank == 0


def barrier(env: DistEnv) -> None:
    if env.world_size > 1:
        dist.barrier(device_ids=[env.local_rank] if env.device.type == "cuda" else None)


def broadcast_object(obj: T, env: DistEnv) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects: a resolved config, a checkpoint path)."""
    if env.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """The mean of ``tensor`` over ranks, as a new tensor (for logging losses and metrics)."""
    out = tensor.detach().clone()
    if env.world_size == 1:
        return out
    dist.all_reduce(out)
    return out / env.world_size


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
