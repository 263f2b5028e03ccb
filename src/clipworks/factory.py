"""Build models the way open_clip and transformers users expect: by name, by pretrained tag, by Hub id, by path.

=====================================================  =================================================
``create_model("ViT-B-32")``                           random weights of a named config
``create_model("ViT-B-32", pretrained="laion2b_…")``   registry weights (downloaded once, then cached)
``create_model("ViT-B-32", pretrained="x.pt")``        a checkpoint file read into the named config
``create_model("hf-hub:timm/ViT-B-16-SigLIP")``        a Hub repo: open_clip's or Hugging Face's layout
``create_model("path/to/dir_or_file")``                any checkpoint clipworks reads (format detected)
=====================================================  =================================================

A model comes with everything it takes to use it: ``create_model_and_transforms`` adds its preprocessing and
``get_tokenizer`` its tokenizer, whatever the family, without loading weights to find out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch

from .checkpoints import CheckpointError, load_checkpoint, read_config
from .errors import ClipworksError, ConfigError, PretrainedError
from .image.transforms import ImageTransform, image_transform
from .model import Clip, ClipConfig, get_model_config, list_models
from .model.config import load_config_file, normalize_model_name
from .pretrained import (
    HF_HUB_PREFIX,
    PretrainedEntry,
    download_model_dir,
    download_model_weights,
    download_pretrained,
    get_pretrained_cfg,
    hf_layout_entries,
    is_local_path,
    resolve_tokenizer_dir,
)
from .text import Tokenizer, build_tokenizer

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["create_model", "create_model_and_transforms", "create_model_from_pretrained", "get_tokenizer",
           "model_config"]


def _is_config_name(name: str) -> bool:
    base = normalize_model_name(name).removesuffix("-quickgelu")
    return base in list_models()


def _is_path(name: str) -> bool:
    """A checkpoint path rather than a config name (``ViT-B/32`` is a name; ``./ViT-B-32`` a path)."""
    return not _is_config_name(name) and is_local_path(name) and not _is_config_file(name)


def _is_config_file(name: str) -> bool:
    """A model-config JSON (ours or open_clip's, ``open_clip_config.json`` too): an architecture, no weights."""
    return name.endswith(".json") and not Path(name).is_dir()


def _quick(config: ClipConfig, force_quick_gelu: bool) -> ClipConfig:
    return dataclasses.replace(config, quick_gelu=True) if force_quick_gelu else config


def _hub_config(name: str, cache_dir: str | Path | None) -> tuple[ClipConfig, str, Path]:
    """(config, format, directory) of an ``hf-hub:`` repo from its config files alone; a repo clipworks cannot
    build is refused here, before its weights are fetched."""
    directory = download_model_dir(name, cache_dir=cache_dir, weights=False)
    try:
        config, fmt = read_config(directory)
    except (CheckpointError, ConfigError) as e:
        raise PretrainedError(f"{name}: {e}") from e
    return config, fmt, directory


def _hub_model(name: str, cache_dir: str | Path | None, force_quick_gelu: bool = False) -> Clip:
    config, _, directory = _hub_config(name, cache_dir)
    weights = download_model_weights(name, directory, cache_dir)
    try:
        return load_checkpoint(directory, config=dataclasses.replace(config, quick_gelu=True) if force_quick_gelu else None)
    except (CheckpointError, ConfigError) as e:
        raise PretrainedError(f"{name} ({weights.name}): {e}") from e


def _named_config(name: str, force_quick_gelu: bool) -> ClipConfig:
    if _is_config_file(name):
        return _quick(load_config_file(name), force_quick_gelu)
    try:
        config = get_model_config(name)
    except ConfigError as e:
        aliases = hf_layout_entries(name)
        if aliases:  # a registry name for a whole Hub model: it has no config of its own to build at random
            raise ConfigError(f"{name} is a Hugging Face Hub model, not a config: load it with pretrained="
                              f"{aliases[0].tag!r} or as {aliases[0].hf_hub_name!r}") from e
        if name.count("/") == 1:
            raise ConfigError(f"{name!r} is neither a model config name nor an existing path; for a Hugging Face "
                              f"Hub repo write 'hf-hub:{name}'") from e
        raise
    return _quick(config, force_quick_gelu)


def _registry_entry(model_name: str, pretrained: str | None) -> PretrainedEntry | None:
    """The registry entry ``pretrained`` names for ``model_name``; None when it is a path (or None)."""
    if pretrained is None or _is_path(pretrained):
        return None
    return get_pretrained_cfg(model_name, pretrained)


def model_config(model_name: str | ClipConfig, pretrained: str | None = None, cache_dir: str | Path | None = None,
                 force_quick_gelu: bool = False) -> ClipConfig:
    """The config ``create_model`` would build, read without loading weights (Hub repos: config files only)."""
    if isinstance(model_name, ClipConfig):
        return _quick(model_name, force_quick_gelu)
    if model_name.startswith(HF_HUB_PREFIX):
        return _quick(_hub_config(model_name, cache_dir)[0], force_quick_gelu)
    if _is_path(model_name):
        return _quick(read_config(model_name)[0], force_quick_gelu)
    entry = _registry_entry(model_name, pretrained)
    aliases = hf_layout_entries(model_name) if entry is None and not _is_config_name(model_name) else []
    if len(aliases) == 1:  # a Hub model known by its repo name: its config is the repo's
        entry = aliases[0]
    if entry is not None and entry.layout == "hf":
        return _quick(_hub_config(entry.hf_hub_name, cache_dir)[0], force_quick_gelu)
    config = _named_config(model_name, force_quick_gelu)
    return entry.apply(config) if entry is not None else config


def create_model(
    model_name: str | ClipConfig,
    pretrained: str | None = None,
    *,
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    force_quick_gelu: bool = False,
    cache_dir: str | Path | None = None,
) -> Clip:
    """A model in eval mode. ``model_name``: a config name (``ViT-B-32``, also spelled ``ViT-B/32``), a
    ``ClipConfig``, ``hf-hub:org/repo``, or a checkpoint path. ``pretrained``: a registry tag of that config
    (``list_pretrained()``) or a checkpoint path read into it; None gives random weights."""
    if precision not in _DTYPES:
        raise ConfigError(f"precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
    if isinstance(model_name, ClipConfig):
        config = _quick(model_name, force_quick_gelu)
        model = Clip(config).eval() if pretrained is None else load_checkpoint(pretrained, config=config)
    elif model_name.startswith(HF_HUB_PREFIX) or (_is_path(model_name)):
        if pretrained is not None:
            raise ConfigError(f"{model_name} already names its weights; pretrained={pretrained!r} cannot be applied to it")
        if model_name.startswith(HF_HUB_PREFIX):
            model = _hub_model(model_name, cache_dir, force_quick_gelu)
        else:
            model = load_checkpoint(model_name, config=_quick(read_config(model_name)[0], True) if force_quick_gelu else None)
    else:
        entry = _registry_entry(model_name, pretrained)
        if entry is not None and entry.layout == "hf":
            model = _hub_model(entry.hf_hub_name, cache_dir, force_quick_gelu)
        elif entry is not None:
            config = entry.apply(_named_config(model_name, force_quick_gelu))
            weights = download_pretrained(entry, cache_dir=cache_dir)
            try:
                model = load_checkpoint(weights, config=config)
            except (CheckpointError, ConfigError) as e:
                raise PretrainedError(f"{model_name}/{entry.tag}: {entry.hub}/{weights.name} does not fit: {e}") from e
        elif pretrained is None:
            model = Clip(_named_config(model_name, force_quick_gelu)).eval()
        else:
            model = load_checkpoint(pretrained, config=_named_config(model_name, force_quick_gelu))
    return model.to(device=device, dtype=_DTYPES[precision])


def create_model_and_transforms(
    model_name: str | ClipConfig,
    pretrained: str | None = None,
    *,
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    force_quick_gelu: bool = False,
    cache_dir: str | Path | None = None,
) -> tuple[Clip, ImageTransform, ImageTransform]:
    """``(model, preprocess_train, preprocess_val)`` as open_clip returns them; ``preprocess_val(pil_image)`` is
    the tensor ``model.encode_image`` takes, with the model's own size, resize mode, interpolation, mean and std."""
    model = create_model(model_name, pretrained, precision=precision, device=device, force_quick_gelu=force_quick_gelu,
                         cache_dir=cache_dir)
    preprocess = model.config.preprocess()
    return model, image_transform(preprocess, train=True), image_transform(preprocess)


def create_model_from_pretrained(
    model_name: str | ClipConfig,
    pretrained: str | None = None,
    *,
    precision: Precision = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[Clip, ImageTransform]:
    """``(model, preprocess_val)``, open_clip's shortcut for inference."""
    model, _, preprocess = create_model_and_transforms(model_name, pretrained, precision=precision, device=device,
                                                       cache_dir=cache_dir)
    return model, preprocess


def get_tokenizer(model_name: str | ClipConfig | None = None, context_length: int | None = None,
                  cache_dir: str | Path | None = None) -> Tokenizer:
    """The tokenizer of a model — config name, ``ClipConfig``, ``hf-hub:`` repo or checkpoint path — read from its
    config alone. With no model, CLIP's BPE at 77 tokens."""
    if model_name is None:
        config = ClipConfig(embed_dim=512)
    else:
        config = model_config(model_name, cache_dir=cache_dir)
    return tokenizer_for(config, context_length, cache_dir)


def tokenizer_for(config: ClipConfig, context_length: int | None = None, cache_dir: str | Path | None = None) -> Tokenizer:
    cfg = config.tokenizer_cfg
    if cfg.type == "hf":
        cfg = dataclasses.replace(cfg, name=str(resolve_tokenizer_dir(cfg.name, cache_dir)))  # type: ignore[arg-type]
    return build_tokenizer(cfg, context_length or config.text_cfg.context_length)


def describe(model_name: str, pretrained: str | None = None, config: str | None = None,
             cache_dir: str | Path | None = None) -> dict[str, object]:
    """What a model is, from its config alone (no weights are loaded; a bare state-dict file is read to infer
    one): format, tower kinds, embedding size, parameter count, preprocessing, tokenizer, full config."""
    summary: dict[str, object] = {}
    entry = None if model_name.startswith(HF_HUB_PREFIX) or _is_path(model_name) else _registry_entry(
        model_name, pretrained)
    if model_name.startswith(HF_HUB_PREFIX) or (entry is not None and entry.layout == "hf"):
        hub_name = model_name if entry is None else entry.hf_hub_name
        cfg, fmt, directory = _hub_config(hub_name, cache_dir)
        summary.update(name=hub_name, format=fmt, path=str(directory))
        if entry is not None:
            summary.update(pretrained=entry.tag, hub=entry.hub)
    elif _is_path(model_name):
        cfg, fmt = read_config(model_name, config)
        summary.update(path=model_name, format=fmt)
    else:
        cfg = model_config(model_name, pretrained, cache_dir)
        summary.update(name=normalize_model_name(model_name))
        if entry is not None:
            summary.update(pretrained=entry.tag, hub=entry.hub, file=entry.file)
    summary.update(vision_tower=cfg.vision_cfg.kind, text_tower=cfg.text_cfg.kind, parameters=count_parameters(cfg),
                   preprocess=dataclasses.asdict(cfg.preprocess()), tokenizer=dataclasses.asdict(cfg.tokenizer_cfg),
                   context_length=cfg.context_length, config=cfg.to_dict())
    return summary


def count_parameters(config: ClipConfig) -> int | None:
    """Parameters of the model ``config`` builds, counted on the meta device (no memory); None if a tower
    cannot be built without its files."""
    try:
        with torch.device("meta"):
            model = Clip(config.for_checkpoint())
    except (OSError, ClipworksError):
        return None
    return sum(p.numel() for p in model.parameters())
