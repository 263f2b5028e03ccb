"""``clipworks eval zeroshot|retrieval|linear-probe``: load the model, open the data, call ``clipworks.evaluate``,
write JSON + markdown (and a confusion-matrix PNG) under ``--out``, print the markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..cpu import set_threads
from ..errors import UsageError
from ..progress import progress_bar
from . import eval_compositional
from .common import (
    DeviceArg,
    ModelArg,
    PretrainedArg,
    ThreadsArg,
    err,
    load_encoder,
    print_skipped,
    user_errors,
)

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Measure a model with CLIP_benchmark's metrics: zero-shot, retrieval, linear probe.")

OutArg = Annotated[Path, typer.Option("--out", help="Folder for the results (JSON, markdown, plots).")]
ImageKeyArg = Annotated[str | None, typer.Option("--image-key", help="CSV/JSONL column holding image paths "
                                                 "(default: the first of filepath, image, image_path, path, file).")]
SeparatorArg = Annotated[str | None, typer.Option("--separator", help="CSV field separator (default: ',' or tab for .tsv).")]
WorkersArg = Annotated[int, typer.Option(min=1, help="Image decoding threads.")]
DEFAULT_OUT = Path("eval-results")


def _finish(result: dict[str, Any], out_dir: Path, stem: str, settings: dict[str, Any],
            markdown: str | None = None) -> None:
    from ..evaluate.report import write_report

    json_path, md_path = write_report(result, out_dir, stem, settings, markdown)
    typer.echo(md_path.read_text(encoding="utf-8"))
    err.print(f"wrote {json_path} and {md_path}", highlight=False, soft_wrap=True)
    print_skipped(result.get("skipped", []), limit=20)


@app.command("zeroshot")
def zeroshot(
    model: ModelArg,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="fashion-mnist, a folder with one subfolder per "
                                         "class, or a CSV/TSV of (path, label).")],
    pretrained: PretrainedArg = None,
    split: Annotated[str, typer.Option(help="Fashion-MNIST split: train or test.")] = "test",
    templates: Annotated[str | None, typer.Option(help="Prompt templates: simple, openai-imagenet, "
                                                  "fashion-mnist (the demo's), a file with one per line, or one "
                                                  "template with {}. Default: "
                                                  "the dataset's own (Fashion-MNIST: the demo's), else openai-imagenet.")] = None,
    compare_single: Annotated[bool, typer.Option("--compare-single", help="Also score a single template, to see "
                                                 "what the prompt ensemble buys.")] = False,
    single_template: Annotated[str, typer.Option(help="The template --compare-single scores.")] = "a photo of a {}.",
    class_names: Annotated[Path | None, typer.Option(help="Class names: one per line in label (or sorted folder) "
                                                     "order, or a JSON {folder: name}.")] = None,
    image_key: ImageKeyArg = None,
    label_key: Annotated[str, typer.Option(help="CSV column holding the label (a class name or id).")] = "label",
    separator: SeparatorArg = None,
    out_dir: OutArg = DEFAULT_OUT,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per model call (default: 500, the trainer's, "
                                                   "for Fashion-MNIST; 64 for image files).")] = None,
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    workers: WorkersArg = 2,
    plot: Annotated[bool, typer.Option(help="Write the confusion-matrix PNG.")] = True,
) -> None:
    """Zero-shot top-1, top-5 and mean per-class recall, per-class recall and a confusion matrix."""
    from ..evaluate import evaluate_zeroshot, open_labelled
    from ..evaluate.report import slug

    with user_errors():
        set_threads(threads)
        data = open_labelled(dataset, split, image_key, label_key, class_names, separator)
        encoder = load_encoder(model, pretrained, device, batch_size or 64)
        with progress_bar(len(data), "zero-shot: images") as progress:
            result = evaluate_zeroshot(encoder, data, templates, single_template=single_template if compare_single else None,
                                       batch_size=batch_size, workers=workers, progress=progress)
        stem = f"zeroshot_{slug(data.name)}"
        _finish(result, out_dir, stem, {"dataset": dataset, "split": split, "templates": templates or "default",
                                        "batch_size": batch_size or "default", "device": device,
                                        "class_names": class_names})
        if plot:
            from ..plots import plot_confusion

            path = plot_confusion(result["confusion"], data.class_names, out_dir / f"{stem}_confusion.png",
                                  title=f"{data.name}, zero-shot top-1 {100 * result['metrics']['acc1']:.1f}%")
            err.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command("retrieval")
def retrieval(
    model: ModelArg,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="CSV/TSV/JSONL of (image, caption) rows (an image "
                                         "may repeat), or a folder of images with .txt captions.")],
    pretrained: PretrainedArg = None,
    ks: Annotated[str, typer.Option("--ks", help="Comma-separated K values.")] = "1,5,10",
    image_key: ImageKeyArg = None,
    caption_key: Annotated[str | None, typer.Option("--caption-key", help="Column holding the caption (default: the "
                                                    "first of title, caption, captions, text).")] = None,
    separator: SeparatorArg = None,
    chunk: Annotated[int, typer.Option(min=1, help="Queries and candidates per score block (memory: chunk² floats).")] = 2048,
    out_dir: OutArg = DEFAULT_OUT,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per model call.")] = 64,
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    workers: WorkersArg = 2,
) -> None:
    """Text→image and image→text Recall@K, several captions per image allowed."""
    from ..evaluate import evaluate_retrieval, open_captioned
    from ..evaluate.report import slug

    with user_errors():
        set_threads(threads)
        try:
            k_values = [int(k) for k in ks.split(",") if k.strip()]
        except ValueError:
            raise UsageError(f"--ks takes comma-separated integers, got {ks!r}") from None
        pairs = open_captioned(dataset, image_key, caption_key, separator)
        encoder = load_encoder(model, pretrained, device, batch_size)
        total = 2 * len(pairs.images) + 2 * len(pairs.captions)  # embed images, captions; rank both ways
        with progress_bar(total, "retrieval") as progress:
            result = evaluate_retrieval(encoder, pairs, k_values, chunk, batch_size, workers, progress)
        _finish(result, out_dir, f"retrieval_{slug(pairs.name)}",
                {"dataset": dataset, "ks": k_values, "chunk": chunk, "batch_size": batch_size, "device": device})


def _splits(dataset: str | None, train: str | None, test: str | None) -> tuple[str, str]:
    if dataset is not None:
        if train is not None or test is not None:
            raise UsageError("give --dataset (with train and test splits) or --train and --test, not both")
        if dataset.split(":")[0] in ("fashion-mnist", "fashion_mnist") and not Path(dataset).exists():
            return "fashion-mnist:train", "fashion-mnist:test"
        root = Path(dataset)
        if (root / "train").is_dir() and (root / "test").is_dir():
            return str(root / "train"), str(root / "test")
        raise UsageError(f"--dataset {dataset}: no train/test splits (fashion-mnist, or a folder holding train/ and "
                         "test/ class-folder trees); give --train and --test")
    if train is None or test is None:
        raise UsageError("the linear probe needs --train and --test (or --dataset fashion-mnist)")
    return train, test


@app.command("linear-probe")
def linear_probe(
    model: ModelArg,
    pretrained: PretrainedArg = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="A dataset with splits: fashion-mnist, or a "
                                                "folder holding train/ and test/ class-folder trees.")] = None,
    train: Annotated[str | None, typer.Option(help="Training images: a class-folder tree or a CSV of (path, label).")] = None,
    test: Annotated[str | None, typer.Option(help="Test images, same classes as --train.")] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of the training images held out to choose C.")] = 0.2,
    c: Annotated[str | None, typer.Option("--c", help="Comma-separated C values to try instead of the CLIP paper's "
                                          "binary search over 1e-6..1e6.")] = None,
    max_iter: Annotated[int, typer.Option(min=1, help="L-BFGS iterations per fit.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the validation split.")] = 0,
    features_cache: Annotated[Path | None, typer.Option(help="Keep the image features in this .npz for the next run.")] = None,
    class_names: Annotated[Path | None, typer.Option(help="Class names file (see `eval zeroshot --help`).")] = None,
    image_key: ImageKeyArg = None,
    label_key: Annotated[str, typer.Option(help="CSV column holding the label.")] = "label",
    out_dir: OutArg = DEFAULT_OUT,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per model call (default: 500 for "
                                                   "Fashion-MNIST, 64 for image files).")] = None,
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    workers: WorkersArg = 2,
) -> None:
    """Logistic regression on frozen image features; C chosen on a validation split of the training images."""
    from ..evaluate import evaluate_linear_probe, open_labelled
    from ..evaluate.linear_probe import SEARCH_STEPS
    from ..evaluate.report import slug

    with user_errors():
        set_threads(threads)
        train_spec, test_spec = _splits(dataset, train, test)
        try:
            cs = None if c is None else [float(v) for v in c.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--c takes comma-separated numbers, got {c!r}") from None
        train_data = open_labelled(train_spec, "train", image_key, label_key, class_names)
        test_data = open_labelled(test_spec, "test", image_key, label_key, class_names)
        encoder = load_encoder(model, pretrained, device, batch_size or 64)
        steps = (len(cs) if cs is not None else SEARCH_STEPS) + 1  # choosing C, then the final fit
        with progress_bar(len(train_data) + len(test_data) + steps, "linear probe: images, then fits") as progress:
            result = evaluate_linear_probe(encoder, train_data, test_data, val_fraction=val_fraction, cs=cs,
                                           max_iter=max_iter, seed=seed, batch_size=batch_size, workers=workers,
                                           features_cache=features_cache, progress=progress)
        _finish(result, out_dir, f"linear-probe_{slug(test_data.name)}",
                {"train": train_spec, "test": test_spec, "val_fraction": val_fraction, "c": cs or "binary search",
                 "max_iter": max_iter, "seed": seed, "batch_size": batch_size or "default", "device": device,
                 "features_cache": features_cache})


app.command("compositional")(eval_compositional.compositional)
