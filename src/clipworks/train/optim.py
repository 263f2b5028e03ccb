"""AdamW the way CLIP trains: no weight decay on gains, biases, embeddings and the temperature; per-tower rates.

The schedule is a pure function of the step, so resuming needs nothing but the step number.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

# "embeddings": a Hugging Face text tower's word/position/token-type embedding tables.
_NO_DECAY_NAMES = ("logit_scale", "logit_bias", "positional_embedding", "class_embedding", "token_embedding", "embeddings")


def _exempt_from_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or any(k in name for k in _NO_DECAY_NAMES)


def _tower(name: str) -> str:
    if name.startswith("visual."):
        return "image"
    if name.startswith("text."):
        return "text"
    return "shared"


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Groups keyed by (tower, decay); each carries its own base lr as ``base_lr`` for the schedule."""
    base = {"image": cfg.lr_image or cfg.lr, "text": cfg.lr_text or cfg.lr, "shared": cfg.lr}
    groups: dict[tuple[str, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower, decay = _tower(name), not _exempt_from_decay(name, p)
        g = groups.setdefault((tower, decay), {
            "params": [], "names": [], "weight_decay": cfg.weight_decay if decay else 0.0,
            "base_lr": base[tower], "lr": base[tower], "tower": tower,
        })
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("nothing to train: every parameter is locked (check lock_image / lock_text)")
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    for g in groups:
        g.pop("names")
    return torch.optim.AdamW(groups, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)


def lr_factor(step: int, total_steps: int, warmup: int, schedule: str) -> float:
    """Linear warmup to 1, then cosine to 0 over the remaining steps (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
