"""Evaluation suites with CLIP_benchmark's metric definitions: zero-shot classification, image–text retrieval,
linear probe; each a function returning a dict that ``report.write_report`` saves as JSON plus markdown."""

from .datasets import (
    CaptionedImages,
    LabelledImages,
    caption_folder,
    caption_table,
    csv_labels,
    fashion_mnist,
    image_folder,
    open_captioned,
    open_labelled,
)
from .features import LabelledFeatures, encode_labelled
from .linear_probe import evaluate_linear_probe, linear_probe
from .report import to_markdown, write_report
from .retrieval import evaluate_retrieval, recall_at_k, top_k
from .zeroshot import SINGLE_TEMPLATE, evaluate_zeroshot, resolve_templates, zeroshot_metrics

__all__ = [
    "SINGLE_TEMPLATE",
    "CaptionedImages",
    "LabelledFeatures",
    "LabelledImages",
    "caption_folder",
    "caption_table",
    "csv_labels",
    "encode_labelled",
    "evaluate_linear_probe",
    "evaluate_retrieval",
    "evaluate_zeroshot",
    "fashion_mnist",
    "image_folder",
    "linear_probe",
    "open_captioned",
    "open_labelled",
    "recall_at_k",
    "resolve_templates",
    "to_markdown",
    "top_k",
    "write_report",
    "zeroshot_metrics",
]
