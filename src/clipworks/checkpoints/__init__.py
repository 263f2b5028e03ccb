"""Load any CLIP checkpoint people have, save in the formats they use.

``load_checkpoint`` detects the format; each format module is a key map that works both ways:

==========  ==========================================================  =====  =====
format      what it looks like                                          read   write
==========  ==========================================================  =====  =====
native      directory: config.json (clipworks) + model.safetensors       yes    yes
hf          directory: config.json (CLIPModel) + safetensors/.bin        yes    yes
openai      state dict .pt/.bin, or OpenAI's TorchScript archive         yes    —
open_clip   state dict, {"state_dict": …}, module. prefix, .safetensors  yes    —
==========  ==========================================================  =====  =====
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

from ..hf_tokenizer import TOKENIZER_FILES, tokenizer_dir
from ..model import Clip, ClipConfig
from ..model.config import ConfigError, TextConfig, get_model_config, load_config_file
from . import hf, openai
from .errors import CheckpointError
from .reader import read_file
from .strict import load_strict
from ..fileio import atomic_dir

NATIVE_MARKER = "clipworks_format"
NATIVE_VERSION = 1
Format = Literal["native", "hf"]

__all__ = ["CheckpointError", "detect_format", "load_checkpoint", "load_state", "save_pretrained"]


def _resolve_config(config: str | Path | ClipConfig | None) -> ClipConfig | None:
    if config is None or isinstance(config, ClipConfig):
        return config
    if str(config).endswith(".json") or Path(config).is_file():
        return load_config_file(config)
    return get_model_config(str(config))


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
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {cfg_path}: {e}") from e
    if NATIVE_MARKER in cfg:
        return "native"
    if cfg.get("model_type") == "clip" or "text_config" in cfg or "vision_config" in cfg:
        return "hf"
    raise CheckpointError(f"{cfg_path} is neither a clipworks config nor a Hugging Face CLIPModel config")


def _read_weights(directory: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for name in names:
        p = directory / name
        if p.is_file():
            return read_file(p)[0]
    index = directory / "model.safetensors.index.json"
    if index.is_file():  # sharded Hugging Face weights
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(directory / shard)).items()}
    raise CheckpointError(f"{directory} has no weights file (looked for {', '.join(names)})")


def load_state(path: str | Path, config: str | Path | ClipConfig | None = None) -> tuple[ClipConfig, dict[str, torch.Tensor], str]:
    """(config, native state dict, format name) without building the model."""
    path = Path(path)
    cfg = _resolve_config(config)
    kind = detect_format(path)
    if kind == "native":
        meta = json.loads((path / "config.json").read_text())
        if meta[NATIVE_MARKER] > NATIVE_VERSION:
            raise CheckpointError(f"{path} is clipworks format {meta[NATIVE_MARKER]}; this version reads up to {NATIVE_VERSION}")
        if cfg is None:
            cfg = ClipConfig.from_dict(meta["model"], where=str(path / "config.json"))
            if cfg.text_cfg.is_hf and (path / "tokenizer.json").is_file():
                cfg.text_cfg.hf_tokenizer_name = str(path.resolve())  # the tokenizer travels with the weights
        return cfg, _read_weights(path, ("model.safetensors",)), "native"
    if kind == "hf":
        hf_cfg = json.loads((path / "config.json").read_text())
        cfg = cfg or hf.config_from_hf(hf_cfg, str(path / "config.json"))
        sd = _read_weights(path, ("model.safetensors", "pytorch_model.bin"))
        return cfg, hf.to_native(sd), "hf"
    if kind == "open_clip_dir":
        oc = json.loads((path / "open_clip_config.json").read_text())
        if cfg is None:
            model_cfg: dict[str, Any] = dict(oc.get("model_cfg", {}))
            model_cfg.pop("custom_text", None)
            cfg = ClipConfig.from_dict(model_cfg, where=str(path / "open_clip_config.json"))
        sd = _read_weights(path, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
        return cfg, openai.to_native(sd), "open_clip"
    sd, meta = read_file(path)
    if hf.is_hf_layout(sd):
        if cfg is None:
            raise CheckpointError(f"{path} holds Hugging Face CLIP weights without their config.json; pass config=")
        return cfg, hf.to_native(sd), "hf"
    if openai.is_openai_layout(sd):
        if cfg is None:
            # A bare state dict does not record its activation: OpenAI's weights use QuickGELU; an
            # open_clip training checkpoint names its model config, and that name says which.
            name = meta.get("name")
            quick = ("quickgelu" in name) if isinstance(name, str) else True
            cfg = openai.infer_config(sd, quick_gelu=quick, source=str(path))
        return cfg, openai.to_native(sd), "openai" if meta.get("torchscript") else "open_clip"
    if any(k.startswith("visual.") for k in sd) and "text.token_embedding.weight" in sd:
        if cfg is None:
            cfg = openai.infer_config(openai.from_native(sd), quick_gelu=True, source=str(path))
        return cfg, sd, "native"
    sample = ", ".join(list(sd)[:5])
    raise CheckpointError(
        f"{path} does not look like a CLIP checkpoint: no 'visual.*' + 'token_embedding.weight' (OpenAI/open_clip) "
        f"or 'vision_model.*'/'text_model.*' (Hugging Face) keys; it starts with: {sample}"
    )


def load_checkpoint(
    path: str | Path, config: str | Path | ClipConfig | None = None, device: str | torch.device = "cpu"
) -> Clip:
    """A ``Clip`` in eval mode with the weights of ``path``, whatever its format.

    ``config`` (a model name such as "ViT-B-32", a JSON path, or a ClipConfig) overrides what the
    checkpoint says or implies — e.g. the activation, which a bare state dict does not record.
    """
    try:
        cfg, sd, kind = load_state(path, config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e
    model = Clip(cfg)
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
        tokenizer_files = _hf_tokenizer_files(model.config.text_cfg) if model.config.text_cfg.is_hf else []
        with atomic_dir(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps({NATIVE_MARKER: NATIVE_VERSION, "model": model.config.to_dict()}, indent=2))
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            for f in tokenizer_files:
                shutil.copyfile(f, tmp / f.name)
    elif format == "hf":
        hf_config = hf.config_to_hf(model.config)
        hf_state = hf.from_native(state)
        with atomic_dir(directory) as tmp:
            (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
            save_file(hf_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            _write_hf_processor_files(tmp, model.config)
    else:
        raise ValueError(f"unknown format {format!r}; expected 'native' or 'hf'")
    return directory


def _hf_tokenizer_files(text_cfg: TextConfig) -> list[Path]:
    """A Hugging Face text tower's tokenizer files, saved with the model so it tokenizes without them."""
    source = tokenizer_dir(text_cfg)
    if not (source / "tokenizer.json").is_file():
        raise CheckpointError(
            f"cannot save: the text tower's tokenizer {source / 'tokenizer.json'} is missing, "
            "and a saved model without it could not tokenize"
        )
    return [source / name for name in TOKENIZER_FILES if (source / name).is_file()]


def _write_hf_processor_files(directory: Path, config: ClipConfig) -> None:
    """Tokenizer and image-processor files, so ``CLIPProcessor.from_pretrained(directory)`` works too."""
    from ..tokenizer import _vocab_and_merges
    from ..transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    vocab, merges = _vocab_and_merges()
    hf_names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    (directory / "vocab.json").write_text(json.dumps({hf_names.get(k, k): v for k, v in vocab.items()}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": config.text_cfg.context_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "do_lower_case": True,
    }, indent=2))
    size = config.vision_cfg.image_size
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True,
    }, indent=2))
