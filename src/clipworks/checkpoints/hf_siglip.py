"""Hugging Face ``SiglipModel`` directories: SigLIP, and fixed-resolution SigLIP 2 (google/siglip2-*-patch16-224 …),
which transformers also stores as ``model_type: "siglip"``.

The towers are our ViT and text transformer with SigLIP's switches: no class token or pre-norm, a biased patch
convolution, the attention-pool (MAP) head and no projection on the image side; bidirectional attention pooled at
the last position and a biased ``head`` Linear on the text side; a learned ``logit_bias``. The encoder layers have
CLIP's names, so ``checkpoints.hf`` maps them; this module adds the SigLIP-only keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..constants import INCEPTION_MEAN, INCEPTION_STD
from ..errors import CheckpointError
from ..model.config import ClipConfig, PreprocessConfig, TextConfig, VisionConfig
from ..text.hf_dir import tokenizer_config_for_dir
from . import hf

# transformers' defaults (SiglipTextConfig, SiglipVisionConfig) for fields a config.json may leave out.
_TEXT_DEFAULTS = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                  "num_attention_heads": 12, "max_position_embeddings": 64, "hidden_act": "gelu_pytorch_tanh",
                  "layer_norm_eps": 1e-6}
_VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh",
                    "layer_norm_eps": 1e-6, "vision_use_head": True}
# hidden_act → our act_kwargs (nn.GELU's arguments).
_ACTS: dict[str, dict[str, str] | None] = {"gelu_pytorch_tanh": {"approximate": "tanh"}, "gelu": None}
# SiglipImageProcessor's defaults: squash to the tower's size, bicubic, mean = std = 0.5.
_PREPROCESS: dict[str, Any] = {"mean": INCEPTION_MEAN, "std": INCEPTION_STD, "interpolation": "bicubic",
                               "resize_mode": "squash"}

# (hf, native) names beyond CLIPModel's, which ``hf.to_native`` maps.
_SIGLIP_KEYS = [
    ("vision_model.embeddings.patch_embedding.bias", "visual.conv1.bias"),
    ("vision_model.head.probe", "visual.attn_pool.probe"),
    ("vision_model.head.attention.in_proj_weight", "visual.attn_pool.in_proj_weight"),
    ("vision_model.head.attention.in_proj_bias", "visual.attn_pool.in_proj_bias"),
    *[(f"vision_model.head.{a}.{s}", f"visual.attn_pool.{b}.{s}") for a, b in (
        ("attention.out_proj", "out_proj"), ("layernorm", "ln"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))
      for s in ("weight", "bias")],
    ("text_model.head.weight", "text.text_projection.weight"),
    ("text_model.head.bias", "text.text_projection.bias"),
]
_FIXED_KEYS = [
    "logit_scale", "logit_bias",
    "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
    "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias",
    "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
    "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias",
]
_LAYER_KEYS = [f"{m}.{s}" for m in ("layer_norm1", "layer_norm2", "self_attn.q_proj", "self_attn.k_proj",
                                    "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
               for s in ("weight", "bias")]


def _square(value: Any, name: str, source: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise CheckpointError(f"{source}: vision_config.{name}={list(value)} is not square; clipworks reads "
                                  "square fixed-resolution SigLIP")
        value = value[0]
    return int(value)


def _act(cfg: dict[str, Any], tower: str, source: str) -> dict[str, str] | None:
    if cfg["hidden_act"] not in _ACTS:
        raise CheckpointError(f"{source}: {tower}.hidden_act={cfg['hidden_act']!r} is not supported; clipworks knows "
                              f"{', '.join(_ACTS)}")
    return _ACTS[cfg["hidden_act"]]


def config_from_hf(hf_cfg: dict[str, Any], directory: str | Path) -> ClipConfig:
    source = str(Path(directory) / "config.json")
    t = {**_TEXT_DEFAULTS, **(hf_cfg.get("text_config") or {})}
    v = {**_VISION_DEFAULTS, **(hf_cfg.get("vision_config") or {})}
    if not v["vision_use_head"]:
        raise CheckpointError(f"{source}: vision_config.vision_use_head=false (a SigLIP image encoder without its "
                              "pooling head, as PaliGemma uses) gives no image embedding")
    if int(v["num_channels"]) != 3:
        raise CheckpointError(f"{source}: vision_config.num_channels={v['num_channels']}; clipworks reads RGB (3)")
    width = int(v["hidden_size"])
    projection = int(t.get("projection_size") or t["hidden_size"])
    if projection != width:
        raise CheckpointError(f"{source}: text_config.projection_size ({projection}) differs from the image "
                              f"embedding width, vision_config.hidden_size ({width})")
    image_size = _square(v["image_size"], "image_size", source)
    vision = VisionConfig(
        image_size=image_size,
        patch_size=_square(v["patch_size"], "patch_size", source),
        layers=int(v["num_hidden_layers"]),
        width=width,
        head_width=width // int(v["num_attention_heads"]),
        mlp_ratio=int(v["intermediate_size"]) / width,
        class_token=False,
        no_ln_pre=True,
        patch_bias=True,
        pool_type="map",
        proj_type="none",
        act_kwargs=_act(v, "vision_config", source),
        norm_kwargs={"eps": float(v["layer_norm_eps"])},
    )
    text = TextConfig(
        context_length=int(t["max_position_embeddings"]),
        vocab_size=int(t["vocab_size"]),
        width=int(t["hidden_size"]),
        heads=int(t["num_attention_heads"]),
        layers=int(t["num_hidden_layers"]),
        mlp_ratio=int(t["intermediate_size"]) / int(t["hidden_size"]),
        no_causal_mask=True,
        pool_type="last",
        proj_bias=True,
        act_kwargs=_act(t, "text_config", source),
        norm_kwargs={"eps": float(t["layer_norm_eps"])},
    )
    return ClipConfig(
        embed_dim=width,
        vision_cfg=vision,
        text_cfg=text,
        init_logit_scale=math.log(10.0),  # SigLIP's initialisation; the checkpoint's values replace both
        init_logit_bias=-10.0,
        preprocess_cfg=hf.read_preprocessor(directory, PreprocessConfig(size=image_size, **_PREPROCESS)),
        tokenizer_cfg=tokenizer_config_for_dir(directory),
    )


def to_native(sd: dict[str, torch.Tensor], cfg: ClipConfig) -> dict[str, torch.Tensor]:
    """Our names for a ``SiglipModel`` state dict; a key the model needs and the file lacks is named as the file
    would name it."""
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    layers = [f"{tower}.encoder.layers.{i}.{k}" for tower, n in (("vision_model", cfg.vision_cfg.layers),
                                                                 ("text_model", cfg.text_cfg.layers))
              for i in range(n) for k in _LAYER_KEYS]  # type: ignore[arg-type]
    missing = [k for k in [*_FIXED_KEYS, *(h for h, _ in _SIGLIP_KEYS), *layers] if k not in sd]
    if missing:
        shown = ", ".join(missing[:8]) + (f", … ({len(missing) - 8} more)" if len(missing) > 8 else "")
        raise CheckpointError(f"the SiglipModel weights lack {len(missing)} key(s) the config.json implies: {shown}")
    out = {native: sd.pop(name) for name, native in _SIGLIP_KEYS}
    out.update({name: sd.pop(name).reshape(()) for name in ("logit_scale", "logit_bias")})  # [1] in transformers
    out.update(hf.to_native(sd))
    return out
