"""clipworks: CLIP-style contrastive image–text models — build, load any family by name, train, embed.

Every public name is imported on first use (PEP 562), so ``import clipworks`` costs little and imports no torch:
the ONNX runtime (``clipworks.load_encoder(folder, backend="onnx")``) and the applications built on it run where
torch is not installed. ``from clipworks import create_model`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> the module (relative to this package) that defines it
_LAZY: dict[str, str] = {
    "load_checkpoint": ".checkpoints",
    "save_pretrained": ".checkpoints",
    "Encoder": ".encoder",
    "ModelRef": ".modelref",
    "EncoderLike": ".encoding",
    "load_encoder": ".encoding",
    "OnnxEncoder": ".runtime.encoder",
    "CheckpointError": ".errors",
    "ClipworksError": ".errors",
    "ConfigError": ".errors",
    "MissingDependencyError": ".errors",
    "PretrainedError": ".errors",
    "TokenizerError": ".errors",
    "create_model": ".factory",
    "create_model_and_transforms": ".factory",
    "create_model_from_pretrained": ".factory",
    "get_tokenizer": ".factory",
    "image_transform": ".image.transforms",
    "Clip": ".model.clip",
    "ClipConfig": ".model.config",
    "list_models": ".model.config",
    "list_pretrained": ".pretrained",
    "list_pretrained_tags_by_model": ".pretrained",
    "register_pretrained": ".pretrained",
    "ClipTokenizer": ".text",
    "HFTokenizer": ".text",
    "tokenize": ".text",
    "ZeroShotClassifier": ".zeroshot",
    "classify": ".zeroshot",
    "Client": ".serve.client",
    "ClientError": ".serve.client",
}

__all__ = [
    "CheckpointError",
    "Client",
    "ClientError",
    "Clip",
    "ClipConfig",
    "ClipTokenizer",
    "ClipworksError",
    "ConfigError",
    "Encoder",
    "EncoderLike",
    "HFTokenizer",
    "MissingDependencyError",
    "ModelRef",
    "OnnxEncoder",
    "PretrainedError",
    "TokenizerError",
    "ZeroShotClassifier",
    "classify",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_pretrained",
    "get_tokenizer",
    "image_transform",
    "list_models",
    "list_pretrained",
    "list_pretrained_tags_by_model",
    "load_checkpoint",
    "load_encoder",
    "register_pretrained",
    "save_pretrained",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clipworks' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module, __name__), name)
    except ModuleNotFoundError as e:
        from .errors import torch_extra_missing

        missing = torch_extra_missing(e, f"clipworks.{name}")
        if missing is None:
            raise
        raise missing from e
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*_LAZY, "__version__"})


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from .checkpoints import load_checkpoint, save_pretrained
    from .encoder import Encoder
    from .encoding import EncoderLike, load_encoder
    from .errors import (
        CheckpointError,
        ClipworksError,
        ConfigError,
        MissingDependencyError,
        PretrainedError,
        TokenizerError,
    )
    from .factory import create_model, create_model_and_transforms, create_model_from_pretrained, get_tokenizer
    from .image.transforms import image_transform
    from .model import Clip, ClipConfig, list_models
    from .modelref import ModelRef
    from .pretrained import list_pretrained, list_pretrained_tags_by_model, register_pretrained
    from .runtime.encoder import OnnxEncoder
    from .serve.client import Client, ClientError
    from .text import ClipTokenizer, HFTokenizer, tokenize
    from .zeroshot import ZeroShotClassifier, classify
