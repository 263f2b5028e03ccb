"""EVA-02 CLIP image towers (open_clip builds them with timm's ``Eva``), as clipworks' own ViT.

An EVA-02 block is our pre-LN block with its EVA switches: separate q/k/v projections with q and v biases only
(fused into ``in_proj_weight``), a LayerNorm inside attention and inside the SwiGLU MLP (sub-LN), a 2-D rotary
embedding on patch tokens, LayerNorm eps 1e-6. The trunk has a biased patch embedding, a class token with its
own position, no norm before the blocks, a final norm, class-token pooling, and timm's classifier head — a
biased Linear to ``embed_dim`` — as the projection (open_clip's ``timm_proj: null``).

EVA-01 (``eva_giant_*``) and EVA-02-E (``eva02_enormous_*``, post-norm blocks) stay timm towers.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import CheckpointError
from ..model.config import VisionConfig
from . import timm_vit

_EVA02_CLIP = {
    "head_width": 64,
    "mlp_ratio": 4 * 2 / 3,
    "no_ln_pre": True,
    "pool_type": "tok",
    "norm_kwargs": {"eps": 1e-6},
    "scale_attn_inner": True,
    "scale_fc": True,
    "class_token": True,
    "patch_bias": True,
    "qkv_bias": True,
    "k_bias": False,
    "mlp_type": "swiglu",
    "rope": True,
    "rope_ref_size": 16,  # timm's ref_feat_shape (16, 16): the 224/14 grid EVA-02 was pretrained on
}

# timm model name → our ViT fields (the projection comes from open_clip's timm_pool/timm_proj).
TIMM_MODELS: dict[str, dict[str, Any]] = {
    "eva02_base_patch16_clip_224": {**_EVA02_CLIP, "image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
    "eva02_large_patch14_clip_224": {**_EVA02_CLIP, "image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
    "eva02_large_patch14_clip_336": {**_EVA02_CLIP, "image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
}

# timm's names (``visual.trunk.`` stripped) → ours (``visual.`` stripped); blocks are mapped by _BLOCK.
# What EVA-02 adds to timm's ViT names: SwiGLU, sub-LN (its q/k/v are fused below).
_BLOCK = {"attn.norm": "attn.ln_inner", "mlp.fc1_g": "mlp.c_fc_gate", "mlp.fc1_x": "mlp.c_fc", "mlp.norm": "mlp.ln"}


def owns(vision_cfg: VisionConfig) -> bool:
    """An EVA-02 trunk: the rotary embedding is what no other natively built timm tower has."""
    return vision_cfg.rope


def timm_to_native(trunk_sd: dict[str, torch.Tensor], vision_cfg: VisionConfig) -> dict[str, torch.Tensor]:
    """Our ``visual.*`` names (without the prefix) for timm ``Eva`` trunk weights (``visual.trunk.`` stripped)."""
    sd = dict(trunk_sd)
    out: dict[str, torch.Tensor] = {}
    if "cls_token" in sd:
        out["class_embedding"] = sd.pop("cls_token").reshape(-1)
    if "pos_embed" in sd:
        out["positional_embedding"] = sd.pop("pos_embed").squeeze(0)
    for i in range(vision_cfg.layers):  # type: ignore[arg-type]
        out.update(_fused_qkv(sd, f"blocks.{i}.attn.", f"transformer.resblocks.{i}.attn."))
    out.update(timm_vit.rename(sd, {}, _BLOCK))
    if sd:
        raise CheckpointError(f"EVA-02 image tower: timm weights clipworks does not map: {', '.join(sorted(sd)[:8])}"
                              f"{' …' if len(sd) > 8 else ''} (a variant with different blocks needs the timm tower)")
    return out


def _fused_qkv(sd: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, torch.Tensor]:
    """One block's attention input: timm's q/k/v projections, or its fused ``qkv``, as our ``in_proj_weight``;
    the q and v biases keep their names (there is no key bias)."""
    if src + "qkv.weight" in sd:
        out = {dst + "in_proj_weight": sd.pop(src + "qkv.weight")}
        biases = {n: sd.pop(src + n) for n in ("q_bias", "v_bias") if src + n in sd}
    elif src + "q_proj.weight" in sd:
        out = {dst + "in_proj_weight": torch.cat([sd.pop(f"{src}{n}_proj.weight") for n in "qkv"])}
        biases = {f"{n}_bias": sd.pop(f"{src}{n}_proj.bias") for n in "qv" if f"{src}{n}_proj.bias" in sd}
    else:
        raise CheckpointError(f"EVA-02 image tower: no attention weights at {src}q_proj.weight or {src}qkv.weight")
    return {**out, **{dst + k: v for k, v in biases.items()}}
