"""Evaluation suites with CLIP_benchmark's metric definitions: zero-shot classification, image–text retrieval,
linear probe; each a function returning a dict that ``report.write_report`` saves as JSON plus markdown.

Names are imported on first use: the suites need torch, while ``report`` (which the CLI's JSON output uses) and the
compositional probes do not, and must stay importable without it."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_LAZY = {
    "CaptionedImages": "datasets", "LabelledImages": "datasets", "caption_folder": "datasets",
    "caption_table": "datasets", "csv_labels": "datasets", "fashion_mnist": "datasets", "image_folder": "datasets",
    "open_captioned": "datasets", "open_labelled": "datasets",
    "LabelledFeatures": "features", "encode_labelled": "features",
    "evaluate_linear_probe": "linear_probe", "linear_probe": "linear_probe",
    "to_markdown": "report", "write_report": "report",
    "evaluate_retrieval": "retrieval", "recall_at_k": "retrieval", "top_k": "retrieval",
    "SINGLE_TEMPLATE": "zeroshot", "evaluate_zeroshot": "zeroshot", "resolve_templates": "zeroshot",
    "zeroshot_metrics": "zeroshot",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``linear_probe`` names a function and the submodule defining it; importing the submodule makes the import
    system bind the package's name to the module, which would hide the function. Bind the function instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "linear_probe" and isinstance(value, types.ModuleType):
            value = value.linear_probe
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:
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
