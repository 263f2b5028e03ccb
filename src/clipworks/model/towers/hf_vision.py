"""An image tower wrapping a Hugging Face vision encoder: ALIGN's EfficientNet, or any ``transformers`` vision model
whose output has a ``pooler_output``.

The encoder is built from its config (``vision_cfg.hf_config``, or the config.json of ``hf_model_name``: a local
directory or a Hub repo id) and filled from a checkpoint. Its pooled output is the image feature — ALIGN uses it
as the embedding as it is (``hf_proj_type: none``) — or is projected by a Linear (``linear``). Parameter names:
``trunk.*`` (the transformers model, its own names below that) and ``proj``.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ConfigError, VisionConfig
from . import hf_encoder
from .base import Part, Tower

_WHAT = "a Hugging Face image tower (vision_cfg.hf_model_name / hf_config)"
_FIELD = "vision_cfg.hf_model_name"


def _checkpointed_forward(block: nn.Module, *args, **kwargs):
    """``block``'s own forward, its activations recomputed in the backward pass while training.

    Used instead of transformers' switch, which many vision models lack (ALIGN's does). BatchNorm running
    statistics are updated again by the recomputation, as with any activation checkpointing of a BatchNorm net.
    """
    forward = type(block).forward
    if block.training and torch.is_grad_enabled():
        return checkpoint(forward, block, *args, use_reentrant=False, **kwargs)
    return forward(block, *args, **kwargs)


class HFVisionTower(Tower):
    """``forward(images[B, 3, H, W]) -> [B, output_dim]``: the encoder's pooled output, projected or not."""

    def __init__(self, cfg: VisionConfig, output_dim: int, quick_gelu: bool = False):
        super().__init__()
        name = cfg.hf_model_name
        if cfg.hf_config is not None:
            self.hf_config = cfg.hf_config
        elif name is not None:
            self.hf_config = hf_encoder.resolve_config(name, _FIELD)
        else:
            raise ConfigError("HFVisionTower needs vision_cfg.hf_model_name or vision_cfg.hf_config")
        if "model_type" not in self.hf_config:
            raise ConfigError(f"vision_cfg.hf_config of {name or 'the model'} has no 'model_type'")
        pretrained = cfg.hf_model_pretrained  # off whenever a checkpoint fills the weights (ClipConfig.for_checkpoint)
        self.trunk = hf_encoder.build(self.hf_config, name, pretrained, _WHAT, _FIELD)
        width = hf_encoder.output_width(self.trunk)
        if cfg.hf_proj_type == "linear":
            self.proj: nn.Module = nn.Linear(width, output_dim, bias=cfg.proj_bias)
            self.output_dim = output_dim
        else:
            self.proj = nn.Identity()
            self.output_dim = width

    def blocks(self) -> list[nn.Module]:
        return list(hf_encoder.find_blocks(self.trunk))

    def head_parts(self) -> list[Part]:
        # What the encoder registers after its last block (a top convolution, a final norm) and our projection.
        return [*hf_encoder.params_after(self.trunk, hf_encoder.find_blocks(self.trunk)), self.proj]

    def set_grad_checkpointing(self, enable: bool) -> None:
        for block in self.blocks():
            if enable:
                block.forward = functools.partial(_checkpointed_forward, block)
            else:
                block.__dict__.pop("forward", None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(pixel_values=images).pooler_output)
