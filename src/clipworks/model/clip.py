"""Clip: an image tower and a text tower projected into one embedding space, plus the learnable temperature.

The towers are chosen by the config (``model/towers``); this class only knows their interface. ``forward`` and
the towers' own ``forward`` are pure — shapes follow input shapes, no host syncs — so they export and compile.
The conveniences that read the batch (dropping trailing padding) live in ``encode_text`` and the trainer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClipConfig
from .lock import lock_tower
from .towers import TextTower, Tower, build_text_tower, build_vision_tower

LOGIT_SCALE_MAX = 100.0


class Clip(nn.Module):
    def __init__(self, config: ClipConfig):
        super().__init__()
        self.visual: Tower = build_vision_tower(config)
        self.text: TextTower = build_text_tower(config)
        if self.visual.output_dim != self.text.output_dim:
            from .config import ConfigError

            raise ConfigError(f"the image tower gives {self.visual.output_dim}-d features and the text tower "
                              f"{self.text.output_dim}-d; embed_dim ({config.embed_dim}) or proj_type must make them equal")
        # A tower built from a directory records the encoder config it read, so a saved model rebuilds without
        # that directory; a copy, so the caller's config still means "read the weights from the directory".
        self.config = dataclasses.replace(
            config,
            vision_cfg=_with_hf_config(config.vision_cfg, self.visual),
            text_cfg=_with_hf_config(config.text_cfg, self.text),
        )
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

    @property
    def embed_dim(self) -> int:
        return self.visual.output_dim

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
        """Text features of ``tokens`` (trailing padding the tower cannot see is dropped first, per group of rows of
        similar length, so short captions cost little: ``TextTower.encode_grouped``). ``return_tokens=True`` returns ``(features, token_states)`` where token_states
        are the ``[B, L, width]`` hidden states diffusion models condition on: ``token_layer=-1`` with
        ``token_norm=True`` is Stable Diffusion 1.x, ``-2``/``True`` is SD 2.x, ``-2``/``False`` is SDXL."""
        if return_tokens:
            features, states = self.text.token_states(tokens, token_layer, token_norm)
            return (F.normalize(features, dim=-1) if normalize else features), states
        features = self.text.encode_grouped(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(
        self,
        images: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, ...]:
        """Normalised image and text features and the temperature (``temperature()``), plus
        ``logit_bias`` when the model has one (SigLIP), as open_clip returns them.

        With ``text_index``, ``tokens`` are the distinct captions of the batch and row ``i`` of the text
        features is caption ``text_index[i]``: repeated captions run through the tower once, and the gather
        sends their gradients back to it. The trainer finds them (``train.loop.distinct_captions``); the forward stays pure.
        """
        image_features = self.encode_image(images, normalize=True) if images is not None else None
        text_features = None
        if tokens is not None:
            text_features = F.normalize(self.text(tokens), dim=-1)
            if text_index is not None:
                text_features = text_features[text_index]
        scale = self.temperature()
        if self.logit_bias is not None:
            return image_features, text_features, scale, self.logit_bias
        return image_features, text_features, scale

    @property
    def uses_sigmoid(self) -> bool:
        """SigLIP-style models score each (image, text) pair on its own: probabilities are per-label sigmoids."""
        return self.logit_bias is not None

    def temperature(self) -> torch.Tensor:
        """The training temperature ``exp(logit_scale)``: clamped at 100 for softmax models, as CLIP trains it;
        SigLIP's is unbounded (big_vision leaves it free, and released SigLIP temperatures are 110-120)."""
        scale = self.logit_scale.exp()
        return scale if self.uses_sigmoid else scale.clamp(max=LOGIT_SCALE_MAX)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``[images, texts]`` logits of normalised features: cosine times the model's own ``exp(logit_scale)``
        (unclamped, as the references score: ALIGN's temperature may be below 1/100), plus the bias if any."""
        logits = self.logit_scale.exp() * image_features @ text_features.T
        return logits + self.logit_bias if self.logit_bias is not None else logits

    def probabilities(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Zero-shot probabilities: a softmax over the texts (CLIP), or a sigmoid per text (SigLIP)."""
        logits = self.logits(image_features, text_features)
        return logits.sigmoid() if self.uses_sigmoid else logits.softmax(dim=-1)

    def no_weight_decay(self) -> set[str]:
        names = {"logit_scale", "logit_bias"}
        for prefix, tower in (("visual.", self.visual), ("text.", self.text)):
            names |= {prefix + n for n in tower.no_weight_decay()}
        return names

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.grad_checkpointing = enable
        self.text.grad_checkpointing = enable

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """LiT: freeze the image tower except its last ``unlocked_groups`` blocks (transformer blocks or
        ResNet/timm stages) with its head; ``freeze_bn_stats`` also stops BatchNorm statistics."""
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

    # -- Hugging Face habits ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> Clip:
        """A model with its weights from a directory in any format clipworks reads, a checkpoint file, or a Hugging
        Face Hub repo (``hf-hub:org/repo``, or a bare ``org/repo`` that is not a local path, as transformers takes
        it), in eval mode. A config name has no weights to load: that is ``create_model(name, pretrained=tag)``."""
        from ..factory import create_model
        from ..pretrained.hub import HF_HUB_PREFIX, is_local_path
        from .config import ConfigError, list_models, normalize_model_name

        name = str(name_or_path)
        if normalize_model_name(name).removesuffix("-quickgelu") in list_models():
            raise ConfigError(f"{name!r} is a model config, which has no weights to load; use "
                              f"create_model({name!r}, pretrained=TAG) (tags: `clipworks pretrained {name}`)")
        if not name.startswith(HF_HUB_PREFIX) and not is_local_path(name):
            name = HF_HUB_PREFIX + name
        return create_model(name, **kwargs)

    def save_pretrained(self, directory: str | Path, format: str = "native") -> Path:
        """Write this model (weights, config, tokenizer files) to ``directory`` atomically; ``format="hf"``
        writes a ``transformers.CLIPModel`` directory."""
        from ..checkpoints import save_pretrained

        return save_pretrained(self, directory, format=format)  # type: ignore[arg-type]


def _with_hf_config(cfg: Any, tower: nn.Module) -> Any:
    recorded = getattr(tower, "hf_config", None)
    if recorded is None or getattr(cfg, "hf_config", None) is not None:
        return cfg
    return dataclasses.replace(cfg, hf_config=recorded)
