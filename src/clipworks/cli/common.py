"""What every command shares: turning the project's own errors into one red line and exit code 1.

Only ``ClipworksError`` (bad input the user can fix: a config, a file, a value) is printed that way; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import rich.markup
import typer
from rich.console import Console

from ..errors import ClipworksError, UsageError
from ..image.decode import ImageError, expand_image_paths

if TYPE_CHECKING:
    from ..encoding import EncoderLike
    from ..search.index import Index

err = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except ClipworksError as e:
        err.print(f"[red]error:[/red] {rich.markup.escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


ModelArg = Annotated[str, typer.Option("--model", "-m", help="Config name, hf-hub:org/repo, or checkpoint path.")]
PretrainedArg = Annotated[str | None, typer.Option("--pretrained", help="Pretrained tag of --model (see `clipworks "
                                                   "pretrained`) or a checkpoint file to read into it.")]
DeviceArg = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps …")]
BatchArg = Annotated[int, typer.Option("--batch-size", min=1, help="Images per model call.")]
JsonArg = Annotated[bool, typer.Option("--json", help="Print JSON.")]
CsvArg = Annotated[bool, typer.Option("--csv", help="Print CSV.")]
BackendArg = Annotated[str, typer.Option("--backend", help="torch, or onnx: the model is a folder made by `clipworks "
                                         "export onnx`, run by onnxruntime (no torch needed).")]
PrecisionArg = Annotated[str, typer.Option("--precision", help="fp32; with --backend onnx, int8 runs the folder's "
                                           "int8 graphs (export with --int8); with torch, fp16/bf16 as the model "
                                           "loader takes them.")]
ThreadsArg = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for the model (default: "
                                                "one per core).")]


def load_encoder(model: str, pretrained: str | None, device: str = "cpu", batch_size: int = 64,
                 backend: str = "torch", precision: str = "fp32") -> EncoderLike:
    """The model every application command embeds with, loaded once (with a status line: big models take a while).
    Only the torch backend is imported for ``torch``; ``onnx`` never imports torch."""
    from ..encoding import load_encoder as load

    options: dict[str, Any] = {"batch_size": batch_size, "precision": precision}
    if backend == "torch":
        options["device"] = device
    elif device != "cpu":
        raise UsageError(f"--device {device}: the onnx backend runs on the CPU (its default execution provider)")
    with err.status(f"loading {model}" + (f" ({pretrained})" if pretrained else "")):
        return load(model, pretrained, backend=backend, **options)


def open_index(index_dir: Path, model: str | None, pretrained: str | None, backend: str = "torch",
               precision: str = "fp32", device: str = "cpu", batch_size: int = 64, writable: bool = False) -> Index:
    """An index opened with the model the user names, which must be the one its vectors came from (refused naming
    both). With ``torch`` and no ``--model`` the index loads its recorded model when a query needs it; the onnx
    backend needs ``--model`` (the exported folder: the index records the weights, not where an export of them is)."""
    from ..modelref import ModelRef
    from ..search.index import Index

    if model is None and pretrained is not None:
        raise UsageError("--pretrained needs --model (the index records its model: both can be left out)")
    if backend == "onnx":
        if model is None:
            raise UsageError("--backend onnx needs --model: the folder `clipworks export onnx` wrote for the index's "
                             "model")
        encoder = load_encoder(model, pretrained, device, batch_size, backend, precision)
        return Index.open(index_dir, encoder=encoder, writable=writable, batch_size=batch_size)
    if backend != "torch":
        raise UsageError(f"--backend {backend!r} is not one of torch, onnx")
    index = Index.open(index_dir, writable=writable, device=device, batch_size=batch_size)
    if model is not None:
        given = ModelRef.resolve(model, pretrained)  # refused before any weights are loaded or downloaded
        if not given.same_weights(index.ref):
            index.close()
            raise UsageError(f"index {index_dir} was built with {index.ref.describe()}; the model given is "
                             f"{given.describe()} — its vectors cannot be compared with the index's")
    return index


def image_paths(images: Sequence[str] | None, required: bool = True) -> list[Path]:
    """Image files and folders (searched recursively) as files; a folder without images is an error naming it."""
    paths = expand_image_paths(images or [])
    if images and not paths:
        raise ImageError(f"no image files found in {', '.join(images)}")
    if required and not paths:
        raise UsageError("give image files or directories")
    return paths


def print_skipped(reasons: Sequence[str], limit: int | None = None) -> None:
    """Unreadable files, counted and listed one per line on stderr, so stdout stays the results."""
    if not reasons:
        return
    err.print(f"[yellow]skipped {len(reasons)} unreadable file(s):[/yellow]")
    for reason in reasons[:limit]:
        err.print(f"  {reason}", highlight=False, markup=False, soft_wrap=True)
    if limit is not None and len(reasons) > limit:
        err.print(f"  … and {len(reasons) - limit} more", highlight=False)


def emit_json(data: Any) -> None:
    """Results as indented, strict JSON on stdout (numpy unwrapped, NaN → null, non-ASCII kept readable)."""
    from ..evaluate.report import jsonable

    typer.echo(json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False))


def emit_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Results as CSV on stdout."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    typer.echo(buf.getvalue(), nl=False)


def output_format(as_json: bool, as_csv: bool) -> str:
    """``table`` (the default), ``json`` or ``csv`` from the ``--json``/``--csv`` flags every results command has."""
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    return "json" if as_json else "csv" if as_csv else "table"
