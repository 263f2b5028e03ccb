from .clip import Clip
from .config import (
                     ClipConfig,
                     ConfigError,
                     PreprocessConfig,
                     TextConfig,
                     TokenizerConfig,
                     VisionConfig,
                     get_model_config,
                     list_models,
)

__all__ = ["Clip", "ClipConfig", "ConfigError", "PreprocessConfig", "TextConfig", "TokenizerConfig", "VisionConfig",
           "get_model_config", "list_models"]
