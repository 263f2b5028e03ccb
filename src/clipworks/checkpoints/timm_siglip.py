"""SigLIP / SigLIP 2 image towers as open_clip builds them (a timm ``vit_*_siglip_*`` trunk), read into our ViT.

open_clip's SigLIP configs name a timm trunk (``timm_model_name``) with ``timm_pool: "map"`` and
``timm_proj: "none"``; the trunk is a plain ViT without class token or pre-norm, with a biased patch
convolution, LayerNorm eps 1e-6 and timm's attention-pool head (``AttentionPoolLatent``). ``TIMM_MODELS`` gives
our ViT fields for every such trunk open_clip's configs use, and ``timm_to_native`` its weights under our names.

The activation follows each timm definition, not the paper: timm builds the B/16, L/16 (256/384) and SO400M/14
trunks with exact GELU and the B/32, L/16-512, SO400M/16 and giant-opt trunks with tanh-GELU, and open_clip's
embeddings (which we reproduce) come from those definitions. open_clip builds the trunk at the size its name
says, whatever ``image_size`` the config holds.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import CheckpointError
from ..model.config import VisionConfig
from . import timm_vit

_COMMON: dict[str, Any] = {"class_token": False, "no_ln_pre": True, "patch_bias": True, "pool_type": "map",
                           "norm_kwargs": {"eps": 1e-6}, "proj_type": "none"}
_TANH = {"act_kwargs": {"approximate": "tanh"}}


def _vit(patch: int, width: int, layers: int, heads: int, size: int, mlp_ratio: float = 4.0,
         tanh: bool = False) -> dict[str, Any]:
    return dict(_COMMON, image_size=size, patch_size=patch, width=width, layers=layers, head_width=width // heads,
                mlp_ratio=mlp_ratio, **(_TANH if tanh else {}))


_SO400M = {"width": 1152, "layers": 27, "heads": 16, "mlp_ratio": 3.7362}

# timm model name → our ViT fields (timm 1.0's ``vision_transformer.py`` definitions).
TIMM_MODELS: dict[str, dict[str, Any]] = {
    "vit_base_patch32_siglip_256": _vit(32, 768, 12, 12, 256, tanh=True),
    **{f"vit_base_patch16_siglip_{s}": _vit(16, 768, 12, 12, s) for s in (224, 256, 384, 512)},
    **{f"vit_large_patch16_siglip_{s}": _vit(16, 1024, 24, 16, s) for s in (256, 384)},
    "vit_large_patch16_siglip_512": _vit(16, 1024, 24, 16, 512, tanh=True),
    **{f"vit_so400m_patch14_siglip_{s}": _vit(14, size=s, **_SO400M) for s in (224, 378, 384)},
    **{f"vit_so400m_patch16_siglip_{s}": _vit(16, size=s, tanh=True, **_SO400M) for s in (256, 384, 512)},
    **{f"vit_giantopt_patch16_siglip_{s}": _vit(16, 1536, 40, 16, s, tanh=True) for s in (256, 384)},
}

# The fields that tell a SigLIP trunk apart (size aside: a config may be built at another image size).
_ARCH_KEYS = ("patch_size", "width", "layers", "head_width", "mlp_ratio", "class_token", "no_ln_pre", "patch_bias",
              "pool_type", "norm_kwargs", "act_kwargs")


def owns(vision_cfg: VisionConfig) -> bool:
    """Whether ``vision_cfg`` is one of these trunks, so ``visual.trunk.*`` weights are SigLIP's timm names."""
    defaults = VisionConfig()
    return any(all(getattr(vision_cfg, k) == fields.get(k, getattr(defaults, k)) for k in _ARCH_KEYS)
               for fields in TIMM_MODELS.values())


# What SigLIP adds to timm's ViT names: the attention-pool head (its q/kv/latent are fused below).
_STEM = {"attn_pool.proj": "attn_pool.out_proj", "attn_pool.norm": "attn_pool.ln",
         "attn_pool.mlp.fc1": "attn_pool.mlp.c_fc", "attn_pool.mlp.fc2": "attn_pool.mlp.c_proj"}


def timm_to_native(trunk: dict[str, torch.Tensor], vision_cfg: VisionConfig) -> dict[str, torch.Tensor]:
    """Our names (relative to ``visual.``) for a SigLIP trunk's state dict. timm's fused ``qkv`` is our
    ``in_proj``; its attention pool's ``latent``/``q``/``kv`` are our probe and fused ``in_proj``. Keys it does
    not know pass through under ``trunk.``, for the strict loader to name."""
    sd = dict(trunk)
    out = timm_vit.rename(sd, _STEM, {})
    if "pos_embed" in sd:
        out["positional_embedding"] = sd.pop("pos_embed").reshape(-1, vision_cfg.width)
    if "attn_pool.latent" in sd:
        out["attn_pool.probe"] = sd.pop("attn_pool.latent")
        for suffix in ("weight", "bias"):
            q, kv = sd.pop(f"attn_pool.q.{suffix}", None), sd.pop(f"attn_pool.kv.{suffix}", None)
            if q is None or kv is None:
                raise CheckpointError(f"the SigLIP attention-pool head lacks visual.trunk.attn_pool.q.{suffix} or "
                                      f"visual.trunk.attn_pool.kv.{suffix}")
            out[f"attn_pool.in_proj_{suffix}"] = torch.cat([q, kv], dim=0)
    out.update({"trunk." + k: v for k, v in sd.items()})
    return out
