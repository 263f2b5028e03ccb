from .clip import Clip
from .config import ClipConfig, ConfigError, TextConfig, VisionConfig, get_model_config, list_models

__all__ = ["Clip", "ClipConfig", "ConfigError", "TextConfig", "VisionConfig", "get_model_config", "list_models"]
