"""The model: config dataclasses (torch-free, imported eagerly) and ``Clip`` with its towers (torch, imported on
first use, so ``clipworks.model.config`` serves the ONNX runtime without torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .clip import Clip


def __getattr__(name: str) -> Any:
    if name == "Clip":
        from .clip import Clip

        return Clip
    raise AttributeError(f"module 'clipworks.model' has no attribute {name!r}")


__all__ = ["Clip", "ClipConfig", "ConfigError", "PreprocessConfig", "TextConfig", "TokenizerConfig", "VisionConfig",
           "get_model_config", "list_models"]
