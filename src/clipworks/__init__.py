"""clipworks: CLIP-style contrastive image–text models — build, load, convert, embed."""

from .checkpoints import CheckpointError, load_checkpoint, save_pretrained
from .factory import create_model, create_model_and_transforms, get_tokenizer
from .model import Clip, ClipConfig, ConfigError, list_models
from .tokenizer import ClipTokenizer, tokenize
from .transforms import image_transform

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Clip",
    "ClipConfig",
    "ClipTokenizer",
    "ConfigError",
    "create_model",
    "create_model_and_transforms",
    "get_tokenizer",
    "image_transform",
    "list_models",
    "load_checkpoint",
    "save_pretrained",
    "tokenize",
]
