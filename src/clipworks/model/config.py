"""Model configuration: dataclasses that validate themselves, and the named-config registry.

The JSON schema is open_clip's (``embed_dim``, ``quick_gelu``, ``vision_cfg``, ``text_cfg``) so
that a user's open_clip config file drops in unchanged; keys we do not implement are refused by
name rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

QUICKGELU_SUFFIX = "-quickgelu"


class ConfigError(ValueError):
    """A model config names an unknown key, an unknown model, or an impossible value."""


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; known keys: {', '.join(sorted(known))}"
        )
    return cls(**data)


@dataclass
class VisionConfig:
    """Image tower. ``layers`` as an int builds a ViT; as four ints, a ModifiedResNet."""

    image_size: int = 224
    layers: int | tuple[int, int, int, int] = 12
    width: int = 768
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_size: int | None = 16
    ls_init_value: float | None = None
    patch_dropout: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)  # type: ignore[assignment]
        if self.is_resnet:
            if len(self.layers) != 4:  # type: ignore[arg-type]
                raise ConfigError(f"vision_cfg.layers must be an int (ViT) or 4 ints (ResNet), got {self.layers}")
            if self.image_size % 32:
                raise ConfigError(f"vision_cfg.image_size must be a multiple of 32 for a ResNet, got {self.image_size}")
        else:
            if not self.patch_size or self.image_size % self.patch_size:
                raise ConfigError(
                    f"vision_cfg.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
                )
            if self.width % self.head_width:
                raise ConfigError(f"vision_cfg.width ({self.width}) must be a multiple of head_width ({self.head_width})")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ConfigError(f"vision_cfg.patch_dropout must be in [0, 1), got {self.patch_dropout}")

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.layers, tuple)

    @property
    def heads(self) -> int:
        # A ResNet's attention pool works on width * 32 channels (OpenAI's convention).
        return (self.width * 32 if self.is_resnet else self.width) // self.head_width


HF_POOLERS = ("mean", "cls", "max")
HF_PROJECTIONS = ("linear", "mlp")
# open_clip spells the poolers this way; its config files use these values.
_OPEN_CLIP_POOLERS = {"mean_pooler": "mean", "cls_pooler": "cls", "max_pooler": "max"}


@dataclass
class TextConfig:
    """Causal text transformer pooled at the end-of-text token — or, with ``hf_model_name``, a Hugging
    Face encoder read from that local directory (then width/heads/layers/vocab_size are unused).

    ``hf_config`` holds the encoder's config.json: when set, the encoder is built from it with random
    weights that a checkpoint then fills, so a saved model loads without the original directory.
    """

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    hf_model_name: str | None = None
    hf_tokenizer_name: str | None = None
    hf_pooler_type: str = "mean"
    hf_proj_type: str = "linear"
    hf_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ConfigError(f"text_cfg.width ({self.width}) must be a multiple of heads ({self.heads})")
        self.hf_pooler_type = _OPEN_CLIP_POOLERS.get(self.hf_pooler_type, self.hf_pooler_type)
        if self.hf_pooler_type not in HF_POOLERS:
            raise ConfigError(f"text_cfg.hf_pooler_type must be one of {HF_POOLERS}, got {self.hf_pooler_type!r}")
        if self.hf_proj_type not in HF_PROJECTIONS:
            raise ConfigError(f"text_cfg.hf_proj_type must be one of {HF_PROJECTIONS}, got {self.hf_proj_type!r}")
        if self.hf_config is not None and self.hf_model_name is None:
            raise ConfigError("text_cfg.hf_config is set but hf_model_name is not; the directory names the tower")

    @property
    def is_hf(self) -> bool:
        return self.hf_model_name is not None


@dataclass
class ClipConfig:
    embed_dim: int
    vision_cfg: VisionConfig = field(default_factory=VisionConfig)
    text_cfg: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = False
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> ClipConfig:
        data = dict(data)
        if "embed_dim" not in data:
            raise ConfigError(f"{where} has no 'embed_dim'")
        vision = data.pop("vision_cfg", {})
        text = data.pop("text_cfg", {})
        if isinstance(vision, dict):
            vision = _from_dict(VisionConfig, vision, f"{where}: vision_cfg")
        if isinstance(text, dict):
            text = _from_dict(TextConfig, text, f"{where}: text_cfg")
        return _from_dict(cls, {**data, "vision_cfg": vision, "text_cfg": text}, where)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if isinstance(out["vision_cfg"]["layers"], tuple):
            out["vision_cfg"]["layers"] = list(out["vision_cfg"]["layers"])
        if not self.text_cfg.is_hf:  # a native tower's config stays in open_clip's schema, as before
            out["text_cfg"] = {k: v for k, v in out["text_cfg"].items() if not k.startswith("hf_")}
        return out

    def diff(self, other: ClipConfig) -> list[str]:
        """Dotted names of the fields that differ, for 'refused: configs differ in …' messages."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        keys = a.keys() | b.keys()
        if self.text_cfg.hf_config is not None and other.text_cfg.hf_config is not None:
            # With the encoder's config embedded, where its files lie is provenance, not architecture.
            keys -= {"text_cfg.hf_model_name", "text_cfg.hf_tokenizer_name"}
        return sorted(k for k in keys if a.get(k) != b.get(k))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _config_dir() -> Path:
    return Path(str(resources.files("clipworks") / "configs"))


def list_models() -> list[str]:
    """Names accepted by ``get_model_config``; any of them also takes a ``-quickgelu`` suffix."""
    return sorted(p.stem for p in _config_dir().glob("*.json"))


def get_model_config(name: str) -> ClipConfig:
    base, quick = (name[: -len(QUICKGELU_SUFFIX)], True) if name.endswith(QUICKGELU_SUFFIX) else (name, False)
    path = _config_dir() / f"{base}.json"
    if not path.is_file():
        raise ConfigError(f"unknown model config {name!r}; known: {', '.join(list_models())} (each also as NAME{QUICKGELU_SUFFIX})")
    config = ClipConfig.from_dict(json.loads(path.read_text()), where=str(path))
    if quick:
        config.quick_gelu = True
    return config


def load_config_file(path: str | Path) -> ClipConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read model config {path}: {e}") from e
    return ClipConfig.from_dict(data, where=str(path))
