"""clipworks: CLIP-style contrastive image–text models — build, load any family by name, train, embed."""

from .checkpoints import load_checkpoint, save_pretrained
from .encoder import Encoder, ModelRef
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
from .pretrained import list_pretrained, list_pretrained_tags_by_model, register_pretrained
from .text import ClipTokenizer, HFTokenizer, tokenize
from .zeroshot import ZeroShotClassifier, classify

__version__ = "0.2.0"


def __getattr__(name: str):
    """``clipworks.Client``/``ClientError`` import the HTTP client (and httpx) only when first used."""
    if name in ("Client", "ClientError"):
        from .serve import client

        return getattr(client, name)
    raise AttributeError(f"module 'clipworks' has no attribute {name!r}")


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
    "HFTokenizer",
    "MissingDependencyError",
    "ModelRef",
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
    "register_pretrained",
    "save_pretrained",
    "tokenize",
]
