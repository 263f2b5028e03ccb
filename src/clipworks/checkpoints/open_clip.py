"""open_clip's model configs and state dicts, whatever towers they hold.

open_clip builds SigLIP's and EVA-02's image towers with timm (``timm_model_name``); clipworks builds them with
its own block. ``TIMM_NATIVE`` lists the timm models it expresses: their config becomes our ViT fields and their
``visual.trunk.*`` weights our names (each family's module holds its table of names). Any other timm backbone
(ConvNeXt, FastViT/MCi, …) stays a timm tower and keeps open_clip's names. Text towers: the OpenAI layout keeps
the text keys at the top level (ours under ``text.``); ``custom_text`` models already use ``text.``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from ..model.config import ClipConfig
from . import openai

# The modules whose ``TIMM_MODELS`` map timm model names to our ViT fields, and whose ``timm_to_native`` maps
# that trunk's keys. Each family registers itself here with its module name.
TIMM_FAMILIES = ("timm_siglip", "timm_eva")


def _timm_families() -> list[Any]:
    out = []
    for name in TIMM_FAMILIES:
        try:
            out.append(importlib.import_module(f"{__package__}.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise
    return out


def native_vision_fields(timm_model_name: str) -> dict[str, Any] | None:
    """Our ViT fields for a timm model clipworks implements natively, or None to keep it a timm tower."""
    for family in _timm_families():
        fields = family.TIMM_MODELS.get(timm_model_name)
        if fields is not None:
            return dict(fields)
    return None


def translate_model_cfg(model_cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """open_clip's ``model_cfg`` with natively implemented timm towers rewritten as our ViT fields."""
    model_cfg = dict(model_cfg)
    vision = dict(model_cfg.get("vision_cfg") or {})
    name = vision.get("timm_model_name")
    fields = native_vision_fields(name) if name else None
    if fields is not None:
        pool, proj = vision.pop("timm_pool", "avg"), vision.pop("timm_proj", "linear")
        proj_bias = vision.pop("timm_proj_bias", False)
        for key in ("timm_model_name", "timm_model_pretrained", "timm_drop", "timm_drop_path"):
            vision.pop(key, None)
        size = vision.get("image_size", fields.get("image_size"))
        if "image_size" in fields and (size[0] if isinstance(size, (list, tuple)) else size) != fields["image_size"]:
            # open_clip builds the trunk at the size its name says; another image_size fails at its first forward.
            raise ConfigError(f"{where}: vision_cfg.image_size {size} differs from timm's {name} "
                              f"({fields['image_size']}), the size open_clip builds it at")
        if proj in ("linear", "mlp") or pool in ("abs_attn", "rot_attn"):
            raise ConfigError(f"{where}: timm tower {name} with timm_pool={pool!r}, timm_proj={proj!r} is not supported "
                              "natively")
        # timm_proj None/'' means timm's classifier head is the projection (a biased Linear to embed_dim);
        # 'none' means the pooled state is the feature.
        fields.update(proj_type="none" if proj == "none" else "linear", proj_bias=proj != "none" or proj_bias)
        if pool == "token":
            fields["pool_type"] = "tok"
        elif pool == "map":
            fields["pool_type"] = "map"
        elif pool == "avg":
            fields["pool_type"] = "avg"
        vision = {**fields, **{k: v for k, v in vision.items() if k in ("image_size", "patch_dropout")}}
        model_cfg["vision_cfg"] = vision
    return model_cfg


def config_from_open_clip(data: dict[str, Any], where: str) -> ClipConfig:
    """A config from an open_clip hub ``open_clip_config.json`` ({model_cfg, preprocess_cfg}) or a bare model config."""
    model_cfg = data.get("model_cfg", data) if isinstance(data, dict) else data
    if not isinstance(model_cfg, dict):
        raise ConfigError(f"{where}: model_cfg must be a JSON object")
    preprocess = dict(data.get("preprocess_cfg") or {}) if "model_cfg" in data else {}
    try:
        cfg = translate_model_cfg(model_cfg, where)
        return ClipConfig.from_open_clip({**cfg, "preprocess_cfg": {**cfg.get("preprocess_cfg", {}), **preprocess}}, where)
    except ConfigError as e:
        raise CheckpointError(str(e)) from e


def to_native(sd: dict[str, torch.Tensor], cfg: ClipConfig) -> dict[str, torch.Tensor]:
    """Our names for an OpenAI / open_clip state dict of the model ``cfg`` describes."""
    sd = openai.to_native(sd) if openai.is_openai_layout(sd) else dict(sd)
    if cfg.vision_cfg.kind == "vit" and any(k.startswith("visual.trunk.") for k in sd):
        for family in _timm_families():
            if family.owns(cfg.vision_cfg):
                trunk = {k[len("visual.trunk."):]: sd.pop(k) for k in list(sd) if k.startswith("visual.trunk.")}
                sd.update({"visual." + k: v for k, v in family.timm_to_native(trunk, cfg.vision_cfg).items()})
                break
        else:
            raise CheckpointError("the state dict holds a timm image tower (visual.trunk.*) that clipworks builds "
                                  "natively, but no family claims this vision config")
    return sd
