"""Hugging Face ``MetaClip2Model`` (Meta's MetaCLIP 2, "worldwide"): the CLIP architecture, read with ``hf``'s table.

What differs from ``CLIPModel``: the text is pooled at the *first* ``eos_token_id`` (2 in the released weights,
XLM-V's ``</s>``) rather than at the highest token id, and the tokenizer is the one the directory ships (XLM-V,
or mT5 for the ViT-L/14 model), not CLIP's BPE.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..model.config import ClipConfig
from ..text.hf_dir import tokenizer_config_for_dir
from . import hf


def config_from_hf(hf_cfg: dict[str, Any], directory: str | Path) -> ClipConfig:
    cfg = hf.config_from_hf(hf_cfg, directory)
    text = hf_cfg.get("text_config") or {}
    eos = text.get("eos_token_id", 49407)  # MetaClip2TextConfig's default; the released configs say 2
    if not isinstance(eos, int):
        raise CheckpointError(f"{Path(directory) / 'config.json'}: text_config.eos_token_id must be one integer, "
                              f"got {eos!r}")
    return dataclasses.replace(
        cfg,
        text_cfg=dataclasses.replace(cfg.text_cfg, pool_type="eos", eos_id=eos),
        tokenizer_cfg=tokenizer_config_for_dir(directory),
    )


def to_native(sd: dict[str, torch.Tensor], cfg: ClipConfig | None = None) -> dict[str, torch.Tensor]:
    return hf.to_native(sd, cfg)
