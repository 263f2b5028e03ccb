"""The text transformer tower: token + position embeddings → blocks → ln_final → pool → projection.

OpenAI's is causal and pooled at the end-of-text token (the highest id, found by argmax). The other families
change two switches: SigLIP and MobileCLIP attend bidirectionally (``no_causal_mask``); SigLIP pools the last
position of its max-length padded input (``last``), MetaCLIP 2 the first ``eos_id`` (``eos``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import BlockSpec, LayerNorm, Transformer, make_act
from ..config import TextConfig, mlp_hidden
from .base import Part, TextTower


class TextTransformer(TextTower):
    def __init__(self, cfg: TextConfig, output_dim: int, quick_gelu: bool = False):
        super().__init__()
        spec = BlockSpec(
            heads=cfg.heads,
            mlp_hidden=mlp_hidden(cfg.width, cfg.mlp_ratio),
            act=make_act(quick_gelu, cfg.act_kwargs),
            ls_init_value=cfg.ls_init_value,
            norm_eps=(cfg.norm_kwargs or {}).get("eps", 1e-5),
        )
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.causal = not cfg.no_causal_mask
        self.pool_type = cfg.pool_type
        self.eos_id = cfg.eos_id
        self.final_ln_after_pool = cfg.final_ln_after_pool
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, spec)
        self.ln_final = LayerNorm(cfg.width, eps=spec.norm_eps)
        self.output_dim = output_dim if cfg.proj_type != "none" else cfg.width
        self.text_projection: nn.Parameter | nn.Linear | None = None
        if cfg.proj_type == "linear":
            self.text_projection = (nn.Linear(cfg.width, output_dim) if cfg.proj_bias
                                    else nn.Parameter(torch.empty(cfg.width, output_dim)))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.text_projection, nn.Parameter):
            nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def blocks(self) -> list[nn.Module]:
        return list(self.transformer.resblocks)

    def head_parts(self) -> list[Part]:
        return [p for p in (self.ln_final, self.text_projection) if p is not None]

    def no_weight_decay(self) -> set[str]:
        return {"token_embedding.weight", "positional_embedding"}

    def _pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "argmax":  # the end-of-text token has the largest id (OpenAI's convention)
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":  # the first end token; a row without one pools at position 0
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "last":
            return torch.full(tokens.shape[:1], tokens.shape[-1] - 1, dtype=torch.long, device=tokens.device)
        return torch.zeros(tokens.shape[:1], dtype=torch.long, device=tokens.device)

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor | None:
        # Causal attention pooled at or before the end token: later columns cannot reach the pooled state.
        if not self.causal or self.pool_type not in ("argmax", "eos", "first"):
            return None
        return self._pool_index(tokens) + 1

    def _check(self, tokens: torch.Tensor) -> None:
        if tokens.shape[-1] > self.context_length:
            raise ValueError(f"token sequence length {tokens.shape[-1]} exceeds context_length {self.context_length}")

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[-1]
        return self.token_embedding(tokens) + self.positional_embedding[:n].to(self.token_embedding.weight.dtype)

    def _project(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # ln_final works token by token, so pooling first gives the same numbers for one row instead of L
        pooled = self.ln_final(x[torch.arange(x.shape[0], device=x.device), self._pool_index(tokens)])
        if isinstance(self.text_projection, nn.Parameter):
            return pooled @ self.text_projection
        return self.text_projection(pooled) if self.text_projection is not None else pooled

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self._check(tokens)
        x = self.transformer(self._embed(tokens), is_causal=self.causal)
        return self._project(x, tokens)

    def token_states(self, tokens: torch.Tensor, layer: int = -1, norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features and the hidden states of block ``layer`` (-1 last, -2 penultimate), through ``ln_final``
        when ``norm``: Stable Diffusion 1.x conditions on (-1, True), 2.x on (-2, True), SDXL on (-2, False)."""
        self._check(tokens)
        x, hidden = self.transformer(self._embed(tokens), is_causal=self.causal, return_hidden=layer)
        return self._project(x, tokens), (self.ln_final(hidden) if norm else hidden)
