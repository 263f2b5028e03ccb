"""``clipworks score``, ``clipworks quality``, ``clipworks filter``: CLIP Score of image–prompt pairs, CLIP-IQA-style
quality, and content flags from concept prompts. Thin wrappers over ``clipworks.scores``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from ..errors import ConfigError, MissingFileError, UsageError
from ..image.decode import ImageError
from ..progress import progress_bar
from ..scores import (
    DEFAULT_PAIRS,
    ConceptFilter,
    clip_score,
    load_concepts,
    load_labels,
    load_pairs,
    resolve_pairs,
    save_concepts,
)
from ..scores import (
    quality as run_quality,
)
from .common import (
    BatchArg,
    CsvArg,
    DeviceArg,
    JsonArg,
    ModelArg,
    PretrainedArg,
    emit_csv,
    emit_json,
    err,
    image_paths,
    load_encoder,
    output_format,
    print_skipped,
    user_errors,
)

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder
    from ..encoding import ImageEmbeddings

out = Console()
ImagesArg = Annotated[list[str] | None, typer.Argument(help="Image files and/or directories (searched recursively).")]
TABLE_SUFFIXES = (".csv", ".jsonl")


def _embed(encoder: Encoder, paths: list[Path], what: str = "images") -> ImageEmbeddings:
    """Each file embedded once, with a bar; unreadable ones are listed on stderr."""
    with progress_bar(len(paths), what) as bar:
        result = encoder.encode_files(paths, progress=bar)
    print_skipped([reason for _, reason in result.failures])
    return result


def _skipped(result: ImageEmbeddings) -> list[dict[str, str]]:
    return [{"image": str(p), "error": reason} for p, reason in result.failures]


# ---------------------------------------------------------------- score

def _read_pairs_table(file: Path) -> list[tuple[int, str, str]]:
    """(line, image, prompt) rows of a CSV (header ``image,prompt``) or JSONL (``{"image": …, "prompt": …}``)."""
    rows = []
    if file.suffix.lower() == ".csv":
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if "image" not in header or "prompt" not in header:
                raise ConfigError(f"{file}: line 1 must be a header naming the 'image' and 'prompt' columns, got {header}")
            i, j = header.index("image"), header.index("prompt")
            for line, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ConfigError(f"{file}: line {line}: expected {len(header)} fields, got {len(row)}")
                rows.append((line, row[i], row[j]))
    else:
        for line, text in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{file}: line {line}: not JSON ({e.msg})") from e
            if not isinstance(item, dict) or not isinstance(item.get("image"), str) \
                    or not isinstance(item.get("prompt"), str):
                raise ConfigError(f"{file}: line {line}: expected {{\"image\": \"…\", \"prompt\": \"…\"}}")
            rows.append((line, item["image"], item["prompt"]))
    if not rows:
        raise ConfigError(f"{file}: no (image, prompt) rows")
    return rows


def _pairs(prompts_file: Path, paths: list[Path]) -> list[tuple[Path, str]]:
    """(image, prompt) pairs: a text file's lines in the order of ``paths``, or a table's rows (relative image paths
    are relative to the table's folder, or the current one; with IMAGES given, rows must name those images)."""
    if not prompts_file.is_file():
        raise MissingFileError(f"--prompts {prompts_file}: no such file")
    if prompts_file.suffix.lower() not in TABLE_SUFFIXES:
        prompts = prompts_file.read_text(encoding="utf-8").splitlines()
        if not paths:
            raise UsageError(f"give the images the prompts in {prompts_file} describe (one prompt per image, in order)")
        if len(prompts) != len(paths):
            raise UsageError(f"{len(paths)} images but {len(prompts)} prompts in {prompts_file}: give one prompt "
                             "per line per image, in the order the images are listed (directories sorted)")
        return list(zip(paths, prompts))
    given = {p.resolve(): p for p in paths}
    pairs = []
    for line, image, prompt in _read_pairs_table(prompts_file):
        p = Path(image)
        candidates = [p] if p.is_absolute() else [prompts_file.parent / p, p]
        if not given:
            pairs.append((next((c for c in candidates if c.exists()), candidates[0]), prompt))
            continue
        match = next((given[c.resolve()] for c in candidates if c.resolve() in given), None)
        if match is None:
            raise UsageError(f"{prompts_file}: line {line}: image {image} is not among the {len(paths)} images given")
        pairs.append((match, prompt))
    named = {q for q, _ in pairs}
    unscored = [str(p) for p in paths if p not in named]
    if unscored:
        raise UsageError(f"{len(paths)} images but {len(unscored)} of them have no prompt in {prompts_file}: "
                         + ", ".join(unscored[:5]) + (" …" if len(unscored) > 5 else ""))
    return pairs


def score(
    images: ImagesArg = None,
    prompts_file: Annotated[Path, typer.Option("--prompts", help="One prompt per line, one line per image in order; "
                                               "or a CSV (columns image, prompt) / JSONL of pairs.")] = ...,  # type: ignore[assignment]
    model: ModelArg = ...,  # type: ignore[assignment]
    pretrained: PretrainedArg = None,
    weight: Annotated[float, typer.Option("--weight", "-w", help="w in w·max(cos, 0): 100 (torchmetrics) or 2.5 "
                                          "(the CLIP-S paper).")] = 100.0,
    as_json: JsonArg = False,
    as_csv: CsvArg = False,
    device: DeviceArg = "cpu",
    batch_size: BatchArg = 64,
) -> None:
    """CLIP Score of each image with its prompt, w·max(cos, 0), and their mean; long prompts are cut keeping the end
    token and counted."""
    with user_errors():
        fmt = output_format(as_json, as_csv)
        pairs = _pairs(prompts_file, image_paths(images, required=False))
        encoder = load_encoder(model, pretrained, device=device, batch_size=batch_size)
        unique = list(dict.fromkeys(p for p, _ in pairs))
        embedded = _embed(encoder, unique)
        row = {p: i for i, p in enumerate(embedded.paths)}
        kept = [(p, t) for p, t in pairs if p in row]
        if not kept:
            raise ImageError("no readable image to score")
        feats = embedded.features[[row[p] for p, _ in kept]]
        prompts = [t for _, t in kept]
        with progress_bar(len(prompts), "prompts", show=len(prompts) > encoder.text_batch_size) as bar:
            result = clip_score(encoder, feats, prompts, weight=weight, progress=bar)
        cut = set(result.truncated)
        if cut:
            err.print(f"[yellow]{len(cut)} prompt(s) longer than the model's {result.context_length} tokens were cut "
                      "(end token kept); their ends were not scored[/yellow]")
        if fmt == "json":
            emit_json({"model": encoder.ref.to_dict(), "weight": result.weight, "mean": result.mean,
                        "pairs": len(kept), "truncated_count": result.truncated_count,
                        "results": [{"image": str(p), "prompt": t, "score": float(s), "cosine": float(c),
                                     "truncated": i in cut}
                                    for i, ((p, t), s, c) in enumerate(zip(kept, result.scores, result.cosines))],
                        "skipped": _skipped(embedded)})
        elif fmt == "csv":
            emit_csv(["image", "prompt", "score", "cosine", "truncated"],
                      [[str(p), t, f"{s:.6g}", f"{c:.6g}", int(i in cut)]
                       for i, ((p, t), s, c) in enumerate(zip(kept, result.scores, result.cosines))])
        else:
            table = Table(Column("image", overflow="fold"), "prompt", header_style="bold")
            table.add_column("score", justify="right")
            for i, ((p, t), s) in enumerate(zip(kept, result.scores)):
                table.add_row(Text(str(p)), Text(t if len(t) <= 60 else t[:59] + "…") + (" ✂" if i in cut else ""),
                              f"{s:.2f}")
            out.print(table)
            out.print(f"mean CLIP Score {result.mean:.3f} over {len(kept)} pairs (w = {result.weight:g})"
                      + (f"; {len(cut)} prompt(s) truncated (✂)" if cut else ""), highlight=False)


# ---------------------------------------------------------------- quality

def _resolve_pairs_option(value: str | None) -> dict[str, tuple[str, str]]:
    if value is None:
        return resolve_pairs(DEFAULT_PAIRS)
    if Path(value).suffix.lower() in (".json", ".toml") or Path(value).is_file():
        return load_pairs(value)
    return resolve_pairs([name.strip() for name in value.split(",") if name.strip()])


def _scale(value: str) -> float | str:
    if value == "model":
        return value
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"--scale must be a number or 'model', got {value!r}") from None


def quality(
    images: ImagesArg = None,
    model: ModelArg = ...,  # type: ignore[assignment]
    pretrained: PretrainedArg = None,
    pairs: Annotated[str | None, typer.Option("--pairs", help="Built-in attribute names, comma-separated (quality, "
                                              "brightness, noisiness, colorfulness, sharpness, contrast, complexity, "
                                              "natural, happy, scary, new, warm, real, beautiful, lonely, relaxing), "
                                              "or a .json/.toml file of name = [positive, negative]. "
                                              "[default: quality … contrast]")] = None,
    scale: Annotated[str, typer.Option("--scale", help="Logit scale: 100 (CLIP-IQA, torchmetrics) or 'model'.")] = "100",
    as_json: JsonArg = False,
    as_csv: CsvArg = False,
    device: DeviceArg = "cpu",
    batch_size: BatchArg = 64,
) -> None:
    """CLIP-IQA-style quality: per image and attribute, the probability of the positive prompt of an antonym pair."""
    with user_errors():
        fmt = output_format(as_json, as_csv)
        resolved = _resolve_pairs_option(pairs)
        factor = _scale(scale)
        paths = image_paths(images)
        encoder = load_encoder(model, pretrained, device=device, batch_size=batch_size)
        embedded = _embed(encoder, paths)
        if not embedded.paths:
            raise ImageError("no readable image to assess")
        result = run_quality(encoder, embedded.features, resolved, scale=factor)  # type: ignore[arg-type]
        names = list(resolved)
        if fmt == "json":
            emit_json({"model": encoder.ref.to_dict(), "scale": factor, "pairs": {n: list(p) for n, p in resolved.items()},
                        "images": [{"image": str(p), **{n: float(result[n][i]) for n in names}}
                                   for i, p in enumerate(embedded.paths)],
                        "skipped": _skipped(embedded)})
        elif fmt == "csv":
            emit_csv(["image", *names], [[str(p), *(f"{result[n][i]:.6g}" for n in names)]
                                          for i, p in enumerate(embedded.paths)])
        else:
            table = Table(header_style="bold")
            table.add_column("image", overflow="fold")  # paths fold rather than lose their ends
            for n in names:
                table.add_column(n, justify="right")
            for i, p in enumerate(embedded.paths):
                table.add_row(Text(str(p)), *(f"{result[n][i]:.3f}" for n in names))
            out.print(table)


# ---------------------------------------------------------------- filter

def _calibrate(encoder: Encoder, filt: ConceptFilter, labels_file: Path, precision: float) -> dict[str, Any]:
    labels = load_labels(labels_file)
    unique = list(dict.fromkeys(labels.paths))
    embedded = _embed(encoder, unique, "labelled images")
    row = {p: i for i, p in enumerate(embedded.paths)}
    keep = [i for i, p in enumerate(labels.paths) if p in row]
    if not keep:
        raise ImageError(f"{labels_file}: none of the labelled images could be read")
    feats = embedded.features[[row[labels.paths[i]] for i in keep]]
    values = {n: v[keep] for n, v in labels.values.items()}
    calibrations = filt.calibrate(feats, values, precision)
    for c in filt.concepts:
        if c.name not in calibrations:
            err.print(f"[yellow]concept {c.name!r} has no column in {labels_file}: its threshold is unchanged[/yellow]")
    return {n: c.to_dict() for n, c in calibrations.items()}


def filter_images(
    images: ImagesArg = None,
    concepts_file: Annotated[Path, typer.Option("--concepts", help="Concept file (.json or .toml): per concept "
                                                "prompts, optional negatives and threshold.")] = ...,  # type: ignore[assignment]
    model: ModelArg = ...,  # type: ignore[assignment]
    pretrained: PretrainedArg = None,
    calibrate_file: Annotated[Path | None, typer.Option("--calibrate", help="Labels CSV (image,<concept>,… with 1/0) "
                                                        "to set each concept's threshold from.")] = None,
    precision: Annotated[float, typer.Option("--precision", min=0.0, max=1.0, help="Target precision for "
                                             "--calibrate.")] = 0.9,
    save: Annotated[Path | None, typer.Option("--save", help="Write the concepts with their calibrated thresholds "
                                              "here (.json/.toml; may be the concept file: TOML comments are "
                                              "not kept).")] = None,
    as_json: JsonArg = False,
    device: DeviceArg = "cpu",
    batch_size: BatchArg = 64,
) -> None:
    """Flag images matching concepts described in words (score: cosine to the concept's prompts minus the closest
    negative prompt's), optionally calibrating thresholds to a target precision on a labelled set."""
    with user_errors():
        if save is not None and calibrate_file is None:
            raise UsageError("--save writes calibrated thresholds: give --calibrate LABELS.csv too")
        concepts = load_concepts(concepts_file)
        paths = image_paths(images, required=calibrate_file is None)
        encoder = load_encoder(model, pretrained, device=device, batch_size=batch_size)
        prompt_count = sum(len(c.prompts) + len(c.negatives) for c in concepts)
        with progress_bar(prompt_count, "concept prompts", show=prompt_count > encoder.text_batch_size) as bar:
            filt = ConceptFilter(encoder, concepts, progress=bar)
        calibration = _calibrate(encoder, filt, calibrate_file, precision) if calibrate_file is not None else {}
        if save is not None:
            save_concepts(filt.concepts, save)
            err.print(f"calibrated thresholds written to {save}", highlight=False)
        for c in filt.concepts:
            if c.threshold is None:
                err.print(f"[yellow]concept {c.name!r} has no threshold (and no negatives): nothing is flagged for it; "
                          "set one or use --calibrate[/yellow]")
        result = None
        embedded = None
        if paths:
            embedded = _embed(encoder, paths)
            result = filt.scores(embedded.features)
        flagged = result.flagged() if result is not None else []
        if as_json:
            emit_json({
                "model": encoder.ref.to_dict(),
                "concepts": [{"name": c.name, **c.to_dict()} for c in filt.concepts],
                "calibration": calibration,
                "flagged": [{"image": str(embedded.paths[i]), "concept": n, "score": s} for i, n, s in flagged],  # type: ignore[union-attr]
                "scores": [] if result is None else [
                    {"image": str(p), **{n: float(result.scores[i, j]) for j, n in enumerate(result.names)}}
                    for i, p in enumerate(embedded.paths)],  # type: ignore[union-attr]
                "skipped": [] if embedded is None else _skipped(embedded)})
            return
        if calibration:
            table = Table("concept", header_style="bold", title=f"calibrated to precision {precision:g}")
            for col in ("threshold", "precision", "recall", "flagged", "positives", "labelled"):
                table.add_column(col, justify="right")
            for name, c in calibration.items():
                table.add_row(Text(name), f"{c['threshold']:.4f}", f"{c['precision']:.3f}", f"{c['recall']:.3f}",
                              str(c["flagged"]), str(c["positives"]), str(c["labelled"]))
            out.print(table)
        if result is not None:
            thresholds = {c.name: c.threshold for c in filt.concepts}
            table = Table(Column("image", overflow="fold"), "concept", header_style="bold")
            table.add_column("score", justify="right")
            table.add_column("threshold", justify="right")
            for i, name, s in flagged:
                table.add_row(Text(str(embedded.paths[i])), Text(name), f"{s:.4f}", f"{thresholds[name]:.4f}")  # type: ignore[union-attr]
            out.print(table)
            out.print(f"{len({i for i, _, _ in flagged})} of {len(embedded.paths)} images flagged", highlight=False)  # type: ignore[union-attr]
