"""LiT-style locking: freeze a tower, optionally leaving its last N blocks trainable.

Every tower is seen as stem → blocks → head (final norm and projection) through its ``Tower`` interface.
Unlocking N keeps the last N blocks *and* the head trainable; 0 freezes the whole tower. (open_clip counts
the projection as a group of its own for ViTs; here a block always brings the head with it, for every tower.)
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .towers.base import Part, Tower


def _params(part: Part) -> list[nn.Parameter]:
    return [part] if isinstance(part, nn.Parameter) else list(part.parameters())


def _is_layer_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def lock_tower(tower: Tower, unlocked: int = 0, freeze_norms: bool = True, freeze_bn_stats: bool = False) -> None:
    """Set ``requires_grad=False`` on ``tower`` except its last ``unlocked`` blocks and head.

    ``freeze_norms=False`` keeps every LayerNorm trainable. ``freeze_bn_stats`` keeps the BatchNorms
    of the locked part in eval mode (``Clip.train`` honours the ``stats_frozen`` mark), so their
    running statistics stop moving too.
    """
    blocks, head = tower.blocks(), tower.head_parts()
    if not 0 <= unlocked <= len(blocks):
        raise ConfigError(f"can unlock 0 to {len(blocks)} blocks of this {type(tower).__name__}, got {unlocked}")
    trainable = [*blocks[len(blocks) - unlocked :], *head] if unlocked else []
    for p in tower.parameters():
        p.requires_grad_(False)
    for part in trainable:
        for p in _params(part):
            p.requires_grad_(True)
    if not freeze_norms:
        for module in tower.modules():
            if _is_layer_norm(module):
                module.requires_grad_(True)
    live = {id(m) for part in trainable if isinstance(part, nn.Module) for m in part.modules()}
    for module in tower.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.stats_frozen = freeze_bn_stats and id(module) not in live
            if module.stats_frozen:
                module.eval()
