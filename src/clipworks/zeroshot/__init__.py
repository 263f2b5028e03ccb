"""Zero-shot classification: class names and prompt templates become a linear classifier over image embeddings."""

from .classifier import ZeroShotClassifier, build_classifier, check_class_names
from .evaluate import ZeroShotResult, check_regression, evaluate
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

__all__ = ["FASHION_MNIST_TEMPLATES", "OPENAI_IMAGENET_TEMPLATES", "SIMPLE_TEMPLATES", "TEMPLATE_SETS", "TTA_MODES", "Prediction",
           "ZeroShotClassifier", "ZeroShotResult", "build_classifier", "check_class_names", "check_regression",
           "check_templates", "classify", "evaluate", "load_templates"]
