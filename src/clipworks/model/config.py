"""Model configuration: dataclasses that validate themselves, and the named-config registry.

A ``ClipConfig`` describes everything it takes to use a model: both towers, the image preprocessing and the
tokenizer. The JSON schema is open_clip's (``embed_dim``, ``quick_gelu``, ``vision_cfg``, ``text_cfg``, and the
``preprocess_cfg`` of its hub configs) so that a user's open_clip config drops in; the keys open_clip keeps in
``text_cfg`` for its tokenizer (``hf_tokenizer_name``, ``tokenizer_kwargs``) are read into ``tokenizer_cfg``.
Keys we do not know are refused by name; open_clip options we do not implement are refused unless they hold
their default value.

A tower's *kind* follows from its config (``VisionConfig.kind``, ``TextConfig.kind``) and picks the module
that builds it (``model/towers``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..errors import ConfigError

QUICKGELU_SUFFIX = "-quickgelu"

__all__ = [
    "ClipConfig", "ConfigError", "PreprocessConfig", "TextConfig", "TokenizerConfig", "VisionConfig",
    "get_model_config", "list_models", "load_config_file", "normalize_model_name",
]


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    data = dict(data)
    for key, default in getattr(cls, "_UNSUPPORTED", {}).items():
        if key in data:
            value = data.pop(key)
            if value != default and value is not None:
                raise ConfigError(f"{where}: {key}={value!r} is an open_clip option clipworks does not implement "
                                  f"(only the default {default!r} is accepted)")
    for key in getattr(cls, "_IGNORED", ()):
        data.pop(key, None)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; known keys: {', '.join(sorted(known))}"
        )
    try:
        return cls(**data)
    except TypeError as e:  # a value of the wrong shape reached __post_init__ arithmetic
        raise ConfigError(f"{where}: {e}") from e


def _choice(where: str, name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}.{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def mlp_hidden(width: int, mlp_ratio: float) -> int:
    """MLP width as open_clip computes it, robust to ratios written with a few decimals (4304/1152 = 3.7361…)."""
    return int(round(width * mlp_ratio, 3))


@dataclass
class VisionConfig:
    """Image tower. Its kind: ``timm_model_name`` → a timm backbone, ``hf_model_name``/``hf_config`` → a Hugging
    Face vision encoder, four ``layers`` → OpenAI's ModifiedResNet, otherwise a ViT built from our block."""

    image_size: int = 224
    layers: int | tuple[int, int, int, int] = 12
    width: int = 768
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_size: int | None = 16
    ls_init_value: float | None = None
    patch_dropout: float = 0.0
    # ViT options open_clip also has
    no_ln_pre: bool = False
    pool_type: str = "tok"            # tok (class token) | avg (mean of patch tokens) | map (attention pool, SigLIP)
    final_ln_after_pool: bool = False
    act_kwargs: dict[str, Any] | None = None   # {"approximate": "tanh"}: tanh GELU (SigLIP)
    norm_kwargs: dict[str, Any] | None = None  # {"eps": 1e-6}
    scale_attn_inner: bool = False    # sub-LN: LayerNorm on the attention output before its projection (EVA-02)
    scale_fc: bool = False            # sub-LN: LayerNorm on the MLP hidden state before its projection (EVA-02)
    # ViT options of the towers our block expresses (SigLIP, EVA-02)
    class_token: bool = True
    patch_bias: bool = False          # bias on the patch-embedding convolution
    qkv_bias: bool = True
    k_bias: bool = True               # False: biases on q and v only, none on k (EVA-02)
    mlp_type: str = "mlp"             # mlp | swiglu
    rope: bool = False                # 2-D rotary position embedding on patch tokens (EVA-02)
    rope_ref_size: int | None = None  # the patch grid the rotary frequencies were defined on (EVA-02: 16)
    proj_type: str = "linear"         # linear (a projection to embed_dim) | none (features are the pooled state)
    proj_bias: bool = False
    # a timm backbone (open_clip's TimmModel)
    timm_model_name: str | None = None
    timm_model_pretrained: bool = False
    timm_pool: str = "avg"
    timm_proj: str | None = "linear"
    timm_proj_bias: bool = False
    timm_drop: float = 0.0
    timm_drop_path: float | None = None
    # a Hugging Face vision encoder (ALIGN's EfficientNet), built from its config.json contents
    hf_model_name: str | None = None  # a local directory or a Hub repo id
    hf_config: dict[str, Any] | None = None
    hf_model_pretrained: bool = True  # without hf_config or a checkpoint: the weights of hf_model_name
    hf_proj_type: str = "none"        # none | linear (biased with proj_bias)

    _UNSUPPORTED = {"attentional_pool": False, "attn_pooler_queries": 256, "attn_pooler_heads": 8,
                    "pos_embed_type": "learnable", "output_tokens": False, "block_type": None, "qk_norm": False,
                    "scaled_cosine_attn": False, "scale_heads": False, "scale_attn": False}

    def __post_init__(self) -> None:
        where = "vision_cfg"
        if isinstance(self.image_size, (list, tuple)):
            if len(set(self.image_size)) != 1:
                raise ConfigError(f"{where}.image_size must be square, got {list(self.image_size)}")
            self.image_size = int(self.image_size[0])
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)  # type: ignore[assignment]
        _choice(where, "proj_type", self.proj_type, ("linear", "none"))
        _choice(where, "hf_proj_type", self.hf_proj_type, ("linear", "none"))
        if self.kind == "resnet":
            if len(self.layers) != 4:  # type: ignore[arg-type]
                raise ConfigError(f"{where}.layers must be an int (ViT) or 4 ints (ResNet), got {self.layers}")
            if self.image_size % 32:
                raise ConfigError(f"{where}.image_size must be a multiple of 32 for a ResNet, got {self.image_size}")
        elif self.kind == "vit":
            # A remainder is cropped by the patch convolution, as in timm and transformers (SigLIP SO400M/14 at 384).
            if not self.patch_size or self.image_size < self.patch_size:
                raise ConfigError(f"{where}.image_size ({self.image_size}) must be at least patch_size ({self.patch_size})")
            if self.width % self.head_width:
                raise ConfigError(f"{where}.width ({self.width}) must be a multiple of head_width ({self.head_width})")
            _choice(where, "pool_type", self.pool_type, ("tok", "avg", "map"))
            _choice(where, "mlp_type", self.mlp_type, ("mlp", "swiglu"))
            if self.pool_type == "tok" and not self.class_token:
                raise ConfigError(f"{where}: pool_type 'tok' needs class_token=true; use 'avg' or 'map' without one")
            if self.rope and not self.rope_ref_size:
                raise ConfigError(f"{where}: rope=true needs rope_ref_size (the patch grid its frequencies are defined on)")
            if self.rope and self.patch_dropout:
                raise ConfigError(f"{where}: patch_dropout with rope is not supported (dropped patches lose their rotary position)")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ConfigError(f"{where}.patch_dropout must be in [0, 1), got {self.patch_dropout}")

    @property
    def kind(self) -> str:
        if self.timm_model_name:
            return "timm"
        if self.hf_model_name or self.hf_config:
            return "hf"
        return "resnet" if isinstance(self.layers, tuple) else "vit"

    @property
    def heads(self) -> int:
        # A ResNet's attention pool works on width * 32 channels (OpenAI's convention).
        return (self.width * 32 if self.kind == "resnet" else self.width) // self.head_width


HF_POOLERS = ("mean", "cls", "max")
HF_PROJECTIONS = ("linear", "mlp", "none")
# open_clip spells the poolers this way; its config files use these values.
_OPEN_CLIP_POOLERS = {"mean_pooler": "mean", "cls_pooler": "cls", "max_pooler": "max", "cls_last_hidden_state_pooler": "cls"}
TEXT_POOLS = ("argmax", "last", "eos", "first")
OPEN_CLIP_HF_PROJ = "mlp"  # open_clip's default hf_proj_type; ours is "linear"


@dataclass
class TextConfig:
    """Text tower: a transformer over token ids (causal and pooled at the end-of-text token by default), or with
    ``hf_model_name`` a Hugging Face encoder (BERT, RoBERTa, XLM-R, …); then width/heads/layers/vocab are unused.

    ``hf_config`` holds the encoder's config.json: when set, the encoder is built from it with random weights
    that a checkpoint then fills, so a saved model loads without the original directory or Hub repo.
    """

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    no_causal_mask: bool = False      # bidirectional attention (SigLIP, MobileCLIP)
    pool_type: str = "argmax"         # argmax (highest id = end token, OpenAI) | last | eos (first eos_id) | first
    eos_id: int = 2
    pad_id: int = 0
    proj_type: str = "linear"         # linear | none
    proj_bias: bool = False           # a biased nn.Linear projection instead of OpenAI's bare matrix
    final_ln_after_pool: bool = False
    act_kwargs: dict[str, Any] | None = None
    norm_kwargs: dict[str, Any] | None = None
    hf_model_name: str | None = None
    hf_model_pretrained: bool = True
    hf_pooler_type: str = "mean"
    hf_proj_type: str = "linear"
    hf_proj_bias: bool = False
    hf_config: dict[str, Any] | None = None

    _UNSUPPORTED = {"embed_cls": False, "output_tokens": False, "block_type": None, "qk_norm": False,
                    "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
                    "scale_attn": False, "scale_fc": False}

    def __post_init__(self) -> None:
        where = "text_cfg"
        if self.width % self.heads:
            raise ConfigError(f"{where}.width ({self.width}) must be a multiple of heads ({self.heads})")
        self.hf_pooler_type = _OPEN_CLIP_POOLERS.get(self.hf_pooler_type, self.hf_pooler_type)
        _choice(where, "hf_pooler_type", self.hf_pooler_type, HF_POOLERS)
        _choice(where, "hf_proj_type", self.hf_proj_type, HF_PROJECTIONS)
        _choice(where, "pool_type", self.pool_type, TEXT_POOLS)
        _choice(where, "proj_type", self.proj_type, ("linear", "none"))
        if self.hf_config is not None and self.hf_model_name is None:
            raise ConfigError(f"{where}.hf_config is set but hf_model_name is not; the name says where the tower came from")
        if self.context_length < 2:
            raise ConfigError(f"{where}.context_length must be at least 2, got {self.context_length}")

    @property
    def kind(self) -> str:
        return "hf" if self.hf_model_name is not None else "transformer"

    @property
    def is_hf(self) -> bool:
        return self.kind == "hf"


RESIZE_MODES = ("shortest", "squash", "longest")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass
class PreprocessConfig:
    """Eval-time image preprocessing, open_clip's ``preprocess_cfg``: ``shortest`` resizes the shorter side and
    centre-crops, ``squash`` resizes both sides to ``size`` (SigLIP), ``longest`` fits the longer side and pads
    with ``fill_color``. ``size`` None means the image tower's input size.

    ``resize_size`` (ours) resizes to that size instead and then takes the centre ``size`` crop, as Hugging Face
    image processors with a ``crop_size`` smaller than their ``size`` do (ALIGN: squash to 346, crop 289)."""

    size: int | None = None
    mode: str = "RGB"
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    resize_size: int | None = None

    def __post_init__(self) -> None:
        where = "preprocess_cfg"
        if isinstance(self.size, (list, tuple)):
            if len(set(self.size)) != 1:
                raise ConfigError(f"{where}.size must be square, got {list(self.size)}")
            self.size = int(self.size[0])
        if isinstance(self.mean, (int, float)):
            self.mean = (float(self.mean),) * 3
        if isinstance(self.std, (int, float)):
            self.std = (float(self.std),) * 3
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(f"{where}.mean and .std need 3 values (R, G, B), got {list(self.mean)} and {list(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"{where}.std must be positive, got {list(self.std)}")
        _choice(where, "mode", self.mode, ("RGB",))
        _choice(where, "interpolation", self.interpolation, INTERPOLATIONS)
        _choice(where, "resize_mode", self.resize_mode, RESIZE_MODES)
        if self.resize_size is not None and self.size is not None and self.resize_size < self.size:
            raise ConfigError(f"{where}.resize_size ({self.resize_size}) must be at least size ({self.size}): "
                              "it is the size before the centre crop")


TOKENIZER_TYPES = ("clip", "hf")
CLEAN_MODES = ("whitespace", "lower", "canonicalize", "none")
NORMALIZE_MODES = ("none", "lower", "siglip")
PADDING_SIDES = ("right", "left")


@dataclass
class TokenizerConfig:
    """Which tokenizer a model reads: OpenAI's CLIP BPE (``clip``, shipped with clipworks), or the tokenizer files
    a checkpoint ships (``hf``: ``tokenizer.json``, or a SentencePiece model, in ``name`` — a directory or a Hub
    repo id). The context length is the text tower's, and every tokenizer pads to it.

    For ``hf`` tokenizers, what the reference does in Python on top of the files:
    ``clean`` is open_clip's text cleaning (``HFTokenizer(clean=…)``; ``none`` for Hugging Face processors);
    ``strip_sep_token`` is open_clip's (the separator id becomes 0); ``normalize`` is what the transformers class
    does in code — ``lower`` (``Siglip2Tokenizer``), ``siglip`` (``SiglipTokenizer``'s canonicalisation) or
    ``none``; ``padding_side`` is ``right`` or ``left``. ``normalize``/``padding_side`` None: as the directory's
    class does (``text.tokenizer_config_for_dir`` records them explicitly)."""

    type: str = "clip"
    name: str | None = None
    clean: str = "whitespace"
    strip_sep_token: bool = False
    normalize: str | None = None
    padding_side: str | None = None

    def __post_init__(self) -> None:
        _choice("tokenizer_cfg", "type", self.type, TOKENIZER_TYPES)
        _choice("tokenizer_cfg", "clean", self.clean, CLEAN_MODES)
        _choice("tokenizer_cfg", "normalize", self.normalize, (None, *NORMALIZE_MODES))
        _choice("tokenizer_cfg", "padding_side", self.padding_side, (None, *PADDING_SIDES))
        if self.type == "hf" and not self.name:
            raise ConfigError("tokenizer_cfg.type 'hf' needs a name: the directory or Hub repo of the tokenizer files")


@dataclass
class ClipConfig:
    embed_dim: int
    vision_cfg: VisionConfig = field(default_factory=VisionConfig)
    text_cfg: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = False
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None
    preprocess_cfg: PreprocessConfig = field(default_factory=PreprocessConfig)
    tokenizer_cfg: TokenizerConfig = field(default_factory=TokenizerConfig)

    _IGNORED = ("custom_text", "cast_dtype")

    def __post_init__(self) -> None:
        # A Hugging Face text tower reads its own tokenizer unless told otherwise (open_clip's default too).
        if self.text_cfg.is_hf and self.tokenizer_cfg.type == "clip":
            self.tokenizer_cfg = TokenizerConfig(type="hf", name=self.text_cfg.hf_model_name)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> ClipConfig:
        """A config from our JSON or open_clip's: open_clip's tokenizer keys in ``text_cfg`` move to
        ``tokenizer_cfg``, an HF text tower's tokenizer defaults to its encoder's repo."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
        data = dict(data)
        if "embed_dim" not in data:
            raise ConfigError(f"{where} has no 'embed_dim'")
        vision = data.pop("vision_cfg", {})
        text = data.pop("text_cfg", {})
        preprocess = data.pop("preprocess_cfg", {})
        tokenizer = data.pop("tokenizer_cfg", None)
        if isinstance(text, dict):
            text = dict(text)
            legacy = {k: text.pop(k) for k in ("hf_tokenizer_name", "tokenizer_kwargs", "tokenizer_mode") if k in text}
            if tokenizer is None:
                tokenizer = _tokenizer_from_open_clip(legacy, text.get("hf_model_name"), f"{where}: text_cfg")
            text = _from_dict(TextConfig, text, f"{where}: text_cfg")
        if isinstance(vision, dict):
            vision = _from_dict(VisionConfig, vision, f"{where}: vision_cfg")
        if isinstance(preprocess, dict):
            preprocess = _from_dict(PreprocessConfig, preprocess, f"{where}: preprocess_cfg")
        if isinstance(tokenizer, dict):
            tokenizer = _from_dict(TokenizerConfig, tokenizer, f"{where}: tokenizer_cfg")
        return _from_dict(cls, {**data, "vision_cfg": vision, "text_cfg": text, "preprocess_cfg": preprocess,
                                "tokenizer_cfg": tokenizer or TokenizerConfig()}, where)

    @classmethod
    def from_open_clip(cls, data: dict[str, Any], where: str = "open_clip model config") -> ClipConfig:
        """A config open_clip wrote (a hub directory's ``model_cfg``): where open_clip's defaults differ from ours,
        a key it leaves out means open_clip's value — an HF text tower's projection is open_clip's 2-layer MLP."""
        text = data.get("text_cfg") if isinstance(data, dict) else None
        if isinstance(text, dict) and text.get("hf_model_name"):
            proj = text.get("hf_proj_type", OPEN_CLIP_HF_PROJ)
            data = {**data, "text_cfg": {**text, "hf_proj_type": "none" if proj is None else proj}}
        return cls.from_dict(data, where)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the fields that hold their default (so a saved config reads like the named one)."""
        out: dict[str, Any] = {"embed_dim": self.embed_dim}
        for f in dataclasses.fields(self):
            if f.name == "embed_dim":
                continue
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                out[f.name] = _non_default(value)
            elif value != (f.default if f.default is not dataclasses.MISSING else None) or f.name == "quick_gelu":
                out[f.name] = value
        return out

    def diff(self, other: ClipConfig) -> list[str]:
        """Dotted names of the fields that differ, for 'refused: configs differ in …' messages."""
        a, b = _flatten(dataclasses.asdict(self)), _flatten(dataclasses.asdict(other))
        keys = a.keys() | b.keys()
        keys -= {k for k in keys if k.startswith(("preprocess_cfg.", "tokenizer_cfg."))}  # not architecture
        for tower in ("text_cfg", "vision_cfg"):
            # With the encoder's config embedded, where it came from (and whether its weights could have been
            # read from there) is provenance: the architecture is the config, the weights the checkpoint's.
            if getattr(self, tower).hf_config is not None and getattr(other, tower).hf_config is not None:
                keys -= {f"{tower}.hf_model_name", f"{tower}.hf_model_pretrained"}
        return sorted(k for k in keys if a.get(k) != b.get(k))

    @property
    def image_size(self) -> int:
        return self.preprocess_cfg.size or self.vision_cfg.image_size

    def for_checkpoint(self) -> ClipConfig:
        """This config as a checkpoint's weights will fill it: Hugging Face towers are built from their config
        alone, their own pretrained weights (``hf_model_pretrained``) neither read nor downloaded."""
        text, vision = self.text_cfg, self.vision_cfg
        if text.is_hf:
            text = dataclasses.replace(text, hf_model_pretrained=False)
        if vision.kind == "hf":
            vision = dataclasses.replace(vision, hf_model_pretrained=False)
        return dataclasses.replace(self, text_cfg=text, vision_cfg=vision)

    def preprocess(self) -> PreprocessConfig:
        """``preprocess_cfg`` with its size filled in from the image tower when it names none."""
        return dataclasses.replace(self.preprocess_cfg, size=self.image_size)

    @property
    def context_length(self) -> int:
        return self.text_cfg.context_length


def _non_default(obj: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        if value != default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _tokenizer_from_open_clip(legacy: dict[str, Any], hf_model_name: str | None, where: str) -> dict[str, Any]:
    """open_clip keeps the tokenizer in text_cfg (``hf_tokenizer_name``, ``tokenizer_kwargs``); ours is separate."""
    name = legacy.get("hf_tokenizer_name") or hf_model_name
    if name is None:
        if legacy.get("tokenizer_kwargs"):
            raise ConfigError(f"{where}: tokenizer_kwargs without hf_tokenizer_name; the CLIP tokenizer takes none")
        return {}
    kwargs = dict(legacy.get("tokenizer_kwargs") or {})
    out: dict[str, Any] = {"type": "hf", "name": name}
    for key in ("clean", "strip_sep_token"):
        if key in kwargs:
            out[key] = kwargs.pop(key)
    if legacy.get("tokenizer_mode"):
        raise ConfigError(f"{where}: tokenizer_mode={legacy['tokenizer_mode']!r} is not supported")
    if kwargs:
        raise ConfigError(f"{where}: tokenizer_kwargs {sorted(kwargs)} not supported (known: clean, strip_sep_token)")
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not k.startswith("hf_config"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _config_dir() -> Path:
    return Path(str(resources.files("clipworks") / "configs"))


def normalize_model_name(name: str) -> str:
    """open_clip's spelling: ``ViT-B/32`` is ``ViT-B-32``."""
    return name.replace("/", "-")


def list_models() -> list[str]:
    """Names accepted by ``get_model_config``; any of them also takes a ``-quickgelu`` suffix."""
    return sorted(p.stem for p in _config_dir().glob("*.json"))


def get_model_config(name: str) -> ClipConfig:
    name = normalize_model_name(name)
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
    if isinstance(data, dict) and "model_cfg" in data:  # an open_clip hub config: model_cfg + preprocess_cfg
        data = {**data["model_cfg"], "preprocess_cfg": data.get("preprocess_cfg", {})}
        return ClipConfig.from_open_clip(data, where=str(path))
    return ClipConfig.from_dict(data, where=str(path))
