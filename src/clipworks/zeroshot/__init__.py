"""Zero-shot classification: class names and prompt templates become a linear classifier over image embeddings.

The application side (``ZeroShotClassifier``, ``classify``) is numpy and runs with the ONNX encoder without torch;
the trainer's torch side (``accuracy.py``: ``build_classifier``, ``evaluate``, ``ZeroShotResult``,
``check_regression``) is imported on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .classifier import ZeroShotClassifier, check_class_names
from .predict import Prediction, classify
from .templates import (
    FASHION_MNIST_TEMPLATES,
    OPENAI_IMAGENET_TEMPLATES,
    SIMPLE_TEMPLATES,
    TEMPLATE_SETS,
    check_templates,
    load_templates,
)
from .tta import TTA_MODES

if TYPE_CHECKING:
    from .accuracy import ZeroShotResult, build_classifier, check_regression, evaluate

_TORCH_SIDE = ("ZeroShotResult", "build_classifier", "check_regression", "evaluate")


def __getattr__(name: str) -> Any:
    if name in _TORCH_SIDE:
        from . import accuracy

        value = getattr(accuracy, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FASHION_MNIST_TEMPLATES", "OPENAI_IMAGENET_TEMPLATES", "SIMPLE_TEMPLATES", "TEMPLATE_SETS", "TTA_MODES", "Prediction",
           "ZeroShotClassifier", "ZeroShotResult", "build_classifier", "check_class_names", "check_regression",
           "check_templates", "classify", "evaluate", "load_templates"]
