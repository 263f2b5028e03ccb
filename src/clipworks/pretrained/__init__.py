"""Pretrained weights by name, with open_clip's conventions: ``("ViT-B-32", "laion2b_s34b_b79k")``.

The registry is data (``registry.json``, written by ``tools/registry_from_open_clip.py``): model config name →
tag → where the weights live on the Hugging Face Hub, and what the weights need that the architecture does not
say (QuickGELU, the preprocessing they were trained with). Two layouts:

* ``open_clip`` (the default): one weights file in the repo, read into the named config (``configs/<model>.json``).
* ``hf``: the repo is a whole model (its own ``config.json``); the entry is an alias of ``hf-hub:<repo>``, named
  the way people know it: ``("siglip-base-patch16-224", "google")``.

Names are spelled as open_clip spells them (``ViT-B/32`` is ``ViT-B-32``; tags ignore case and ``-``/``_``), and
``<model>-quickgelu`` lists the QuickGELU tags of ``<model>``. ``register_pretrained`` adds a user's own weights.
Everything is downloaded through ``huggingface_hub`` (see ``hub``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingFileError, PretrainedError
from ..model.config import QUICKGELU_SUFFIX, ClipConfig, PreprocessConfig, get_model_config, normalize_model_name
from .hub import (
    HF_HUB_PREFIX,
    download_first,
    download_model_dir,
    download_model_weights,
    download_tokenizer_dir,
    is_local_path,
    split_repo,
)

DEFAULT_FILE = "open_clip_pytorch_model.bin"
LAYOUTS = ("open_clip", "hf")

__all__ = ["HF_HUB_PREFIX", "PretrainedEntry", "download_model_dir", "download_model_weights", "download_pretrained",
           "get_pretrained_cfg", "list_pretrained", "list_pretrained_tags_by_model", "register_pretrained",
           "resolve_tokenizer_dir"]


@dataclass(frozen=True)
class PretrainedEntry:
    model: str
    tag: str
    hub: str                                   # Hub repo id holding the weights
    file: str = DEFAULT_FILE                   # its safetensors twin is tried first
    quick_gelu: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessConfig fields the weights need
    layout: str = "open_clip"                  # open_clip: a weights file for the named config; hf: a whole model
    model_type: str | None = None              # hf layout: the Hugging Face model_type of the repo's config
    notes: str = ""

    @property
    def hf_hub_name(self) -> str:
        return HF_HUB_PREFIX + self.hub

    def apply(self, config: ClipConfig) -> ClipConfig:
        """``config`` as these weights need it: their activation and their preprocessing."""
        preprocess = dataclasses.replace(config.preprocess_cfg, **self.preprocess) if self.preprocess else config.preprocess_cfg
        return dataclasses.replace(config, quick_gelu=config.quick_gelu or self.quick_gelu, preprocess_cfg=preprocess)


def _clean_tag(tag: str) -> str:
    return tag.lower().replace("-", "_")


def _entry(model: str, tag: str, data: dict[str, Any], where: str) -> PretrainedEntry:
    """An entry checked the way a config is: unknown keys, layouts, repo ids and preprocess fields are named."""
    known = {f.name for f in dataclasses.fields(PretrainedEntry)} - {"model", "tag"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
    if "hub" not in data:
        raise ConfigError(f"{where}: no 'hub' (the Hugging Face Hub repo id holding the weights)")
    entry = PretrainedEntry(model=model, tag=tag, **data)
    if entry.layout not in LAYOUTS:
        raise ConfigError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, got {entry.layout!r}")
    try:
        split_repo(entry.hub)
    except PretrainedError as e:
        raise ConfigError(f"{where}: {e}") from e
    if not isinstance(entry.preprocess, dict):
        raise ConfigError(f"{where}: preprocess must be a mapping of PreprocessConfig fields")
    bad = sorted(set(entry.preprocess) - {f.name for f in dataclasses.fields(PreprocessConfig)})
    if bad:
        raise ConfigError(f"{where}: preprocess has unknown field(s) {', '.join(map(repr, bad))}")
    PreprocessConfig(**entry.preprocess)  # values checked here, not when a model is built
    if entry.layout == "hf" and (entry.preprocess or entry.quick_gelu or entry.file != DEFAULT_FILE):
        raise ConfigError(f"{where}: an hf-layout entry takes its file, activation and preprocessing from the repo's "
                          "own config; give only hub (and model_type)")
    return entry


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, PretrainedEntry]]:
    path = resources.files("clipworks") / "pretrained" / "registry.json"
    data = json.loads(path.read_text())
    out: dict[str, dict[str, PretrainedEntry]] = {}
    for model, tags in data.items():
        if model.startswith("_"):
            continue  # comments
        for tag, entry in tags.items():
            out.setdefault(model, {})[_clean_tag(tag)] = _entry(model, tag, entry, f"{path}: {model}/{tag}")
    return out


def register_pretrained(model: str, tag: str, hub: str, *, file: str = DEFAULT_FILE, quick_gelu: bool = False,
                        preprocess: dict[str, Any] | None = None, layout: str = "open_clip",
                        replace: bool = False) -> PretrainedEntry:
    """Name your own weights: afterwards ``create_model(model, pretrained=tag)`` downloads ``file`` from the Hub
    repo ``hub`` (its safetensors twin first) and reads it into the config ``model``, with ``quick_gelu`` and the
    ``preprocess`` fields (mean, std, interpolation, resize_mode, …) the weights were trained with. With
    ``layout="hf"`` the repo is a whole model and ``model`` is just its name here. Registering a (model, tag)
    that exists is refused unless ``replace=True``."""
    model = normalize_model_name(model)
    where = f"register_pretrained({model!r}, {tag!r})"
    if model.endswith(QUICKGELU_SUFFIX) and layout != "hf":
        raise ConfigError(f"{where}: register QuickGELU weights under {model[: -len(QUICKGELU_SUFFIX)]!r} with "
                          f"quick_gelu=True; the {QUICKGELU_SUFFIX} name then lists them too")
    data: dict[str, Any] = {"hub": hub.removeprefix(HF_HUB_PREFIX), "layout": layout}
    if layout != "hf":
        data.update(file=file, quick_gelu=quick_gelu, preprocess=dict(preprocess or {}))
        try:
            get_model_config(model)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e
    elif file != DEFAULT_FILE or quick_gelu or preprocess:
        raise ConfigError(f"{where}: an hf-layout repo carries its own file, activation and preprocessing")
    entry = _entry(model, tag, data, where)
    tags = _registry().setdefault(model, {})
    if _clean_tag(tag) in tags and not replace:
        raise ConfigError(f"{where}: already registered (to {tags[_clean_tag(tag)].hub}); pass replace=True to change it")
    tags[_clean_tag(tag)] = entry
    return entry


def _quickgelu_tags() -> dict[str, list[PretrainedEntry]]:
    """open_clip's ``<model>-quickgelu`` names: the QuickGELU tags of each model, derived, not stored."""
    out = {}
    for model, tags in _registry().items():
        quick = [e for e in tags.values() if e.quick_gelu]
        if quick:
            out[model + QUICKGELU_SUFFIX] = quick
    return out


def list_pretrained(as_str: bool = False, quickgelu_aliases: bool = True) -> list[tuple[str, str]] | list[str]:
    """Every (model, tag) with weights, as open_clip lists them (with its ``-quickgelu`` aliases unless
    ``quickgelu_aliases=False``); ``as_str`` gives ``model:tag`` strings."""
    pairs = [(model, e.tag) for model, tags in _registry().items() for e in tags.values()]
    if quickgelu_aliases:
        pairs += [(model, e.tag) for model, entries in _quickgelu_tags().items() for e in entries]
    return [f"{m}:{t}" for m, t in pairs] if as_str else pairs


def list_pretrained_tags_by_model(model: str) -> list[str]:
    model = normalize_model_name(model)
    entries = list(_registry().get(model, {}).values()) or _quickgelu_tags().get(model, [])
    return [e.tag for e in entries]


def get_pretrained_cfg(model: str, tag: str) -> PretrainedEntry:
    """The registry entry of ``model``/``tag``, or an error listing the model's tags (or the models with weights).
    ``<model>-quickgelu`` takes only the QuickGELU tags of ``<model>``, as in open_clip."""
    model = normalize_model_name(model)
    registry = _registry()
    if model in registry:
        entries = list(registry[model].values())
    else:
        entries = _quickgelu_tags().get(model, [])
    if not entries:
        base = model.removesuffix(QUICKGELU_SUFFIX)
        if base != model and base in registry:
            raise PretrainedError(f"{base} has no QuickGELU weights, so {model} has none; its tags: "
                                  f"{', '.join(e.tag for e in registry[base].values())} (use the name {base})")
        raise PretrainedError(f"no pretrained weights are registered for model {model!r}; models with weights: "
                              f"{', '.join(sorted(registry))} (or pass a checkpoint path, or hf-hub:org/repo)")
    for entry in entries:
        if _clean_tag(entry.tag) == _clean_tag(tag):
            return entry
    hint = ""
    base = model.removesuffix(QUICKGELU_SUFFIX)
    if base != model and _clean_tag(tag) in registry.get(base, {}):
        hint = f" ({base}/{tag} was trained with GELU: use the name {base})"
    raise PretrainedError(f"unknown pretrained tag {tag!r} for {model}; its tags: "
                          f"{', '.join(e.tag for e in entries)}{hint}")


def hf_layout_entries(model: str) -> list[PretrainedEntry]:
    """The hf-layout entries registered under ``model`` (a name that is a Hub repo, not a config)."""
    return [e for e in _registry().get(normalize_model_name(model), {}).values() if e.layout == "hf"]


def download_pretrained(entry: PretrainedEntry, cache_dir: str | Path | None = None) -> Path:
    """The weights file of an open_clip-layout entry (its safetensors twin when the repo has one, as open_clip
    looks for it)."""
    if entry.layout != "open_clip":
        raise PretrainedError(f"{entry.model}/{entry.tag} is a whole Hugging Face model: load {entry.hf_hub_name}")
    names = [entry.file]
    if entry.file == DEFAULT_FILE:
        names.insert(0, "open_clip_model.safetensors")
    elif entry.file.endswith((".bin", ".pth")):
        names.insert(0, entry.file.rsplit(".", 1)[0] + ".safetensors")
    return download_first(entry.hub, names, cache_dir=cache_dir)


def resolve_tokenizer_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """A local directory holding tokenizer files: ``name`` itself when it is one, else its Hub repo's files."""
    if is_local_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise MissingFileError(f"tokenizer directory {name} does not exist")
        return path
    return download_tokenizer_dir(name, cache_dir)
