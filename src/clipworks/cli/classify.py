"""``clipworks classify``: zero-shot labels for images from class names in words (or a saved classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..cpu import set_threads
from ..errors import UsageError
from ..image.decode import ImageError
from ..progress import progress_bar
from ..zeroshot import TTA_MODES, Prediction, ZeroShotClassifier
from ..zeroshot import classify as run_classify
from ..zeroshot.classifier import check_class_names, read_class_names, resolve_templates
from .common import (
    BackendArg,
    BatchArg,
    CsvArg,
    DeviceArg,
    JsonArg,
    PrecisionArg,
    PretrainedArg,
    ThreadsArg,
    emit_csv,
    emit_json,
    err,
    image_paths,
    load_encoder,
    output_format,
    print_skipped,
    user_errors,
)

out = Console()


def _labels(labels: str | None, labels_file: Path | None) -> list[str]:
    if labels is not None:
        return list(check_class_names([name.strip() for name in labels.split(",")], where="--labels"))
    assert labels_file is not None
    return list(read_class_names(labels_file))


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%" if p >= 0.001 else f"{100 * p:.2g}%"


def _print_table(predictions: list[Prediction]) -> None:
    table = Table("image", "label", header_style="bold")
    table.add_column("probability", justify="right")
    for pred in predictions:
        for rank, (label, p) in enumerate(zip(pred.labels, pred.probabilities)):
            table.add_row(Text(pred.name) if rank == 0 else "", Text(label), _percent(p),
                          end_section=rank == len(pred.labels) - 1)
    out.print(table)


def classify(
    images: Annotated[list[str] | None, typer.Argument(help="Image files and/or directories (searched recursively).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Config name, hf-hub:org/repo, or checkpoint path "
                                              "(default with --classifier: the model it was built with).")] = None,
    pretrained: PretrainedArg = None,
    labels: Annotated[str | None, typer.Option("--labels", help='Class names, comma-separated: "cat,dog,car".')] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels-file", help="Class names, one per line "
                                                     "(blank lines and #-comments skipped).")] = None,
    classifier_file: Annotated[Path | None, typer.Option("--classifier", help="A classifier saved with "
                                                         "--save-classifier: no text is encoded.")] = None,
    templates: Annotated[str | None, typer.Option("--templates", help="Prompt templates: simple, openai-imagenet, "
                                                  "fashion-mnist, a file (one per line), or one template with {} (default: simple).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels shown per image.")] = 5,
    tta: Annotated[str, typer.Option("--tta", help="Test-time augmentation: none, flip, multicrop (5 crops) or "
                                     "multicrop-flip (10).")] = "none",
    as_json: JsonArg = False,
    as_csv: CsvArg = False,
    save_classifier: Annotated[Path | None, typer.Option("--save-classifier", help="Also save the classifier "
                                                         "built from the labels to this file (.safetensors).")] = None,
    backend: BackendArg = "torch",
    precision: PrecisionArg = "fp32",
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    batch_size: BatchArg = 64,
    workers: Annotated[int, typer.Option(min=1, help="Image decoding threads.")] = 2,
) -> None:
    """Zero-shot classify images: top-k labels with probabilities (softmax for CLIP, per-label sigmoid for SigLIP)."""
    with user_errors():
        set_threads(threads)
        sources = [flag for flag, v in (("--labels", labels), ("--labels-file", labels_file),
                                        ("--classifier", classifier_file)) if v is not None]
        if len(sources) != 1:
            raise UsageError("give exactly one of --labels, --labels-file or --classifier"
                             + (f" (got {' and '.join(sources)})" if sources else ""))
        fmt = output_format(as_json, as_csv)
        if tta not in TTA_MODES:
            raise UsageError(f"--tta {tta!r} is not one of {', '.join(TTA_MODES)}")
        if classifier_file is not None and templates is not None:
            raise UsageError("--templates applies when building from labels; the --classifier file has its own")
        if classifier_file is not None and save_classifier is not None:
            raise UsageError("--save-classifier saves a classifier built from labels; --classifier is already saved")
        paths = image_paths(images, required=False)
        if not paths and save_classifier is None:
            raise UsageError("give image files or directories to classify (or --save-classifier FILE to only build)")

        if classifier_file is not None:
            classifier = ZeroShotClassifier.load(classifier_file)
            if model is None:
                if backend == "onnx":
                    raise UsageError("--backend onnx needs --model: the folder `clipworks export onnx` wrote for the "
                                     "classifier's model")
                model, pretrained = classifier.model_ref.model, classifier.model_ref.pretrained
        else:
            names = _labels(labels, labels_file)
            prompts = resolve_templates("simple" if templates is None else templates)
        if model is None:
            raise UsageError("--model is required when building a classifier from labels")
        encoder = load_encoder(model, pretrained, device, batch_size, backend, precision)
        if classifier_file is not None:
            classifier.check_encoder(encoder, where=f"classifier {classifier_file}")
        else:
            count = len(names) * len(prompts)
            with progress_bar(count, "encoding prompts", show=count > encoder.text_batch_size) as bar:
                classifier = ZeroShotClassifier.build(encoder, names, prompts, progress=bar)
        if save_classifier is not None:
            classifier.save(save_classifier)
            err.print(f"saved classifier ({classifier.num_classes} classes × {len(classifier.templates)} templates) "
                      f"→ {save_classifier}", highlight=False, soft_wrap=True)
        if not paths:
            return

        with progress_bar(len(paths), "classifying") as bar:
            results = run_classify(encoder, paths, classifier, k=top_k, tta=tta, progress=bar, workers=workers)
        good = [p for p in results if p.ok]
        failed = [p for p in results if not p.ok]
        if fmt == "json":
            emit_json({"model": encoder.ref.describe(), "sigmoid": classifier.uses_sigmoid, "tta": tta,
                                   "classes": classifier.num_classes, "templates": len(classifier.templates),
                                   "predictions": [p.to_dict() for p in good],
                                   "skipped": [{"path": p.name, "error": p.error} for p in failed]})
        elif fmt == "csv":
            emit_csv(["path", "rank", "label", "probability"],
                     [[pred.name, rank, label, f"{p:.6g}"] for pred in good
                      for rank, (label, p) in enumerate(zip(pred.labels, pred.probabilities), start=1)])
        else:
            _print_table(good)
            if classifier.uses_sigmoid:
                err.print("SigLIP-style model: each label's probability is its own sigmoid; they need not sum to 1",
                          highlight=False)
        print_skipped([str(p.error) for p in failed])
        if not good:
            raise ImageError(f"none of the {len(paths)} image(s) could be read")
