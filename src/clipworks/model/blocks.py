"""The one pre-LN transformer block that every transformer tower is built from.

Parameter names follow OpenAI's CLIP (``attn.in_proj_weight``, ``mlp.c_fc``, ``ln_1`` …) because those names are
the lingua franca of CLIP checkpoints: OpenAI and open_clip state dicts load without a key map. The options the
other families need are a few switches on the same block, named as open_clip names them where it has them:

- ``norm_eps`` and ``act`` (tanh-GELU, QuickGELU): SigLIP, OpenAI;
- ``qkv_bias``: attention without input biases; ``k_bias=False``: q and v biases only (EVA-02);
- ``scale_attn_inner`` / ``scale_fc`` (sub-LN): a LayerNorm on the attention output and on the MLP hidden state,
  before their projections (EVA-02, open_clip's ``attn.ln_inner`` and ``mlp.ln``);
- ``mlp_type="swiglu"``: a gated SiLU MLP (EVA-02);
- a rotary position embedding passed to ``forward`` (EVA-02), applied to the trailing tokens it covers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in the weight's dtype and cast back, so fp16/bf16 inputs stay stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.to(self.weight.dtype), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    """OpenAI's sigmoid approximation of GELU; their released weights were trained with it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_act(quick_gelu: bool, act_kwargs: dict | None = None) -> Callable[[], nn.Module]:
    """The activation factory a config asks for: QuickGELU, or GELU with open_clip's ``act_kwargs``."""
    if quick_gelu:
        return QuickGELU
    return functools.partial(nn.GELU, **(act_kwargs or {}))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


@dataclass(frozen=True)
class BlockSpec:
    """Everything a block needs besides its width: one value shared by all blocks of a tower."""

    heads: int
    mlp_hidden: int
    act: Callable[[], nn.Module] = nn.GELU
    ls_init_value: float | None = None
    norm_eps: float = 1e-5
    qkv_bias: bool = True
    k_bias: bool = True
    mlp_type: str = "mlp"
    scale_attn_inner: bool = False
    scale_fc: bool = False

    def norm(self, width: int) -> LayerNorm:
        return LayerNorm(width, eps=self.norm_eps)


class Attention(nn.Module):
    """Multi-head self-attention on batch-first input, computed with ``scaled_dot_product_attention``.

    Q, K and V share one fused input projection (``in_proj_weight``, as OpenAI's), which is also the fast path;
    towers released with separate projections are concatenated into it on load. A rotary embedding ``rope``
    ``[n, …]`` rotates the last ``n`` tokens' queries and keys, leaving leading (class) tokens alone.

    ``k_bias=False`` keeps biases for q and v only (``q_bias``, ``v_bias``, timm's EVA names). Once keys are
    rotated a key bias is no longer a no-op (it adds a position-dependent term to each score), so a zero slice of
    ``in_proj_bias`` would load EVA-02 exactly but then train a parameter EVA-02 does not have.
    """

    def __init__(self, width: int, heads: int, qkv_bias: bool = True, inner_norm: nn.Module | None = None,
                 k_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width)) if qkv_bias and k_bias else None
        self.q_bias = nn.Parameter(torch.zeros(width)) if qkv_bias and not k_bias else None
        self.v_bias = nn.Parameter(torch.zeros(width)) if qkv_bias and not k_bias else None
        self.ln_inner = inner_norm if inner_norm is not None else nn.Identity()
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, n, d = x.shape
        bias = self.in_proj_bias
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.in_proj_weight, bias)
        q, k, v = qkv.view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out_proj(self.ln_inner(x.transpose(1, 2).reshape(b, n, d)))


class Mlp(nn.Module):
    """``c_proj(ln(act(c_fc(x))))``; ``ln`` is the optional sub-LN (open_clip's ``scale_fc``)."""

    def __init__(self, width: int, hidden: int, act: Callable[[], nn.Module], inner_norm: nn.Module | None = None):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.act = act()
        self.ln = inner_norm if inner_norm is not None else nn.Identity()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.ln(self.act(self.c_fc(x))))


class SwiGLU(nn.Module):
    """``c_proj(ln(silu(c_fc_gate(x)) * c_fc(x)))``: the gated MLP of EVA-02 (timm's ``SwiGLU``)."""

    def __init__(self, width: int, hidden: int, inner_norm: nn.Module | None = None):
        super().__init__()
        self.c_fc_gate = nn.Linear(width, hidden)
        self.c_fc = nn.Linear(width, hidden)
        self.act = nn.SiLU()
        self.ln = inner_norm if inner_norm is not None else nn.Identity()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.ln(self.act(self.c_fc_gate(x)) * self.c_fc(x)))


class ResidualBlock(nn.Module):
    def __init__(self, width: int, spec: BlockSpec):
        super().__init__()
        self.ln_1 = spec.norm(width)
        self.attn = Attention(width, spec.heads, spec.qkv_bias, spec.norm(width) if spec.scale_attn_inner else None,
                              spec.k_bias)
        self.ls_1 = LayerScale(width, spec.ls_init_value) if spec.ls_init_value is not None else nn.Identity()
        self.ln_2 = spec.norm(width)
        inner = spec.norm(spec.mlp_hidden) if spec.scale_fc else None
        self.mlp: nn.Module = (SwiGLU(width, spec.mlp_hidden, inner) if spec.mlp_type == "swiglu"
                               else Mlp(width, spec.mlp_hidden, spec.act, inner))
        self.ls_2 = LayerScale(width, spec.ls_init_value) if spec.ls_init_value is not None else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        rope: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.ls_1(self.attn(self.ln_1(x), attn_mask=attn_mask, is_causal=is_causal, rope=rope))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, spec: BlockSpec):
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList([ResidualBlock(width, spec) for _ in range(layers)])
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # OpenAI's init: std scaled by width and, for the residual projections, by depth.
        n = len(self.resblocks)
        proj_std = (self.width**-0.5) * ((2 * max(n, 1)) ** -0.5)
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            if isinstance(block.mlp, SwiGLU):
                nn.init.normal_(block.mlp.c_fc_gate.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        return_hidden: int | None = None,
        rope: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run all blocks; with ``return_hidden=i`` also return the output of block ``i`` (negative counts from the end)."""
        want = None if return_hidden is None else return_hidden % len(self.resblocks)
        hidden = None
        for i, block in enumerate(self.resblocks):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, attn_mask, is_causal, rope, use_reentrant=False)
            else:
                x = block(x, attn_mask=attn_mask, is_causal=is_causal, rope=rope)
            if i == want:
                hidden = x
        return x if return_hidden is None else (x, hidden)  # type: ignore[return-value]
