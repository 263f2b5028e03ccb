"""Hugging Face ``AlignModel`` (Kakao Brain's ALIGN): an EfficientNet image tower and a BERT text tower.

clipworks wraps transformers' own towers (``HFVisionTower``, ``HFTextTower``), built from the sub-configs embedded
in our config, so the keys are transformers' below a prefix. What ALIGN does differently from CLIP:

- the image embedding is the EfficientNet's pooled output as it is (no projection): ``hf_proj_type: none``;
- the text embedding is BERT's last hidden state at ``[CLS]`` (not BERT's pooler, which is dropped) through a
  biased Linear ``text_projection``;
- logits are cosine / ``temperature``: our ``logit_scale`` is ``log(1 / temperature)``.
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
from .hf import read_preprocessor

CONTEXT_LENGTH = 64  # AlignProcessor pads and truncates captions to 64 tokens
# EfficientNetImageProcessor as ALIGN's conversion script sets it up: squash to 346, crop 289, x / 127.5 - 1.
PREPROCESS = PreprocessConfig(size=289, resize_size=346, resize_mode="squash", interpolation="bilinear",
                              mean=INCEPTION_MEAN, std=INCEPTION_STD)
# (hf prefix, native prefix); the rest of each key is transformers' own.
_PREFIXES = (("vision_model.", "visual.trunk."), ("text_model.", "text.transformer."), ("text_projection.", "text.proj."))
_DROPPED = ("text_model.pooler.", "text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")


def config_from_hf(hf: dict[str, Any], directory: str | Path) -> ClipConfig:
    source = str(Path(directory) / "config.json")
    text, vision = hf.get("text_config"), hf.get("vision_config")
    if not isinstance(text, dict) or not isinstance(vision, dict):
        raise CheckpointError(f"{source}: an AlignModel config needs text_config and vision_config objects")
    text = {"model_type": "align_text_model", **text}
    vision = {"model_type": "align_vision_model", **vision}
    temperature = float(hf.get("temperature_init_value", 1.0))
    if temperature <= 0:
        raise CheckpointError(f"{source}: temperature_init_value must be positive, got {temperature}")
    preprocess = read_preprocessor(directory, PREPROCESS)
    return ClipConfig(
        embed_dim=int(hf.get("projection_dim", 640)),
        vision_cfg=VisionConfig(image_size=int(preprocess.size or vision.get("image_size", 600)),
                                hf_model_name=str(directory), hf_config=vision, hf_proj_type="none"),
        text_cfg=TextConfig(context_length=min(CONTEXT_LENGTH, int(text.get("max_position_embeddings", 512))),
                            hf_model_name=str(directory), hf_config=text, hf_pooler_type="cls",
                            hf_proj_type="linear", hf_proj_bias=True),
        init_logit_scale=math.log(1 / temperature),
        preprocess_cfg=preprocess,
        tokenizer_cfg=tokenizer_config_for_dir(directory),
    )


def to_native(sd: dict[str, torch.Tensor], cfg: ClipConfig | None = None) -> dict[str, torch.Tensor]:
    """Our names for an AlignModel state dict; keys of no known part are kept so the strict loader names them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(_DROPPED):
            continue
        if key == "temperature":
            out["logit_scale"] = -torch.log(value.float())
            continue
        for hf_prefix, native in _PREFIXES:
            if key.startswith(hf_prefix):
                out[native + key[len(hf_prefix):]] = value
                break
        else:
            out[key] = value
    return out
