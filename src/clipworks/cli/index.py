"""``clipworks index build|add|remove|info``: thin wrappers over ``clipworks.search.Index``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..cpu import set_threads
from ..errors import UsageError
from ..search import AddReport, Index
from . import search as search_cli
from .common import (
    BackendArg,
    BatchArg,
    DeviceArg,
    ModelArg,
    PrecisionArg,
    PretrainedArg,
    ThreadsArg,
    emit_json,
    err,
    load_encoder,
    open_index,
    print_skipped,
    user_errors,
)

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="A persistent search index of an image folder (FAISS + SQLite); `clipworks search` queries it.")
out = Console()

IndexArg = Annotated[Path, typer.Argument(help="The index folder.", show_default=False)]
WorkersArg = Annotated[int, typer.Option("--workers", min=1, help="Image decoding and hashing threads.")]


@contextlib.contextmanager
def _bar(description: str) -> Iterator[tuple]:
    """A progress bar whose total ``add`` tells it once it knows how many files are new or changed."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as bar:
        task = bar.add_task(description, total=None)
        yield (lambda n: bar.advance(task, n)), (lambda total: bar.update(task, total=total))


def _add(index: Index, directory: Path | None, workers: int) -> AddReport:
    with _bar("embedding") as (progress, on_total):
        return index.add(directory, progress, on_total=on_total, workers=workers)


def _print_report(index: Index, report: AddReport) -> None:
    out.print(f"{index.path}: {report} — {len(index)} items", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    print_skipped([reason for _, reason in report.failures])


def _options(pairs: list[str] | None) -> dict[str, int]:
    options: dict[str, int] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise UsageError(f"--option {pair!r}: expected KEY=INTEGER, e.g. --option M=32 or --option nlist=1024")
        options[key.strip()] = int(value)
    return options


@app.command("build")
def build(
    directory: Annotated[Path, typer.Argument(help="The folder of images to index (recursively).",
                                              show_default=False)],
    index: Annotated[Path, typer.Option("--index", help="The index folder to create.", show_default=False)],
    model: ModelArg,
    pretrained: PretrainedArg = None,
    kind: Annotated[str, typer.Option("--kind", help="flat (exact), hnsw or ivfpq (approximate, large "
                                                     "collections).")] = "flat",
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Index option KEY=VALUE: hnsw M, "
                                                     "ef_construction, ef_search; ivfpq nlist, m, nbits, nprobe, "
                                                     "train_min.")] = None,
    batch_size: BatchArg = 64,
    backend: BackendArg = "torch",
    precision: PrecisionArg = "fp32",
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    workers: WorkersArg = 2,
) -> None:
    """Create an index of DIRECTORY with a model, and embed every image under it."""
    with user_errors():
        set_threads(threads)
        options = _options(option)
        encoder = load_encoder(model, pretrained, device, batch_size, backend, precision)
        with Index.create(index, directory, encoder, kind, **options) as idx:
            _print_report(idx, _add(idx, None, workers))


@app.command("add")
def add(
    index: IndexArg,
    directory: Annotated[Path | None, typer.Argument(help="A folder inside the indexed one (default: all of it).",
                                                     show_default=False)] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Index again files that `index remove` "
                                                      "excluded (give the pattern it was given).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Optional: must be the index's model (with "
                                              "--backend onnx: its exported folder).")] = None,
    pretrained: PretrainedArg = None,
    batch_size: BatchArg = 64,
    backend: BackendArg = "torch",
    precision: PrecisionArg = "fp32",
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    workers: WorkersArg = 2,
) -> None:
    """Bring the index up to date: embed new and changed images, follow moved ones, drop gone ones."""
    set_threads(threads)
    with user_errors(), open_index(index, model, pretrained, backend, precision, device, batch_size,
                                   writable=True) as idx:
        for pattern in include or []:
            if not idx.include(pattern):
                raise UsageError(f"--include {pattern!r}: not an excluded pattern of {index} "
                                 f"(excluded: {', '.join(idx.excluded) or 'none'})")
        _print_report(idx, _add(idx, directory, workers))


@app.command("remove")
def remove(
    index: IndexArg,
    path: Annotated[str, typer.Argument(help="A path, folder or glob (quote it) relative to the indexed folder, or "
                                             "an absolute path inside it.", show_default=False)],
    exclude: Annotated[bool, typer.Option("--exclude/--no-exclude", help="Keep these files out of later `index "
                                          "add`s (lift with `index add --include PATTERN`).")] = True,
) -> None:
    """Remove items from the index (the files are not touched)."""
    with user_errors(), Index.open(index, writable=True) as idx:
        removed = idx.remove(path, exclude=exclude)
        if not removed:
            raise UsageError(f"nothing in {index} matches {path!r} (paths are relative to {idx.root})")
        out.print(f"removed {removed} item(s); {len(idx)} left", highlight=False)


@app.command("info")
def info(
    index: IndexArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What an index holds: model, kind, item count, root folder, sizes, dates."""
    with user_errors(), Index.open(index) as idx:
        data = idx.info()
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if key == "model_ref":
            continue
        if key == "sizes":
            value = ", ".join(f"{k.removesuffix('_bytes')} {v / 1e6:.1f} MB" for k, v in value.items())
        out.print(f"[bold]{key:>14}[/bold]  {value}", highlight=False)


app.command("duplicates")(search_cli.duplicates)  # the query side's command, in this group (cli/search.py)
