"""Clip: an image tower and a text tower projected into one embedding space, plus the learnable temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import QuickGELU
from .config import ClipConfig
from .text import TextTransformer
from .vision import ModifiedResNet, VisionTransformer

LOGIT_SCALE_MAX = 100.0


class Clip(nn.Module):
    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        act: type[nn.Module] = QuickGELU if config.quick_gelu else nn.GELU
        vcfg = config.vision_cfg
        self.visual: nn.Module = (
            ModifiedResNet(vcfg, config.embed_dim) if vcfg.is_resnet else VisionTransformer(vcfg, config.embed_dim, act)
        )
        self.text = TextTransformer(config.text_cfg, config.embed_dim, act)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(config.init_logit_bias))) if config.init_logit_bias is not None else None
        )

    @property
    def image_size(self) -> int:
        return self.config.vision_cfg.image_size

    @property
    def context_length(self) -> int:
        return self.config.text_cfg.context_length

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(
        self,
        tokens: torch.Tensor,
        normalize: bool = False,
        return_tokens: bool = False,
        token_layer: int = -1,
        token_norm: bool = True,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Text features; ``return_tokens=True`` returns ``(features, token_states)`` where token_states
        are the ``[B, L, width]`` hidden states diffusion models condition on: ``token_layer=-1`` with
        ``token_norm=True`` is Stable Diffusion 1.x, ``-2``/``True`` is SD 2.x, ``-2``/``False`` is SDXL."""
        if return_tokens:
            features, states = self.text(tokens, return_tokens=True, token_layer=token_layer, token_norm=token_norm)
            return (F.normalize(features, dim=-1) if normalize else features), states
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Normalised image and text features and the temperature, clamped at 100 as CLIP trains it."""
        image_features = self.encode_image(images, normalize=True) if images is not None else None
        text_features = self.encode_text(tokens, normalize=True) if tokens is not None else None
        return image_features, text_features, self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable
