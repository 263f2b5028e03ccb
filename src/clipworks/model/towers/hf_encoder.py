"""A Hugging Face encoder inside a clipworks tower: found by name, built from its config, seen as blocks and head.

Both Hugging Face towers (``hf_text``, ``hf_vision``) wrap a ``transformers`` model rather than re-implement it.
This module is what they share:

- ``resolve_config``: the encoder's config.json from a local directory, or from a Hub repo id (``xlm-roberta-base``,
  ``google/efficientnet-b0``) through ``clipworks.pretrained.hub``, i.e. the Hugging Face cache;
- ``build``: the model from that config with random weights (a checkpoint fills them), or with the weights of the
  directory / repo when the tower is asked for pretrained ones and nothing else will fill them;
- ``find_blocks`` / ``params_after``: the repeated blocks and what follows them, found by shape rather than a
  per-architecture table, so a new encoder needs no code.

``transformers`` is needed only here (the ``hf`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ...errors import ConfigError, PretrainedError, require
from ...pretrained.hub import is_local_path


def transformers(what: str) -> ModuleType:
    return require("transformers", "hf", what)


def _read(path: Path, field: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{field}: cannot read {path}: {e}") from e
    if not isinstance(data, dict) or "model_type" not in data:
        raise ConfigError(f"{field}: {path} is not a Hugging Face model config (no 'model_type')")
    return data


def resolve_config(name: str, field: str) -> dict[str, Any]:
    """The encoder's config.json as a dict: ``name`` is a local model directory or a Hub repo id (its config.json
    is downloaded into the Hugging Face cache, or read from it offline; never its weights)."""
    if is_local_path(name):
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            what = "has no config.json" if path.is_dir() else "does not exist"
            raise ConfigError(f"{field}: {path} {what}; it must be a Hugging Face model directory (config.json + "
                              "weights) or a Hub repo id such as 'xlm-roberta-base'")
        return _read(path / "config.json", field)
    from ...pretrained.hub import download_file, split_repo

    repo, revision = split_repo(name)
    try:
        return _read(download_file(repo, "config.json", revision), field)
    except PretrainedError as e:
        raise PretrainedError(f"{field}={name!r} is not a local directory; as a Hub repo: {e}") from e


def _weights_dir(name: str, field: str) -> Path:
    """A directory holding the encoder's config.json and weights: ``name`` itself, or its Hub snapshot."""
    if is_local_path(name):
        return Path(name).expanduser()
    from ...pretrained.hub import download_file, download_model_weights, split_repo

    repo, revision = split_repo(name)
    try:
        directory = download_file(repo, "config.json", revision).parent
        download_model_weights(name, directory)
    except PretrainedError as e:
        raise PretrainedError(f"{field}={name!r}: the encoder's pretrained weights: {e}") from e
    return directory


def model_class(config: Any, what: str) -> type:
    """The model class of a transformers config: ``AutoModel``'s, or for configs it does not map (the towers of a
    two-tower model: ``AlignVisionConfig``) the ``…Model`` class named after the config class."""
    t = transformers(what)
    mapping = t.models.auto.modeling_auto.MODEL_MAPPING
    if type(config) in mapping:
        return mapping[type(config)]
    cls = getattr(t, type(config).__name__.removesuffix("Config") + "Model", None)
    if cls is None:
        raise ConfigError(f"{what}: transformers has no model class for model_type {config.model_type!r}")
    return cls


def build(hf_config: dict[str, Any], name: str | None, pretrained: bool, what: str, field: str) -> nn.Module:
    """The encoder, in float32 and train mode (``from_pretrained`` keeps the file's dtype and returns eval mode;
    ``from_config`` does neither: both paths must give the same module). Its weights are random unless
    ``pretrained``: then they are read from ``name`` (a directory, or a Hub repo through the cache)."""
    t = transformers(what)
    config = t.AutoConfig.for_model(hf_config["model_type"], **{k: v for k, v in hf_config.items() if k != "model_type"})
    cls = model_class(config, what)
    if pretrained and name is not None:
        encoder = cls.from_pretrained(str(_weights_dir(name, field)), local_files_only=True)
    else:
        encoder = cls(config)
    return encoder.float().train()


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The encoder's stack of repeated blocks: the ModuleList as long as ``num_hidden_layers`` (``encoder.layer``
    for BERT, ``encoder.blocks`` for ALIGN's EfficientNet), else the longest one (EfficientNet counts its
    hidden layers otherwise)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for module in lists:
        if len(module) == n:
            return module
    if not lists:
        raise ValueError(f"cannot find the repeated blocks of {type(model).__name__}: it has no nn.ModuleList")
    return max(lists, key=len)


def params_after(model: nn.Module, blocks: nn.ModuleList) -> list[nn.Parameter]:
    """The parameters registered after the last block: a final norm, a top convolution, nothing in BERT."""
    inside = {id(p) for p in blocks.parameters()}
    params = list(model.parameters())
    last = max((i for i, p in enumerate(params) if id(p) in inside), default=len(params) - 1)
    return params[last + 1:]


def output_width(model: nn.Module) -> int:
    """The width the encoder ends on: the feature count of its last normalisation, linear or convolution layer
    (a ViT's final LayerNorm, EfficientNet's last BatchNorm), read off the modules rather than a per-architecture
    config key (ALIGN's ``hidden_dim`` is not its output width)."""
    for module in reversed(list(model.modules())):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return int(module.num_features)
        if isinstance(module, nn.LayerNorm) and module.normalized_shape:
            return int(module.normalized_shape[-1])
        if isinstance(module, nn.Linear):
            return int(module.out_features)
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.out_channels)
    raise ValueError(f"cannot tell the output width of {type(model).__name__}")
