"""Zero-shot classification: class names and prompt templates become a linear classifier over image embeddings."""

from .classifier import build_classifier
from .evaluate import ZeroShotResult, check_regression, evaluate
from .templates import (
    FASHION_TEMPLATES,
    OPENAI_IMAGENET_TEMPLATES,
    SIMPLE_TEMPLATES,
    TEMPLATE_SETS,
    check_templates,
    load_templates,
)

__all__ = ["FASHION_TEMPLATES", "OPENAI_IMAGENET_TEMPLATES", "SIMPLE_TEMPLATES", "TEMPLATE_SETS", "ZeroShotResult",
           "build_classifier", "check_regression", "check_templates", "evaluate", "load_templates"]
