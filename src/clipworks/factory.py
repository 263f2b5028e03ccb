"""Build models the way open_clip users expect: by config name, optionally with a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from .checkpoints import load_checkpoint
from .hf_tokenizer import HFTokenizer, shared_hf_tokenizer, tokenizer_dir
from .model import Clip, ClipConfig, get_model_config
from .tokenizer import ClipTokenizer, _shared_tokenizer
from .transforms import ImageTransform, image_transform

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _is_path(name: str) -> bool:
    return Path(name).exists() or "/" in name or name.endswith((".pt", ".bin", ".safetensors", ".json"))


def create_model(
    name: str | ClipConfig,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
) -> Clip:
    """A model from a config name ("ViT-B-32", "RN50-quickgelu", …), a ClipConfig, or a checkpoint path.

    With ``checkpoint``, ``name`` is the config the weights are read into; without, weights are random.
    """
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
    if isinstance(name, str) and _is_path(name):
        if checkpoint is not None:
            raise ValueError("pass either a checkpoint path as name, or a config name with checkpoint=, not both paths")
        model = load_checkpoint(name)
    elif checkpoint is not None:
        model = load_checkpoint(checkpoint, config=name)
    else:
        model = Clip(name if isinstance(name, ClipConfig) else get_model_config(name)).eval()
    return model.to(device=device, dtype=_DTYPES[precision])


def create_model_and_transforms(
    name: str | ClipConfig,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
) -> tuple[Clip, ImageTransform]:
    """(model, eval preprocess) — ``preprocess(pil_image)`` gives the tensor ``model.encode_image`` takes."""
    model = create_model(name, checkpoint, device, precision)
    return model, image_transform(model.image_size)


def get_tokenizer(name: str | ClipConfig | None = None) -> ClipTokenizer | HFTokenizer:
    """The tokenizer of model ``name`` at its context length: CLIP's BPE (77 tokens when no model is
    given), or for a Hugging Face text tower the tokenizer.json of its directory."""
    if name is None:
        return _shared_tokenizer(77)
    if isinstance(name, ClipConfig):
        config = name
    elif _is_path(name):
        from .checkpoints import load_state

        config = load_state(name)[0]
    else:
        config = get_model_config(name)
    text = config.text_cfg
    if text.is_hf:
        return shared_hf_tokenizer(str(tokenizer_dir(text)), text.context_length)
    return _shared_tokenizer(text.context_length)
