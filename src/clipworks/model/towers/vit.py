"""The Vision Transformer image tower: OpenAI's CLIP ViT, and with a few config switches SigLIP's and EVA-02's.

patches (+ class token) + position embedding → [ln_pre] → blocks → ln_post → pool → [projection]

Pooling is the class token (``tok``, CLIP/EVA), the mean of patch tokens (``avg``), or a learned query attending
over all tokens (``map``, SigLIP's multihead attention pooling). EVA-02 adds a 2-D rotary embedding on patch
tokens, passed to every block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..blocks import BlockSpec, Mlp, Transformer, make_act
from ..config import VisionConfig, mlp_hidden
from ..rope import build_rope
from .base import Part, Tower


class PatchDropout(nn.Module):
    """Keep a random subset of patch tokens while training (FLIP); the class token is always kept."""

    def __init__(self, prob: float, prefix: int = 1):
        super().__init__()
        self.prob = prob
        self.prefix = prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        cls, patches = x[:, : self.prefix], x[:, self.prefix :]
        b, n, _ = patches.shape
        keep = max(1, int(n * (1 - self.prob)))
        idx = torch.rand(b, n, device=x.device).argsort(dim=-1)[:, :keep]
        patches = patches.gather(1, idx.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([cls, patches], dim=1)


class AttentionPool(nn.Module):
    """SigLIP's MAP head: a learned probe attends over the tokens, then a residual MLP; returns ``[B, width]``.

    Named as the ``nn.MultiheadAttention`` it equals (Hugging Face's ``head.attention``), computed with SDPA."""

    def __init__(self, width: int, spec: BlockSpec):
        super().__init__()
        self.heads = spec.heads
        self.probe = nn.Parameter(torch.randn(1, 1, width) * width**-0.5)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.ln = spec.norm(width)
        self.mlp = Mlp(width, spec.mlp_hidden, spec.act)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        wq, wkv = self.in_proj_weight.split([d, 2 * d])
        bq, bkv = self.in_proj_bias.split([d, 2 * d])
        q = F.linear(self.probe.to(x.dtype), wq, bq).expand(b, -1, -1).view(b, 1, h, d // h).transpose(1, 2)
        k, v = F.linear(x, wkv, bkv).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        pooled = self.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, d))
        return (pooled + self.mlp(self.ln(pooled)))[:, 0]


def block_spec(cfg: VisionConfig, quick_gelu: bool) -> BlockSpec:
    return BlockSpec(
        heads=cfg.heads,
        mlp_hidden=mlp_hidden(cfg.width, cfg.mlp_ratio),
        act=make_act(quick_gelu, cfg.act_kwargs),
        ls_init_value=cfg.ls_init_value,
        norm_eps=(cfg.norm_kwargs or {}).get("eps", 1e-5),
        qkv_bias=cfg.qkv_bias,
        k_bias=cfg.k_bias,
        mlp_type=cfg.mlp_type,
        scale_attn_inner=cfg.scale_attn_inner,
        scale_fc=cfg.scale_fc,
    )


class VisionTransformer(Tower):
    def __init__(self, cfg: VisionConfig, output_dim: int, quick_gelu: bool = False):
        super().__init__()
        assert cfg.patch_size is not None and isinstance(cfg.layers, int)
        spec = block_spec(cfg, quick_gelu)
        self.image_size = cfg.image_size
        self.patch_size = cfg.patch_size
        self.pool_type = cfg.pool_type
        self.final_ln_after_pool = cfg.final_ln_after_pool
        width = cfg.width
        scale = width**-0.5
        grid = cfg.image_size // cfg.patch_size
        self.prefix = 1 if cfg.class_token else 0
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=cfg.patch_bias)
        self.class_embedding = nn.Parameter(scale * torch.randn(width)) if cfg.class_token else None
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + self.prefix, width))
        self.patch_dropout = PatchDropout(cfg.patch_dropout, self.prefix)
        self.ln_pre = nn.Identity() if cfg.no_ln_pre else spec.norm(width)
        self.transformer = Transformer(width, cfg.layers, spec)
        self.ln_post = spec.norm(width)
        self.attn_pool = AttentionPool(width, spec) if cfg.pool_type == "map" else None
        if cfg.rope:  # a constant of the grid: not saved, and cast with the model by .to(dtype) as timm's table is
            self.register_buffer("rope", build_rope(grid, width // cfg.heads, cfg.rope_ref_size), persistent=False)
        else:
            self.rope = None
        self.output_dim = output_dim if cfg.proj_type != "none" else width
        self.proj: nn.Parameter | nn.Linear | None = None
        if cfg.proj_type == "linear":
            self.proj = nn.Linear(width, output_dim, bias=True) if cfg.proj_bias else nn.Parameter(scale * torch.randn(width, output_dim))

    def blocks(self) -> list[nn.Module]:
        return list(self.transformer.resblocks)

    def head_parts(self) -> list[Part]:
        return [p for p in (self.ln_post, self.attn_pool, self.proj) if p is not None]

    def no_weight_decay(self) -> set[str]:
        return {"positional_embedding", "class_embedding", "attn_pool.probe"}

    def set_patch_dropout(self, prob: float) -> None:
        if prob and self.rope is not None:
            raise ConfigError("patch_dropout with rope is not supported (dropped patches lose their rotary position)")
        self.patch_dropout.prob = prob

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Every token's final hidden state ``[B, prefix + grid², width]``, after ``ln_post``."""
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # [B, grid*grid, width]
        if self.class_embedding is not None:
            x = torch.cat([self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1)
        x = self.patch_dropout(x + self.positional_embedding.to(x.dtype))
        x = self.transformer(self.ln_pre(x), rope=self.rope)
        return x if self.final_ln_after_pool else self.ln_post(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        if self.pool_type == "map":
            x = self.attn_pool(x)  # type: ignore[misc]
        elif self.pool_type == "avg":
            x = x[:, self.prefix :].mean(dim=1)
        else:
            x = x[:, 0]
        if self.final_ln_after_pool:
            x = self.ln_post(x)
        if isinstance(self.proj, nn.Parameter):
            return x @ self.proj
        return self.proj(x) if self.proj is not None else x
