"""timm's Vision Transformer names, shared by the timm trunks clipworks builds on its own block (SigLIP, EVA-02).

The stem, final norm, head and block parts every timm ViT has are mapped here once; each family module adds the
names only it has (SigLIP's attention pool, EVA-02's SwiGLU, sub-LN and separate q/k/v) and handles its own
special tensors.
"""

from __future__ import annotations

import re

import torch

# module prefixes: their .weight and .bias move together
STEM = {"patch_embed.proj": "conv1", "norm": "ln_post", "head": "proj"}  # head: timm's classifier as projection
BLOCK = {"norm1": "ln_1", "norm2": "ln_2", "attn.proj": "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
         "attn.qkv": "attn.in_proj"}
BLOCK_PARAMS = {"gamma_1": "ls_1.gamma", "gamma_2": "ls_2.gamma"}  # bare parameters of a block (layer scale)
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)$")
_BLOCK_PARAM = re.compile(r"blocks\.(\d+)\.([^.]+)$")


def _leaf(dst: str, suffix: str) -> str:
    # fused attention inputs are our in_proj_weight / in_proj_bias
    return f"{dst}_{suffix}" if dst.endswith("in_proj") else f"{dst}.{suffix}"


def rename(sd: dict[str, torch.Tensor], stem: dict[str, str], block: dict[str, str]) -> dict[str, torch.Tensor]:
    """Move every key of ``sd`` that ``stem`` or ``block`` (plus the shared names) map into the returned dict, under
    our names relative to ``visual.``; what is left in ``sd`` is for the family to handle or report."""
    stem, block = {**STEM, **stem}, {**BLOCK, **block}
    out: dict[str, torch.Tensor] = {}
    for key in list(sd):
        module, _, suffix = key.rpartition(".")
        if module in stem and suffix in ("weight", "bias"):
            out[_leaf(stem[module], suffix)] = sd.pop(key)
        elif (m := _BLOCK_KEY.match(key)) and m[2] in block:
            out[_leaf(f"transformer.resblocks.{m[1]}.{block[m[2]]}", m[3])] = sd.pop(key)
        elif (m := _BLOCK_PARAM.match(key)) and m[2] in BLOCK_PARAMS:
            out[f"transformer.resblocks.{m[1]}.{BLOCK_PARAMS[m[2]]}"] = sd.pop(key)
    return out
