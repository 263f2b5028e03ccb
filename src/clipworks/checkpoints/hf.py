"""Hugging Face ``CLIPModel`` layout: per-projection attention weights, transposed projections, its own names.

One table of name pairs serves both directions; fused ``in_proj`` weights are split into q/k/v on
the way out and concatenated on the way in. ResNet image towers have no HF ``CLIPModel`` form.
``read_preprocessor`` and the CLIP key table serve the other Hugging Face families too (MetaCLIP 2, SigLIP).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..model.config import ClipConfig, PreprocessConfig, TextConfig, VisionConfig

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


def to_native(sd: dict[str, torch.Tensor], cfg: ClipConfig | None = None) -> dict[str, torch.Tensor]:
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


def config_from_hf(hf: dict[str, Any], directory: str | Path) -> ClipConfig:
    source = str(Path(directory) / "config.json")
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
        preprocess_cfg=read_preprocessor(directory, PreprocessConfig()),
    )


def _clip_form_problems(config: ClipConfig) -> list[str]:
    """What keeps ``config`` from being a ``transformers.CLIPModel``, whose towers are OpenAI's ViT and text."""
    v, t = config.vision_cfg, config.text_cfg
    if t.is_hf:
        return [f"a Hugging Face text tower ({t.hf_model_name})"]
    if v.kind != "vit":
        return [f"a {dict(resnet='ResNet', timm='timm', hf='Hugging Face')[v.kind]} image tower"]
    defaults_v, defaults_t = VisionConfig(), TextConfig()
    vision_opts = ("no_ln_pre", "pool_type", "final_ln_after_pool", "act_kwargs", "norm_kwargs", "scale_attn_inner",
                   "scale_fc", "class_token", "patch_bias", "qkv_bias", "k_bias", "mlp_type", "rope", "proj_type",
                   "proj_bias")
    text_opts = ("no_causal_mask", "pool_type", "proj_type", "proj_bias", "final_ln_after_pool", "act_kwargs", "norm_kwargs")
    problems = [f"vision_cfg.{k}={getattr(v, k)!r}" for k in vision_opts if getattr(v, k) != getattr(defaults_v, k)]
    problems += [f"text_cfg.{k}={getattr(t, k)!r}" for k in text_opts if getattr(t, k) != getattr(defaults_t, k)]
    if config.preprocess_cfg.resize_mode == "longest":
        problems.append("preprocess_cfg.resize_mode='longest' (CLIPImageProcessor cannot pad to a square)")
    if config.tokenizer_cfg.type != "clip":
        problems.append(f"the tokenizer {config.tokenizer_cfg.name}")
    return problems


def config_to_hf(config: ClipConfig) -> dict[str, Any]:
    v, t = config.vision_cfg, config.text_cfg
    problems = _clip_form_problems(config)
    if problems:
        raise CheckpointError(f"this model has no Hugging Face CLIPModel form ({', '.join(problems)}); "
                              "save it as native instead")
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


_RESAMPLE_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's codes, as image processors store them
# What an image processor does for the keys its preprocessor_config.json leaves out (transformers' class defaults
# where they differ from CLIPImageProcessor's): EfficientNet's (ALIGN's) squashes to 346 and divides by std twice.
_PROCESSOR_DEFAULTS: dict[str, dict[str, Any]] = {
    "EfficientNetImageProcessor": dict(size={"height": 346, "width": 346}, crop_size={"height": 289, "width": 289},
                                       do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                       include_top=True),
}


def _side(value: Any, path: Path, key: str) -> dict[str, int]:
    if isinstance(value, int):
        return {"height": value, "width": value}
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: {key}={value!r} is not a size")
    if "height" in value and value.get("width", value["height"]) != value["height"]:
        raise CheckpointError(f"{path}: {key}={value} is not square; clipworks preprocesses square images")
    return value


def read_preprocessor(directory: str | Path, default: PreprocessConfig) -> PreprocessConfig:
    """The eval preprocessing a Hugging Face ``preprocessor_config.json`` describes, or ``default`` without one.

    ``size: {shortest_edge}`` is open_clip's ``shortest``, ``size: {height, width}`` its ``squash``; a centre crop
    smaller than the resize becomes ``resize_size``. Rescaling (``rescale_factor``, EfficientNet's
    ``rescale_offset``) and normalisation (``image_mean``/``image_std``, EfficientNet's ``include_top``, which
    divides by the std once more) compose to one affine map per channel: ``mean``/``std`` on [0, 1] pixels.
    """
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return default
    try:
        p = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    p = {**_PROCESSOR_DEFAULTS.get(str(p.get("image_processor_type", "")).removesuffix("Fast"), {}), **p}
    if not p.get("do_resize", True):
        raise CheckpointError(f"{path}: do_resize=false is not supported (clipworks resizes to the model's input size)")
    size = p.get("size") or {}
    size = {"shortest_edge": size} if isinstance(size, int) else _side(size, path, "size")  # an int: older CLIP files
    if "shortest_edge" in size:
        resize_mode, resized = "shortest", size["shortest_edge"]
    elif "height" in size:
        resize_mode, resized = "squash", size["height"]
    elif size:
        raise CheckpointError(f"{path}: size={size} is not supported (shortest_edge, or height and width)")
    else:
        resize_mode, resized = default.resize_mode, default.size
    out = resized
    if p.get("do_center_crop", True) and p.get("crop_size") is not None:
        out = _side(p["crop_size"], path, "crop_size")["height"]
    if resized is not None and out is not None and out > resized:
        raise CheckpointError(f"{path}: a {out} crop of an image resized to {resized} is not supported")
    resample = p.get("resample", 3)
    if resample not in _RESAMPLE_NAMES:
        raise CheckpointError(f"{path}: resample={resample!r} is not supported; clipworks knows "
                              + ", ".join(f"{k} ({v})" for k, v in _RESAMPLE_NAMES.items()))
    # x in [0, 1] → x * scale + shift, channel by channel, through each step the processor takes.
    scale, shift = [1.0] * 3, [0.0] * 3
    if p.get("do_rescale", True):
        factor = float(p.get("rescale_factor", 1 / 255)) * 255
        scale, shift = [factor] * 3, [-1.0 if p.get("rescale_offset") else 0.0] * 3
    else:
        scale = [255.0] * 3
    mean = p.get("image_mean", default.mean)
    std = p.get("image_std", default.std)
    mean, std = ([float(mean)] * 3 if isinstance(mean, (int, float)) else list(mean),
                 [float(std)] * 3 if isinstance(std, (int, float)) else list(std))
    if p.get("do_normalize", True):
        scale = [a / s for a, s in zip(scale, std)]
        shift = [(b - m) / s for b, m, s in zip(shift, mean, std)]
    if p.get("include_top"):
        scale = [a / s for a, s in zip(scale, std)]
        shift = [b / s for b, s in zip(shift, std)]
    return PreprocessConfig(size=out, mean=tuple(-b / a for a, b in zip(scale, shift)),  # type: ignore[arg-type]
                            std=tuple(1 / a for a in scale),  # type: ignore[arg-type]
                            interpolation=_RESAMPLE_NAMES[resample], resize_mode=resize_mode,
                            resize_size=resized if resized != out else None)


def write_processor_files(directory: Path, config: ClipConfig) -> None:
    """Tokenizer and image-processor files, so ``CLIPProcessor.from_pretrained(directory)`` works too."""
    from ..text.clip_bpe import vocab_and_merges

    vocab, merges = vocab_and_merges()
    hf_names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (directory / "vocab.json").write_text(json.dumps({hf_names.get(k, k): v for k, v in vocab.items()}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": config.text_cfg.context_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "do_lower_case": True,
    }, indent=2))
    pre = config.preprocess()
    size = pre.size
    resample = {v: k for k, v in _RESAMPLE_NAMES.items()}[pre.interpolation]
    resized = pre.resize_size or size
    resize = {"shortest_edge": resized} if pre.resize_mode == "shortest" else {"height": resized, "width": resized}
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": resize,
        "resample": resample, "do_center_crop": True, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(pre.mean), "image_std": list(pre.std), "do_convert_rgb": True,
    }, indent=2))
