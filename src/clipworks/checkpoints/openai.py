"""OpenAI / open_clip state-dict layout: the text tower's keys sit at the top level, the image tower under ``visual.``.

Native keys put the text tower under ``text.``; the map is that one prefix, in both directions.
The architecture of a bare state dict is read off its tensor shapes, as OpenAI's ``build_model`` does.
"""

from __future__ import annotations

import math

import torch

from ..model.config import ClipConfig, TextConfig, VisionConfig
from .errors import CheckpointError

_TEXT_ROOTS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_TOP = ("logit_scale", "logit_bias")


def is_openai_layout(sd: dict[str, torch.Tensor]) -> bool:
    return "token_embedding.weight" in sd and any(k.startswith("visual.") for k in sd)


def to_native(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if key.startswith("visual.") or key in _TOP:
            out[key] = value
        elif key.startswith(_TEXT_ROOTS):
            out["text." + key] = value
        elif key == "attn_mask":
            continue  # a causal mask older writers saved; the model builds its own
        else:
            out[key] = value  # left for the strict loader to report as unexpected
    return out


def from_native(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("text."): v for k, v in sd.items()}


def _count(sd: dict[str, torch.Tensor], prefix: str, index: int) -> int:
    return len({k.split(".")[index] for k in sd if k.startswith(prefix)})


# Head widths of the released image towers that are not 64 wide: ViT-H (1280 → 80), ViT-g (1408 → 88),
# ViT-bigG (1664 → 104). Shapes alone cannot tell heads apart; these widths are unambiguous among releases.
_VIT_HEAD_WIDTHS = {1280: 80, 1408: 88, 1664: 104}


def _vit_head_width(width: int) -> int:
    return _VIT_HEAD_WIDTHS.get(width, 64 if width % 64 == 0 else width)


def infer_config(sd: dict[str, torch.Tensor], quick_gelu: bool, source: str) -> ClipConfig:
    """Architecture from tensor shapes (OpenAI layout). Head counts follow the released models: 64-wide heads
    except ViT-H/g/bigG image towers (80, 88, 104); pass an explicit config for anything else."""
    try:
        embed_dim = sd["text_projection"].shape[1]
        text_width = sd["ln_final.weight"].shape[0]
        text = TextConfig(
            context_length=sd["positional_embedding"].shape[0],
            vocab_size=sd["token_embedding.weight"].shape[0],
            width=text_width,
            heads=max(1, text_width // 64),
            layers=_count(sd, "transformer.resblocks.", 2),
            mlp_ratio=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width,
            ls_init_value=1.0 if "transformer.resblocks.0.ls_1.gamma" in sd else None,
        )
        if "visual.proj" in sd:
            width = sd["visual.conv1.weight"].shape[0]
            patch = sd["visual.conv1.weight"].shape[-1]
            grid = round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1))
            vision = VisionConfig(
                image_size=patch * grid,
                layers=_count(sd, "visual.transformer.resblocks.", 3),
                width=width,
                head_width=_vit_head_width(width),
                mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
                patch_size=patch,
                ls_init_value=1.0 if "visual.transformer.resblocks.0.ls_1.gamma" in sd else None,
            )
        elif "visual.attnpool.positional_embedding" in sd:
            counts = tuple(_count(sd, f"visual.layer{b}.", 2) for b in (1, 2, 3, 4))
            grid = round(math.sqrt(sd["visual.attnpool.positional_embedding"].shape[0] - 1))
            vision = VisionConfig(image_size=grid * 32, layers=counts, width=sd["visual.layer1.0.conv1.weight"].shape[0])  # type: ignore[arg-type]
        else:
            raise KeyError("visual.proj or visual.attnpool.positional_embedding")
    except KeyError as e:
        raise CheckpointError(f"{source}: cannot infer the architecture, key {e} is missing") from e
    return ClipConfig(
        embed_dim=embed_dim,
        vision_cfg=vision,
        text_cfg=text,
        quick_gelu=quick_gelu,
        init_logit_bias=float(sd["logit_bias"]) if "logit_bias" in sd else None,
    )
