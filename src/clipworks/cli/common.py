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
from typing import Annotated, Any

import rich.markup
import typer
from rich.console import Console

from ..encoder import Encoder
from ..errors import ClipworksError, UsageError
from ..image.decode import ImageError, expand_image_paths

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
ThreadsArg = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for the model (default: "
                                                "torch's, one per core).")]


def load_encoder(model: str, pretrained: str | None, device: str = "cpu", batch_size: int = 64) -> Encoder:
    """The model every application command embeds with, loaded once (with a status line: big models take a while)."""
    with err.status(f"loading {model}" + (f" ({pretrained})" if pretrained else "")):
        return Encoder.load(model, pretrained, device=device, batch_size=batch_size)


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
