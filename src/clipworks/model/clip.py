"""Clip: an image tower and a text tower projected into one embedding space, plus the learnable temperature."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import QuickGELU
from .config import ClipConfig
from .hf_text import HFTextTower
from .lock import lock_tower
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
        tcfg = config.text_cfg
        self.text: nn.Module = (
            HFTextTower(tcfg, config.embed_dim) if tcfg.is_hf else TextTransformer(tcfg, config.embed_dim, act)
        )
        if isinstance(self.text, HFTextTower) and tcfg.hf_config is None:
            # Record the encoder's architecture so a saved model rebuilds without its source directory;
            # a copy, so the caller's config still means "read the weights from the directory".
            self.config = dataclasses.replace(config, text_cfg=dataclasses.replace(tcfg, hf_config=self.text.hf_config))
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
            if not isinstance(self.text, TextTransformer):
                raise NotImplementedError(
                    "return_tokens needs the native text transformer; "
                    "a Hugging Face text tower returns pooled features only"
                )
            features, states = self.text(tokens, return_tokens=True, token_layer=token_layer, token_norm=token_norm)
            return (F.normalize(features, dim=-1) if normalize else features), states
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, ...]:
        """Normalised image and text features and the temperature (clamped at 100 as CLIP trains it),
        plus ``logit_bias`` when the model has one (SigLIP), as open_clip returns them.

        Repeated captions in a batch (templates, several images per caption) run through the text tower
        once and are gathered back: the same features and, through the gather, the same gradients.
        """
        image_features = self.encode_image(images, normalize=True) if images is not None else None
        text_features = None
        if tokens is not None:
            unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
            if len(unique) < len(tokens):
                text_features = self.encode_text(unique, normalize=True)[inverse]
            else:
                text_features = self.encode_text(tokens, normalize=True)
        scale = self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)
        if self.logit_bias is not None:
            return image_features, text_features, scale, self.logit_bias
        return image_features, text_features, scale

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """LiT: freeze the image tower except its last ``unlocked_groups`` blocks (ViT blocks or ResNet
        stages) with the final norm and projection; ``freeze_bn_stats`` also stops BatchNorm statistics."""
        lock_tower(self.visual, unlocked_groups, freeze_bn_stats=freeze_bn_stats)

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the text tower except its last ``unlocked_layers`` blocks with the final norm and
        projection; ``freeze_layer_norm=False`` leaves every LayerNorm trainable."""
        lock_tower(self.text, unlocked_layers, freeze_norms=freeze_layer_norm)

    def train(self, mode: bool = True) -> Clip:
        """As ``nn.Module.train``, but BatchNorms locked with ``freeze_bn_stats`` stay in eval mode."""
        super().train(mode)
        for module in self.modules():
            if getattr(module, "stats_frozen", False):
                module.eval()
        return self
