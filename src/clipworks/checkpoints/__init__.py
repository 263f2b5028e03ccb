"""Load any CLIP checkpoint people have, save in the formats they use.

``load_checkpoint`` detects the format; each format module maps config and keys to ours (and back, where we
write it). A checkpoint is self-describing: from it alone come the model, its preprocessing and its tokenizer.

=============  ========================================================================  =====  =====
format         what it looks like                                                        read   write
=============  ========================================================================  =====  =====
native         directory: config.json (clipworks) + model.safetensors (+ tokenizer files)  yes    yes
hf             directory: config.json of a CLIPModel, SiglipModel, AlignModel or            yes    CLIP
               MetaClip2Model + safetensors/.bin (+ tokenizer and preprocessor files)
openai         state dict .pt/.bin, or OpenAI's TorchScript archive                       yes    —
open_clip      state dict, {"state_dict": …}, module. prefix, .safetensors, or a hub        yes    —
               directory (open_clip_config.json + weights), any tower open_clip builds
=============  ========================================================================  =====  =====
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError, ConfigError, UsageError
from ..fileio import atomic_dir
from ..model import Clip, ClipConfig
from ..model.config import get_model_config, load_config_file
from ..text.hf_dir import TOKENIZER_FILES
from . import hf, open_clip, openai
from .reader import read_file
from .strict import load_strict

NATIVE_MARKER = "clipworks_format"
NATIVE_VERSION = 2  # 2: preprocess_cfg and tokenizer_cfg in the config; 1 still reads
Format = Literal["native", "hf"]
# Hugging Face ``model_type`` → the module that reads that family's directories.
HF_FAMILIES = {"clip": "hf", "siglip": "hf_siglip", "align": "hf_align", "metaclip_2": "hf_metaclip2"}
# Hugging Face ``model_type``s clipworks knows of and does not read, with what to say instead.
HF_NOT_READ = {"siglip2": "SigLIP 2 NaFlex (Siglip2Model: variable resolution and aspect ratio) is not supported; "
                          "the fixed-resolution SigLIP 2 checkpoints (google/siglip2-base-patch16-224, …) are "
                          "SiglipModel directories and load"}

__all__ = ["CheckpointError", "detect_format", "hf_family", "load_checkpoint", "load_state", "read_config",
           "save_pretrained"]


def _resolve_config(config: str | Path | ClipConfig | None) -> ClipConfig | None:
    if config is None or isinstance(config, ClipConfig):
        return config
    if str(config).endswith(".json") or Path(config).is_file():
        return load_config_file(config)
    return get_model_config(str(config))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def detect_format(path: str | Path) -> str:
    """'native', 'hf', 'open_clip_dir' for directories; 'file' for a single checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        return "file"
    if (path / "open_clip_config.json").is_file():
        return "open_clip_dir"
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is a directory without config.json or open_clip_config.json")
    cfg = _read_json(cfg_path)
    if NATIVE_MARKER in cfg:
        return "native"
    if "model_type" in cfg or "text_config" in cfg or "vision_config" in cfg:
        return "hf"
    raise CheckpointError(f"{cfg_path} is neither a clipworks config nor a Hugging Face model config (no model_type)")


def hf_family(hf_cfg: dict[str, Any], source: str) -> ModuleType:
    """The module reading Hugging Face directories of this ``model_type``, or an error listing the supported ones."""
    model_type = hf_cfg.get("model_type", "clip" if "text_config" in hf_cfg else None)
    if model_type in HF_NOT_READ:
        raise CheckpointError(f"{source}: model_type {model_type!r}: {HF_NOT_READ[model_type]}")
    if model_type not in HF_FAMILIES:
        raise CheckpointError(f"{source}: Hugging Face model_type {model_type!r} is not supported; clipworks reads "
                              f"{', '.join(sorted(HF_FAMILIES))}")
    return importlib.import_module(f"{__name__}.{HF_FAMILIES[model_type]}")


def _read_weights(directory: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for name in names:
        p = directory / name
        if p.is_file():
            return read_file(p)[0]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():  # sharded Hugging Face weights
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing or not shards:
                raise CheckpointError(f"{index} lists shard(s) that are not there: {', '.join(missing) or '(none listed)'}")
            return {k: v for shard in shards for k, v in read_file(directory / shard)[0].items()}
    raise CheckpointError(f"{directory} has no weights file (looked for {', '.join(names)})")


def _with_local_tokenizer(cfg: ClipConfig, directory: Path) -> ClipConfig:
    """A checkpoint that ships its tokenizer files tokenizes with them, wherever its config says they came from."""
    if cfg.tokenizer_cfg.type == "hf" and any((directory / f).is_file() for f in TOKENIZER_FILES):
        return dataclasses.replace(cfg, tokenizer_cfg=dataclasses.replace(cfg.tokenizer_cfg, name=str(directory.resolve())))
    return cfg


def read_config(path: str | Path, config: str | Path | ClipConfig | None = None) -> tuple[ClipConfig, str]:
    """(config, format) of a checkpoint without reading its weights where the format allows — directories carry
    their config; a bare state-dict file is read to infer one."""
    path = Path(path)
    cfg = _resolve_config(config)
    kind = detect_format(path)
    if kind == "native":
        meta = _read_json(path / "config.json")
        if not isinstance(meta[NATIVE_MARKER], int) or meta[NATIVE_MARKER] > NATIVE_VERSION:
            raise CheckpointError(f"{path} is clipworks format {meta[NATIVE_MARKER]}; this version reads up to {NATIVE_VERSION}")
        if cfg is None:
            cfg = ClipConfig.from_dict(meta.get("model", {}), where=str(path / "config.json"))
        return _with_local_tokenizer(cfg, path), "native"
    if kind == "hf":
        hf_cfg = _read_json(path / "config.json")
        family = hf_family(hf_cfg, str(path / "config.json"))
        cfg = cfg or family.config_from_hf(hf_cfg, path)
        return _with_local_tokenizer(cfg, path), "hf"
    if kind == "open_clip_dir":
        if cfg is None:
            cfg = open_clip.config_from_open_clip(_read_json(path / "open_clip_config.json"), str(path / "open_clip_config.json"))
        return _with_local_tokenizer(cfg, path), "open_clip"
    cfg_file, _, kind = _read_file_state(path, cfg)
    return cfg_file, kind


def _known_config(name: object) -> ClipConfig | None:
    if not isinstance(name, str):
        return None
    try:
        return get_model_config(name)
    except ConfigError:
        return None


def _read_file_state(path: Path, cfg: ClipConfig | None) -> tuple[ClipConfig, dict[str, torch.Tensor], str]:
    sd, meta = read_file(path)
    # An open_clip training checkpoint names its model config; when it is one of ours it gives the whole
    # architecture (shapes cannot tell head counts, activations or timm trunks apart).
    cfg = cfg or _known_config(meta.get("name"))
    if hf.is_hf_layout(sd):
        if cfg is None:
            raise CheckpointError(f"{path} holds Hugging Face weights without their config.json; pass config= or load "
                                  "the whole directory")
        return cfg, hf.to_native(sd), "hf"
    if openai.is_openai_layout(sd):
        if cfg is None:
            if any(k.startswith(("visual.trunk.", "text.")) for k in sd):
                raise CheckpointError(f"{path} holds an open_clip model with a timm or custom tower; its architecture "
                                      "cannot be read off the weights: pass config= (e.g. the open_clip model name)")
            # A bare state dict does not record its activation: OpenAI's weights use QuickGELU; a training
            # checkpoint's model name (even one of a config we do not have) says which.
            name = meta.get("name")
            quick = ("quickgelu" in name) if isinstance(name, str) else True
            cfg = openai.infer_config(sd, quick_gelu=quick, source=str(path))
        return cfg, open_clip.to_native(sd, cfg), "openai" if meta.get("torchscript") else "open_clip"
    if any(k.startswith("visual.") for k in sd) and any(k.startswith("text.") for k in sd):
        if cfg is None:
            if "text.token_embedding.weight" not in sd or any(k.startswith("visual.trunk.") for k in sd):
                raise CheckpointError(f"{path} holds a model with a timm or custom tower (open_clip's custom_text "
                                      "models, SigLIP); its architecture cannot be read off the weights: pass config= "
                                      "(e.g. the open_clip model name)")
            cfg = openai.infer_config(openai.from_native(sd), quick_gelu=True, source=str(path))
        return cfg, open_clip.to_native(sd, cfg), "native"
    sample = ", ".join(list(sd)[:5])
    raise CheckpointError(
        f"{path} does not look like a CLIP checkpoint: no 'visual.*' + 'token_embedding.weight' (OpenAI/open_clip) "
        f"or 'vision_model.*'/'text_model.*' (Hugging Face) keys; it starts with: {sample}"
    )


def load_state(path: str | Path, config: str | Path | ClipConfig | None = None) -> tuple[ClipConfig, dict[str, torch.Tensor], str]:
    """(config, native state dict, format name) without building the model."""
    path = Path(path)
    kind = detect_format(path)
    if kind == "file":
        return _read_file_state(path, _resolve_config(config))
    cfg, fmt = read_config(path, config)
    if kind == "native":
        return cfg, _read_weights(path, ("model.safetensors",)), fmt
    if kind == "hf":
        family = hf_family(_read_json(path / "config.json"), str(path / "config.json"))
        sd = _read_weights(path, ("model.safetensors", "pytorch_model.bin"))
        return cfg, family.to_native(sd, cfg), fmt
    sd = _read_weights(path, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
    return cfg, open_clip.to_native(sd, cfg), fmt


def load_checkpoint(
    path: str | Path, config: str | Path | ClipConfig | None = None, device: str | torch.device = "cpu"
) -> Clip:
    """A ``Clip`` in eval mode with the weights of ``path``, whatever its format.

    ``config`` (a model name such as "ViT-B-32", a JSON path, or a ClipConfig) overrides what the
    checkpoint says or implies — e.g. the activation, which a bare state dict does not record.
    """
    try:
        cfg, sd, kind = load_state(path, config)
        model = Clip(cfg.for_checkpoint())
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e
    load_strict(model, sd, f"checkpoint {path} ({kind} format)")
    return model.to(device).eval()


def save_pretrained(model: Clip, directory: str | Path, format: Format = "native",
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` to ``directory`` atomically: the directory appears complete, or not at all.

    ``state_dict`` replaces ``model.state_dict()`` (a sharded model's gathered full state)."""
    directory = Path(directory)
    source = model.state_dict() if state_dict is None else state_dict
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in source.items()
             if not k.endswith("num_batches_tracked")}
    if format == "native":
        tokenizer_files = _tokenizer_files(model.config)
        with atomic_dir(directory) as tmp:
            config = model.config.for_checkpoint()  # the weights are in this directory, never re-fetched
            (tmp / "config.json").write_text(json.dumps({NATIVE_MARKER: NATIVE_VERSION, "model": config.to_dict()}, indent=2))
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            for f in tokenizer_files:
                shutil.copyfile(f, tmp / f.name)
    elif format == "hf":
        hf_config = hf.config_to_hf(model.config)
        hf_state = hf.from_native(state)
        with atomic_dir(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
            save_file(hf_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            hf.write_processor_files(tmp, model.config)
    else:
        raise UsageError(f"unknown format {format!r}; expected 'native' or 'hf'")
    return directory


def _tokenizer_files(config: ClipConfig) -> list[Path]:
    """The tokenizer files of an ``hf`` tokenizer, saved with the model so it tokenizes without its source."""
    if config.tokenizer_cfg.type != "hf":
        return []
    from ..pretrained import resolve_tokenizer_dir

    source = resolve_tokenizer_dir(config.tokenizer_cfg.name)  # type: ignore[arg-type]
    files = [source / name for name in TOKENIZER_FILES if (source / name).is_file()]
    if not files:
        raise CheckpointError(f"cannot save: the tokenizer directory {source} holds none of {', '.join(TOKENIZER_FILES)}, "
                              "and a saved model without them could not tokenize")
    return files
