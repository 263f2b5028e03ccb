"""LiT-style locking: freeze a tower, optionally leaving its last N blocks trainable.

Every tower is seen as stem → blocks → head (final norm and projection). Unlocking N keeps the last
N blocks *and* the head trainable; 0 freezes the whole tower. (open_clip counts the projection as a
group of its own for ViTs; here a block always brings the head with it, for every tower alike.)
"""

from __future__ import annotations

from torch import nn

from .hf_text import HFTextTower
from .text import TextTransformer
from .vision import ModifiedResNet, VisionTransformer

Part = nn.Module | nn.Parameter


def _blocks_and_head(tower: nn.Module) -> tuple[list[nn.Module], list[Part]]:
    if isinstance(tower, VisionTransformer):
        return list(tower.transformer.resblocks), [tower.ln_post, tower.proj]
    if isinstance(tower, TextTransformer):
        return list(tower.transformer.resblocks), [tower.ln_final, tower.text_projection]
    if isinstance(tower, ModifiedResNet):  # a stage is a block; attention pooling is the projection
        return [tower.layer1, tower.layer2, tower.layer3, tower.layer4], [tower.attnpool]
    if isinstance(tower, HFTextTower):
        # Without a per-architecture table, the head is whatever the encoder registers after its
        # last block (a final norm in pre-LN encoders, nothing in BERT), plus our projection.
        layers = tower.layers
        in_layers = {id(p) for p in layers.parameters()}
        params = list(tower.transformer.parameters())
        last = max(i for i, p in enumerate(params) if id(p) in in_layers)
        return list(layers), [*params[last + 1 :], tower.proj]
    raise TypeError(f"cannot lock a {type(tower).__name__}: no known block structure")


def _params(part: Part) -> list[nn.Parameter]:
    return [part] if isinstance(part, nn.Parameter) else list(part.parameters())


def _is_layer_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def lock_tower(tower: nn.Module, unlocked: int = 0, freeze_norms: bool = True, freeze_bn_stats: bool = False) -> None:
    """Set ``requires_grad=False`` on ``tower`` except its last ``unlocked`` blocks and head.

    ``freeze_norms=False`` keeps every LayerNorm trainable. ``freeze_bn_stats`` keeps the BatchNorms
    of the locked part in eval mode (``Clip.train`` honours the ``stats_frozen`` mark), so their
    running statistics stop moving too.
    """
    blocks, head = _blocks_and_head(tower)
    if not 0 <= unlocked <= len(blocks):
        raise ValueError(f"can unlock 0 to {len(blocks)} blocks of this {type(tower).__name__}, got {unlocked}")
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
