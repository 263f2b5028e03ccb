"""Fully sharded training (FSDP2, ``torch.distributed.fsdp.fully_shard``) for towers too large to copy per rank.

Each block of either tower (``Tower.blocks``: transformer blocks, ResNet or timm stages) is its own shard unit: gathered just
before it runs and freed right after, so a rank holds 1/world of the weights, gradients and AdamW state
plus one block at full size. The rest (embeddings, projections, temperature) is the root unit.

Parameters become DTensors, so everything that leaves the training loop goes through full state dicts:
checkpoints written by a sharded run are the same files a single-process or DDP run writes, and each
resumes the other. The state-dict helpers below work on any model, sharded or not, so the trainer has
one save path.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from ..checkpoints.strict import load_strict
from ..model import Clip
from .distributed import DistEnv

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_units(model: Clip) -> list[nn.Module]:
    """The modules that become their own FSDP unit: every block of both towers (``Tower.blocks``)."""
    return [*model.visual.blocks(), *model.text.blocks()]


def shard_model(model: Clip, env: DistEnv) -> Clip:
    """Shard ``model`` in place over all ranks (call before building the optimizer; it needs the DTensors).

    ``encode_image``/``encode_text`` are registered as forward methods, so zero-shot evaluation can call
    them directly on the sharded model; every rank must then make the same calls, as with ``forward``.
    """
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    # FSDP2 cannot shard 0-dim parameters (the temperature and bias): they stay whole on every rank, and
    # ``sync_replicated_grads`` averages their gradients.
    scalars = {p for p in model.parameters() if p.ndim == 0}
    fully_shard(model, mesh=mesh, ignored_params=scalars)
    for method in ("encode_image", "encode_text"):
        register_fsdp_forward_method(model, method)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a (possibly sharded) tensor on this rank; a collective for DTensors."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def sync_replicated_grads(model: nn.Module) -> None:
    """Average over ranks the gradients FSDP leaves alone (its ignored, unsharded parameters), as DDP would."""
    if not is_sharded(model) or dist.get_world_size() == 1:
        return
    for p in model.parameters():
        if not isinstance(p, DTensor) and p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` for a model whose parameters are partly sharded (DTensor) and partly replicated:
    one global norm over both, and the same scale applied to both. Returns the norm before clipping."""
    groups = [[p.grad for p in params if isinstance(p, DTensor)], [p.grad for p in params if not isinstance(p, DTensor)]]
    norms = [full_value(torch.nn.utils.get_total_norm(g)) for g in groups if g]
    total = torch.linalg.vector_norm(torch.stack(norms))
    if math.isfinite(max_norm):
        coef = max_norm / (float(total) + 1e-6)
        if coef < 1.0:
            for g in groups:
                if g:
                    torch._foreach_mul_(g, coef)
    return total


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on rank 0 (CPU); empty on the other ranks of a sharded model. Collective."""
    if not is_sharded(model):
        return model.state_dict()
    return get_model_state_dict(model, options=_FULL)


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a full state dict (every rank passes the whole of it) into a sharded or plain model, strictly."""
    if is_sharded(model):
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))
    else:
        load_strict(model, state, where)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimizer state keyed by parameter name, unsharded (rank 0 only for a sharded model). Collective."""
    if not optimizer.state:
        # Before the first step there is nothing to save, and torch's state-dict helper would make something:
        # it initialises the state with a zero-gradient step, one extra AdamW step in every later bias correction.
        return {"state": {}, "param_groups": []}
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a ``full_optimizer_state`` (every rank passes the whole of it) into a sharded or plain optimizer."""
    if not state["state"]:  # saved before the first step: back to a fresh optimizer (a rollback to step 0)
        optimizer.state.clear()
        return
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    for group in optimizer.param_groups:  # the round trip turns tuples into lists; keep the group as built
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
