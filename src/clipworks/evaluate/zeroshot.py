"""Zero-shot classification accuracy of a model on a labelled image set, with CLIP_benchmark's metrics.

``acc1``/``acc5`` are top-1/top-5 accuracy, ``mean_per_class_recall`` the mean over classes (with at least one
image) of each class's recall — scikit-learn's ``balanced_accuracy_score``, as CLIP_benchmark reports it. The
arithmetic is the trainer's (``clipworks.zeroshot.accuracy``): the same classifier (``build_classifier``), the
same batches of features, the same ``topk``, so on Fashion-MNIST with the demo's templates the accuracy is the
number the demo reported, to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..encoder import Encoder
from ..errors import UsageError
from ..progress import Progress
from ..zeroshot import OPENAI_IMAGENET_TEMPLATES, build_classifier, check_templates
from ..zeroshot.classifier import check_class_names
from ..zeroshot.classifier import resolve_templates as classifier_templates
from .datasets import LabelledImages, check_labels
from .features import LabelledFeatures, batch_size_for, encode_labelled

SINGLE_TEMPLATE = "a photo of a {}."  # the CLIP paper's baseline prompt, against which ensembling is measured


def resolve_templates(spec: str | Path | Sequence[str] | None, dataset: LabelledImages | None = None) -> tuple[str, ...]:
    """Templates as ``clipworks classify`` reads them (a set name: ``simple``, ``openai-imagenet``, ``fashion-mnist``;
    a file, one per line; one template with ``{}``; a list); None: the dataset's own set (Fashion-MNIST: the
    demo's), else OpenAI's 80 ImageNet prompts, the usual ensemble for a dataset without its own."""
    if spec is None:
        return dataset.templates if dataset is not None and dataset.templates else OPENAI_IMAGENET_TEMPLATES
    return classifier_templates(spec)


def zeroshot_metrics(features: np.ndarray, labels: np.ndarray, classifier: torch.Tensor | np.ndarray,
                     batch_size: int = 500, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Top-1, top-5, per-class recall and the confusion matrix (rows true, columns predicted) of normalised image
    ``features`` against a ``[D, C]`` classifier, scored ``batch_size`` rows at a time on ``device``."""
    classifier = torch.as_tensor(classifier)
    num_classes = classifier.shape[1]
    check_labels(labels, num_classes, "zero-shot labels")
    if len(labels) == 0:
        raise UsageError("zero-shot evaluation got no images (all were skipped, or the dataset is empty)")
    weights = classifier.to(device=device, dtype=torch.float32)
    k = min(5, num_classes)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    hits5 = torch.zeros((), dtype=torch.int64, device=device)
    features = np.ascontiguousarray(features, dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            f = torch.from_numpy(features[start:start + batch_size]).to(device)
            y = torch.from_numpy(np.ascontiguousarray(labels[start:start + batch_size], dtype=np.int64)).to(device)
            topk = (f @ weights).topk(k, dim=-1).indices
            confusion += torch.bincount(y * num_classes + topk[:, 0], minlength=num_classes**2)
            hits5 += (topk == y[:, None]).any(dim=-1).sum()
    matrix = confusion.view(num_classes, num_classes).cpu().numpy()
    n = len(labels)
    counts = matrix.sum(axis=1)
    recall = np.divide(np.diag(matrix), counts, out=np.full(num_classes, np.nan), where=counts > 0)
    return {
        "acc1": int(np.trace(matrix)) / n,
        "acc5": int(hits5) / n if num_classes >= 5 else None,  # CLIP_benchmark: NaN below 5 classes
        "mean_per_class_recall": float(np.nanmean(recall)),
        "per_class_recall": [None if np.isnan(r) else float(r) for r in recall],
        "confusion": matrix.astype(np.int64),
        "n": n,
    }


def evaluate_zeroshot(
    encoder: Encoder,
    dataset: LabelledImages,
    templates: str | Path | Sequence[str] | None = None,
    *,
    single_template: str | None = None,
    batch_size: int | None = None,
    workers: int = 2,
    progress: Progress | None = None,
    features: LabelledFeatures | None = None,
) -> dict[str, Any]:
    """Zero-shot metrics of ``encoder`` on ``dataset`` with a prompt ensemble (``templates``, see
    ``resolve_templates``); with ``single_template`` (e.g. ``SINGLE_TEMPLATE``) the same images are also scored
    with that one prompt, under ``"single_template"``. ``batch_size`` None: the trainer's evaluation batch (500)
    for in-memory images, the encoder's for files. ``features`` (from ``encode_labelled``) skips encoding again."""
    if not dataset.named:
        raise UsageError(f"{dataset.name}: zero-shot needs class names, but the labels are bare ids; give a class "
                         "names file (one name per line, in label order)")
    names = list(check_class_names(dataset.class_names,
                                   where=f"{dataset.name} (give a class names file to rename classes)"))
    ensemble = check_templates(resolve_templates(templates, dataset), where="templates")
    batch_size = batch_size_for(encoder, dataset, batch_size)
    if features is None:
        features = encode_labelled(encoder, dataset, batch_size, workers, progress)
    result: dict[str, Any] = {
        "task": "zeroshot",
        "model": {**encoder.ref.to_dict(), "describe": encoder.ref.describe()},
        "dataset": {"name": dataset.name, "description": dataset.description, "classes": names},
        "templates": list(ensemble),
    }
    scored = _score(encoder, names, ensemble, features, batch_size)
    result.update(n=scored.pop("n"), skipped=features.skipped)
    result["per_class_recall"] = dict(zip(names, scored.pop("per_class_recall")))
    result["confusion"] = scored.pop("confusion").tolist()
    result["metrics"] = scored
    if single_template is not None:
        single = check_templates([single_template], where="single template")
        one = _score(encoder, names, single, features, batch_size)
        result["single_template"] = {"template": single[0], "metrics": {k: one[k] for k in scored}}
    return result


def _score(encoder: Encoder, names: list[str], templates: Sequence[str], features: LabelledFeatures,
           batch_size: int) -> dict[str, Any]:
    classifier = build_classifier(encoder.model, encoder.tokenizer, names, templates, device=encoder.device)
    return zeroshot_metrics(features.features, features.labels, classifier, batch_size, encoder.device)
