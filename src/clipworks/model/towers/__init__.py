"""Towers by kind: the config says which (``VisionConfig.kind``, ``TextConfig.kind``), this table says where.

Modules load on first use, so a timm or transformers tower costs nothing to a model that does not have one.
"""

from __future__ import annotations

import importlib

from ..config import ClipConfig
from .base import Part, TextTower, Tower

VISION_TOWERS = {
    "vit": "vit:VisionTransformer",
    "resnet": "resnet:ModifiedResNet",
    "timm": "timm_vision:TimmVisionTower",
    "hf": "hf_vision:HFVisionTower",
}
TEXT_TOWERS = {
    "transformer": "text:TextTransformer",
    "hf": "hf_text:HFTextTower",
}


def _load(table: dict[str, str], kind: str) -> type:
    module, cls = table[kind].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def build_vision_tower(config: ClipConfig) -> Tower:
    return _load(VISION_TOWERS, config.vision_cfg.kind)(config.vision_cfg, config.embed_dim, config.quick_gelu)


def build_text_tower(config: ClipConfig) -> TextTower:
    return _load(TEXT_TOWERS, config.text_cfg.kind)(config.text_cfg, config.embed_dim, config.quick_gelu)


__all__ = ["Part", "TextTower", "Tower", "build_text_tower", "build_vision_tower"]
