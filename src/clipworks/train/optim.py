"""AdamW the way CLIP trains: no weight decay on gains, biases, embeddings and the temperature; per-tower rates.

The schedule is a pure function of the step, so resuming needs nothing but the step number.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig


def _no_decay_names(model: nn.Module) -> set[str]:
    """What the towers name as exempt (embeddings, class tokens, probes) plus the temperature and bias."""
    names = getattr(model, "no_weight_decay", None)
    return set(names()) if callable(names) else set()


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
    exempt = _no_decay_names(model)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower, decay = _tower(name), not (p.ndim < 2 or name in exempt)
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
        raise ConfigError("nothing to train: every parameter is locked (check lock_image / lock_text)")
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
