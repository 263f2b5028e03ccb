"""The text tower: a causal transformer over BPE tokens, pooled at the end-of-text token."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import LayerNorm, Transformer
from .config import TextConfig


class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, output_dim: int, act: type[nn.Module]):
        super().__init__()
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, act, cfg.ls_init_value)
        self.ln_final = LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, output_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.width**-0.5)

    def forward(
        self, tokens: torch.Tensor, return_tokens: bool = False, token_layer: int = -1, token_norm: bool = True
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pooled, projected features; with ``return_tokens`` also the per-token hidden states of
        ``token_layer`` (-1 last, -2 penultimate), passed through ``ln_final`` when ``token_norm``."""
        if tokens.shape[-1] > self.context_length:
            raise ValueError(f"token sequence length {tokens.shape[-1]} exceeds context_length {self.context_length}")
        if not return_tokens:
            # Causal attention: columns after the last end-of-text token cannot change the pooled output,
            # so all-padding tail columns are dropped (a 10-token caption no longer pays for 77).
            used = int(tokens.argmax(dim=-1).max()) + 1 if tokens.numel() else tokens.shape[-1]
            tokens = tokens[:, :used]
        n = tokens.shape[-1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n].to(self.token_embedding.weight.dtype)
        if return_tokens:
            x, hidden = self.transformer(x, is_causal=True, return_hidden=token_layer)
        else:
            x = self.transformer(x, is_causal=True)
        x = self.ln_final(x)
        # The end-of-text token has the largest id, so argmax finds it (OpenAI's convention).
        pooled = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection
        if not return_tokens:
            return pooled
        return pooled, (self.ln_final(hidden) if token_norm else hidden)
