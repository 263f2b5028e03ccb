"""An image tower around any timm backbone, as open_clip's ``TimmModel``: MobileCLIP's FastViT/MCi, ConvNeXt, EVA-E.

The parameters carry open_clip's names (``trunk.*`` for the timm model, ``head.proj`` / ``head.mlp`` /
``head.pool`` for the adapter after it), so an open_clip state dict loads under ``visual.`` as it is. The trunk
is built with ``timm.create_model(..., pretrained=False)``: its weights come from the CLIP checkpoint, never
from timm's own download.

How the head works (open_clip's rules, by ``timm_pool`` and ``timm_proj``):

- ``timm_proj`` null/"" and a timm pool (``avg``, ``token``…): timm's classifier is the projection, built with
  ``num_classes=embed_dim`` (MobileCLIP); ``"none"``: the pooled trunk features are the embedding.
- ``timm_proj`` ``linear``/``mlp``: timm's classifier is removed and ours added (``head.proj``, or ``head.mlp``
  with a GELU); an empty ``timm_pool`` keeps the trunk's default pooling (ConvNeXt).
- ``timm_pool`` ``abs_attn``/``rot_attn``: timm's attention pooling replaces the trunk's pool (``head.pool``).

The blocks the rest of clipworks sees (LiT locking, FSDP units, activation checkpointing) are the coarse groups
of timm's own ``group_matcher``: ConvNeXt's and FastViT's stages, a ViT's blocks. timm is the ``timm`` extra.
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, require
from ..config import VisionConfig
from .base import Part, Tower

_ATTENTION_POOLS = ("abs_attn", "rot_attn")
_PROJECTIONS = (None, "", "linear", "mlp", "none")


def _timm() -> ModuleType:
    return require("timm", "timm", "a timm image tower (vision_cfg.timm_model_name)")


def _check(cfg: VisionConfig, timm: ModuleType) -> None:
    name = cfg.timm_model_name
    if cfg.timm_model_pretrained:
        raise ConfigError(f"vision_cfg.timm_model_pretrained=true ({name}): clipworks never downloads timm's own "
                          "weights; the image tower's weights come from the CLIP checkpoint you load")
    if not timm.is_model(name):
        raise ConfigError(f"vision_cfg.timm_model_name {name!r} is not a model of the installed timm "
                          f"{timm.__version__} (timm.list_models() lists them)")
    if cfg.timm_proj not in _PROJECTIONS:
        raise ConfigError(f"vision_cfg.timm_proj must be one of 'linear', 'mlp', 'none' or null, got {cfg.timm_proj!r}")
    if cfg.patch_dropout:
        raise ConfigError(f"vision_cfg.patch_dropout is not supported with a timm tower ({name}); open_clip ignores "
                          "it there too")


def _params_cover(root: nn.Module, names: set[str], prefix: str = "") -> list[Part]:
    """The fewest modules (and loose parameters) of ``root`` whose parameters are exactly ``names``."""
    out: list[Part] = []
    for pname, p in root.named_parameters(recurse=False):
        if prefix + pname in names:
            out.append(p)
    for cname, child in root.named_children():
        full = f"{prefix}{cname}."
        own = [full + n for n, _ in child.named_parameters()]
        if own and all(n in names for n in own):
            out.append(child)
        elif any(n in names for n in own):
            out.extend(_params_cover(child, names, full))
    return out


class TimmVisionTower(Tower):
    """``forward(images[B, 3, H, W]) -> [B, output_dim]``: ``head(trunk(x))``, open_clip's ``TimmModel``."""

    def __init__(self, cfg: VisionConfig, output_dim: int, quick_gelu: bool = False):
        super().__init__()
        timm = _timm()
        _check(cfg, timm)
        self.model_name = cfg.timm_model_name
        kwargs: dict[str, Any] = {}
        if cfg.timm_drop_path is not None:
            kwargs["drop_path_rate"] = cfg.timm_drop_path
        pool, proj = cfg.timm_pool, cfg.timm_proj
        custom_pool = pool in _ATTENTION_POOLS
        if proj in ("linear", "mlp") or custom_pool:
            self.trunk = timm.create_model(self.model_name, pretrained=False, **kwargs)
            if custom_pool:
                self.trunk.reset_classifier(0, global_pool="")  # attention pooling replaces the trunk's
            elif pool:
                self.trunk.reset_classifier(0, global_pool=pool)
            else:
                self.trunk.reset_classifier(0)  # an empty timm_pool keeps the trunk's default pooling (ConvNeXt)
            width = self.trunk.num_features
        else:  # timm's classifier is the projection, or (proj "none") there is none
            self.trunk = timm.create_model(self.model_name, pretrained=False, num_classes=0 if proj == "none" else output_dim,
                                           global_pool=pool, **kwargs)
            width = output_dim if proj != "none" else (getattr(self.trunk, "head_hidden_size", None) or self.trunk.num_features)
        self._check_input_size(cfg.image_size)

        head: dict[str, nn.Module] = {}
        if pool == "abs_attn":
            feat_size = self.trunk.pretrained_cfg.get("pool_size")
            head["pool"] = timm.layers.AttentionPool2d(width, feat_size=feat_size, out_features=output_dim)
            width = output_dim
        elif pool == "rot_attn":
            head["pool"] = timm.layers.RotAttentionPool2d(width, out_features=output_dim)
            width = output_dim
        if proj == "linear":
            head["drop"] = nn.Dropout(cfg.timm_drop)
            head["proj"] = nn.Linear(width, output_dim, bias=cfg.timm_proj_bias)
            width = output_dim
        elif proj == "mlp":
            head["mlp"] = timm.layers.Mlp(width, 2 * output_dim, output_dim, drop=(cfg.timm_drop, 0.0),
                                          bias=(True, cfg.timm_proj_bias))
            width = output_dim
        self.head = nn.Sequential(OrderedDict(head))  # open_clip's name: keys head.proj.weight, …
        self.output_dim = width
        self.image_size = cfg.image_size

    def _check_input_size(self, image_size: int) -> None:
        # A fixed-size trunk (a timm ViT without dynamic_img_size) would only fail at the first forward.
        pcfg = getattr(self.trunk, "pretrained_cfg", {}) or {}
        patch_embed = getattr(self.trunk, "patch_embed", None)
        size = tuple(getattr(patch_embed, "img_size", None) or ())
        fixed = pcfg.get("fixed_input_size") and not getattr(patch_embed, "dynamic_img_size", False)
        if size and fixed and size != (image_size, image_size):
            raise ConfigError(f"vision_cfg.image_size is {image_size}, but timm model {self.model_name} takes "
                              f"{size[0]}x{size[1]} images")

    # -- the Tower interface ---------------------------------------------------------------------------------
    def blocks(self) -> list[nn.Module]:
        """The trunk's coarse block groups by timm's ``group_matcher``: each module whose whole name one of its
        indexed ``blocks`` patterns matches (``stages.2`` for ConvNeXt and FastViT, ``blocks.11`` for a ViT)."""
        patterns = self._block_patterns()
        found = [m for name, m in self.trunk.named_modules() if name and any(p.fullmatch(name) for p in patterns)]
        if not found:
            raise ConfigError(f"cannot find the blocks of timm model {self.model_name}: its group_matcher names none")
        return found

    def _block_patterns(self) -> list[re.Pattern[str]]:
        matcher = getattr(self.trunk, "group_matcher", None)
        spec = matcher(coarse=True).get("blocks") if callable(matcher) else None
        if spec is None:
            return []
        # A pattern with a fixed group id (``(r'^norm', (99999,))``) names the final norm, not a block.
        pairs = [(spec, None)] if isinstance(spec, str) else [(s, None) if isinstance(s, str) else s for s in spec]
        return [re.compile(p.removeprefix("^")) for p, ids in pairs if ids is None and re.compile(p).groups]

    def head_parts(self) -> list[Part]:
        """What runs after the last block: the trunk's final norm / conv / classifier, then the adapter head."""
        names = [n for n, _ in self.trunk.named_parameters()]
        last_block = {id(p) for p in self.blocks()[-1].parameters()}
        last = max(i for i, (_, p) in enumerate(self.trunk.named_parameters()) if id(p) in last_block)
        return [*_params_cover(self.trunk, set(names[last + 1:])), self.head]

    def no_weight_decay(self) -> set[str]:
        """timm's own exemptions (position embeddings, class tokens; wildcards resolved), under ``trunk.``."""
        patterns = set(self.trunk.no_weight_decay()) if hasattr(self.trunk, "no_weight_decay") else set()
        names = {n for n, _ in self.trunk.named_parameters() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
        out = {"trunk." + n for n in names}
        out |= {"head." + n for n, _ in self.head.named_parameters() if n.endswith("pos_embed")}
        return out

    def set_grad_checkpointing(self, enable: bool) -> None:
        try:
            self.trunk.set_grad_checkpointing(enable)
        except (AttributeError, NotImplementedError, AssertionError) as e:
            if enable:
                raise ConfigError(f"timm model {self.model_name} does not support gradient checkpointing: {e}") from e

    def reparameterize(self) -> None:
        """Fuse re-parameterisable branches (MobileOne / FastViT / RepVGG) in place for faster inference.

        Checkpoints hold the train-time form, which is what loads; after this call the tower gives the same
        embeddings (to float rounding), computed from BatchNorm running statistics, but its parameter names
        change: use it for inference only, and do not train or save it afterwards."""
        timm = _timm()
        self.eval()
        timm.models.reparameterize_model(self.trunk, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.trunk.parameters()).dtype  # images come as float32 whatever the model's precision
        # a convolutional trunk runs channels-last (ConvNeXt-T, CPU fp32: 8% faster, same numbers); others as given
        fmt = torch.channels_last if type(self.trunk).__name__ == "ConvNeXt" else torch.preserve_format
        return self.head(self.trunk(x.to(dtype=dtype, memory_format=fmt)))
