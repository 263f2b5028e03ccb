"""Hugging Face ``CLIPModel`` layout: per-projection attention weights, transposed projections, its own names.

One table of name pairs serves both directions; fused ``in_proj`` weights are split into q/k/v on
the way out and concatenated on the way in. ResNet image towers have no HF ``CLIPModel`` form.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..model.config import ClipConfig, TextConfig, VisionConfig
from .errors import CheckpointError

# (native, hf) name pairs; {p} is the tower prefix pair filled in below.
_BLOCK = [
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("attn.out_proj", "self_attn.out_proj"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
]
_FIXED = [
    ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
    ("visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
    ("visual.ln_pre.bias", "vision_model.pre_layrnorm.bias"),
    ("visual.ln_post.weight", "vision_model.post_layernorm.weight"),
    ("visual.ln_post.bias", "vision_model.post_layernorm.bias"),
    ("text.token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("text.positional_embedding", "text_model.embeddings.position_embedding.weight"),
    ("text.ln_final.weight", "text_model.final_layer_norm.weight"),
    ("text.ln_final.bias", "text_model.final_layer_norm.bias"),
    ("logit_scale", "logit_scale"),
]
_TRANSPOSED = [("visual.proj", "visual_projection.weight"), ("text.text_projection", "text_projection.weight")]
_TOWERS = [("visual.transformer.resblocks", "vision_model.encoder.layers"), ("text.transformer.resblocks", "text_model.encoder.layers")]
_IGNORED_HF = re.compile(r".*position_ids$")


def is_hf_layout(sd: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("text_model.", "vision_model.")) for k in sd)


def _layer_ids(keys: Any, prefix: str) -> list[str]:
    return sorted({k[len(prefix) + 1 :].split(".")[0] for k in keys if k.startswith(prefix + ".")}, key=int)


def to_native(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sd = {k: v for k, v in sd.items() if not _IGNORED_HF.match(k)}
    out: dict[str, torch.Tensor] = {}
    for native, hf in _FIXED:
        if hf in sd:
            out[native] = sd.pop(hf)
    for native, hf in _TRANSPOSED:
        if hf in sd:
            out[native] = sd.pop(hf).t().contiguous()
    for native_prefix, hf_prefix in _TOWERS:
        for i in _layer_ids(list(sd), hf_prefix):
            n, h = f"{native_prefix}.{i}", f"{hf_prefix}.{i}"
            for suffix in ("weight", "bias"):
                qkv = [sd.pop(f"{h}.self_attn.{p}_proj.{suffix}", None) for p in "qkv"]
                if all(t is not None for t in qkv):
                    out[f"{n}.attn.in_proj_{suffix}"] = torch.cat(qkv, dim=0)  # type: ignore[arg-type]
                for nat, hfn in _BLOCK:
                    if f"{h}.{hfn}.{suffix}" in sd:
                        out[f"{n}.{nat}.{suffix}"] = sd.pop(f"{h}.{hfn}.{suffix}")
    out.update(sd)  # anything left is unexpected; the strict loader names it
    return out


def from_native(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "visual.attnpool.positional_embedding" in sd:
        raise CheckpointError("a ResNet image tower has no Hugging Face CLIPModel form; export it as native instead")
    if "logit_bias" in sd or any(".ls_1." in k for k in sd):
        raise CheckpointError("Hugging Face CLIPModel has no logit_bias or LayerScale; export this model as native")
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {}
    for native, hf in _FIXED:
        out[hf] = sd.pop(native)
    for native, hf in _TRANSPOSED:
        out[hf] = sd.pop(native).t().contiguous()
    for native_prefix, hf_prefix in _TOWERS:
        for i in _layer_ids(list(sd), native_prefix):
            n, h = f"{native_prefix}.{i}", f"{hf_prefix}.{i}"
            for suffix in ("weight", "bias"):
                for p, t in zip("qkv", sd.pop(f"{n}.attn.in_proj_{suffix}").chunk(3, dim=0)):
                    out[f"{h}.self_attn.{p}_proj.{suffix}"] = t.contiguous()
                for nat, hfn in _BLOCK:
                    out[f"{h}.{hfn}.{suffix}"] = sd.pop(f"{n}.{nat}.{suffix}")
    if sd:
        raise CheckpointError(f"no Hugging Face name for: {', '.join(sorted(sd))}")
    return out


# transformers' defaults for fields its save_pretrained may leave out of config.json.
_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_ACTS = {"quick_gelu": True, "gelu": False}


def config_from_hf(hf: dict[str, Any], source: str) -> ClipConfig:
    t = {**_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    v = {**_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    acts = {t["hidden_act"], v["hidden_act"]}
    if not acts <= set(_ACTS) or len(acts) != 1:
        raise CheckpointError(f"{source}: hidden_act {sorted(acts)} not supported; clipworks knows {sorted(_ACTS)}, one for both towers")
    for name, cfg in (("text_config", t), ("vision_config", v)):
        if abs(float(cfg["layer_norm_eps"]) - 1e-5) > 1e-12:
            raise CheckpointError(f"{source}: {name}.layer_norm_eps={cfg['layer_norm_eps']} not supported (CLIP uses 1e-5)")
    return ClipConfig(
        embed_dim=int(hf.get("projection_dim", 512)),
        vision_cfg=VisionConfig(
            image_size=v["image_size"],
            layers=v["num_hidden_layers"],
            width=v["hidden_size"],
            head_width=v["hidden_size"] // v["num_attention_heads"],
            mlp_ratio=v["intermediate_size"] / v["hidden_size"],
            patch_size=v["patch_size"],
        ),
        text_cfg=TextConfig(
            context_length=t["max_position_embeddings"],
            vocab_size=t["vocab_size"],
            width=t["hidden_size"],
            heads=t["num_attention_heads"],
            layers=t["num_hidden_layers"],
            mlp_ratio=t["intermediate_size"] / t["hidden_size"],
        ),
        quick_gelu=_ACTS[t["hidden_act"]],
        init_logit_scale=float(hf.get("logit_scale_init_value", 2.6592)),
    )


def config_to_hf(config: ClipConfig) -> dict[str, Any]:
    v, t = config.vision_cfg, config.text_cfg
    if t.is_hf:
        raise CheckpointError(
            f"a Hugging Face text tower ({t.hf_model_name}) has no CLIPModel form, whose text model is "
            "CLIP's own transformer; export it as native instead"
        )
    if v.is_resnet:
        raise CheckpointError("a ResNet image tower has no Hugging Face CLIPModel form; export it as native instead")
    act = "quick_gelu" if config.quick_gelu else "gelu"
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "torch_dtype": "float32",
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": t.vocab_size,
            "hidden_size": t.width,
            "intermediate_size": int(t.width * t.mlp_ratio),
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
            "projection_dim": config.embed_dim,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": v.width,
            "intermediate_size": int(v.width * v.mlp_ratio),
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": 3,
            "hidden_act": act,
            "layer_norm_eps": 1e-5,
            "projection_dim": config.embed_dim,
        },
    }
