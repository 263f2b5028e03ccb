"""Pretrained weights by name, with open_clip's conventions: ``("ViT-B-32", "laion2b_s34b_b79k")``.

The registry is data (``registry.json``): model config name → tag → where the weights live on the Hugging Face
Hub, and what the weights need that the architecture does not say (QuickGELU, the preprocessing they were
trained with). Everything is downloaded through ``huggingface_hub`` (see ``hub``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import MissingFileError, PretrainedError
from ..model.config import ClipConfig, normalize_model_name
from .hub import HF_HUB_PREFIX, download_first, download_model_dir, download_tokenizer_dir

DEFAULT_FILE = "open_clip_pytorch_model.bin"

__all__ = ["HF_HUB_PREFIX", "PretrainedEntry", "download_model_dir", "get_pretrained_cfg", "list_pretrained",
           "list_pretrained_tags_by_model", "resolve_tokenizer_dir", "download_pretrained"]


@dataclass(frozen=True)
class PretrainedEntry:
    model: str
    tag: str
    hub: str                                   # Hub repo id holding the weights
    file: str = DEFAULT_FILE                   # its safetensors twin is tried first
    quick_gelu: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessConfig fields the weights need
    notes: str = ""

    def apply(self, config: ClipConfig) -> ClipConfig:
        """``config`` as these weights need it: their activation and their preprocessing."""
        preprocess = dataclasses.replace(config.preprocess_cfg, **self.preprocess) if self.preprocess else config.preprocess_cfg
        return dataclasses.replace(config, quick_gelu=config.quick_gelu or self.quick_gelu, preprocess_cfg=preprocess)


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, PretrainedEntry]]:
    data = json.loads((resources.files("clipworks") / "pretrained" / "registry.json").read_text())
    out: dict[str, dict[str, PretrainedEntry]] = {}
    for model, tags in data.items():
        if model.startswith("_"):
            continue  # comments
        for tag, entry in tags.items():
            out.setdefault(model, {})[_clean_tag(tag)] = PretrainedEntry(model=model, tag=tag, **entry)
    return out


def list_pretrained(as_str: bool = False) -> list[tuple[str, str]] | list[str]:
    """Every (model, tag) with weights, as open_clip lists them; ``as_str`` gives ``model:tag`` strings."""
    pairs = [(model, e.tag) for model, tags in _registry().items() for e in tags.values()]
    return [f"{m}:{t}" for m, t in pairs] if as_str else pairs


def list_pretrained_tags_by_model(model: str) -> list[str]:
    return [e.tag for e in _registry().get(normalize_model_name(model), {}).values()]


def get_pretrained_cfg(model: str, tag: str) -> PretrainedEntry:
    """The registry entry of ``model``/``tag``, or an error listing the model's tags (or the models with weights)."""
    model = normalize_model_name(model)
    tags = _registry().get(model)
    if model.endswith("-quickgelu") and tags is None:
        tags = _registry().get(model[: -len("-quickgelu")])
    if not tags:
        known = sorted(_registry())
        raise PretrainedError(f"no pretrained weights are registered for model {model!r}; models with weights: "
                              f"{', '.join(known)} (or pass a checkpoint path, or hf-hub:org/repo)")
    entry = tags.get(_clean_tag(tag))
    if entry is None:
        raise PretrainedError(f"unknown pretrained tag {tag!r} for {model}; its tags: "
                              f"{', '.join(e.tag for e in tags.values())}")
    return entry


def download_pretrained(entry: PretrainedEntry, cache_dir: str | Path | None = None) -> Path:
    """The weights file of a registry entry (its safetensors twin when the repo has one)."""
    names = [entry.file]
    if entry.file.endswith((".bin", ".pth", ".pt")):
        stem = entry.file.rsplit(".", 1)[0]
        names.insert(0, "open_clip_model.safetensors" if entry.file == DEFAULT_FILE else stem + ".safetensors")
    return download_first(entry.hub, names, cache_dir=cache_dir)


def resolve_tokenizer_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding tokenizer files: ``name`` itself when it is one, else its Hub repo's files."""
    path = Path(name)
    if path.is_dir():
        return path
    if path.is_absolute() or name.startswith((".", "~")):
        raise MissingFileError(f"tokenizer directory {name} does not exist")
    return download_tokenizer_dir(name, cache_dir)
