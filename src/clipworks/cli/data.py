from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .common import err, user_errors

out_console = Console()
_SHOWN_SKIPS = 20


def data(
    source: Annotated[str, typer.Argument(help="CSV/TSV, image folder with .txt sidecars, .tar shard(s) or a "
                                               "{000000..000009} pattern, fashion-mnist[:test], openclipart, or a "
                                               "folder of IDX / .svg files.")],
    out: Annotated[Path, typer.Argument(help="Output directory.")],
    format: Annotated[Literal["wds", "csv"], typer.Option(
        "--format", help="wds: WebDataset shards; csv: images/ + data.csv for open_clip.")] = "wds",
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard (wds).")] = 10000,
    split: Annotated[Literal["train", "test"], typer.Option(help="Fashion-MNIST split.")] = "train",
    limit: Annotated[int | None, typer.Option(min=1, help="Convert only the first N samples.")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Decode/render/encode processes (0: in this process).")] = 0,
    image_size: Annotated[int, typer.Option(min=8, help="Raster size for SVG sources.")] = 224,
    csv_img_key: Annotated[str, typer.Option(help="Image column of a CSV/TSV source.")] = "filepath",
    csv_caption_key: Annotated[str, typer.Option(help="Caption column of a CSV/TSV source.")] = "title",
    csv_separator: Annotated[str | None, typer.Option(help="CSV/TSV separator (default from the extension).")] = None,
) -> None:
    """Convert a data source into WebDataset shards (or open_clip's CSV layout); unreadable images are skipped and listed."""
    from ..data import export_csv, export_shards, open_source  # the data sources import torch: only when run

    with user_errors():
        src = open_source(source, split=split, csv_img_key=csv_img_key, csv_caption_key=csv_caption_key,
                          csv_separator=csv_separator, image_size=image_size)
        total = len(src) if limit is None else min(limit, len(src))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=False) as bar:
            task = bar.add_task("samples", total=total)
            advance = lambda n: bar.advance(task, n)
            if format == "wds":
                result = export_shards(src, out, shard_size, limit, workers, progress=advance)
            else:
                result = export_csv(src, out, limit, workers, progress=advance)
        where = f"{len(result.files)} shard(s) in {out}" if format == "wds" else str(result.files[0])
        out_console.print(f"wrote {result.samples} samples from {src.description} → {where}", highlight=False)
        if result.skipped:
            err.print(f"[yellow]skipped {len(result.skipped)} unreadable image(s):[/yellow]")
            for reason in result.skipped[:_SHOWN_SKIPS]:
                err.print(f"  {reason}", highlight=False, markup=False, soft_wrap=True)
            if len(result.skipped) > _SHOWN_SKIPS:
                err.print(f"  … and {len(result.skipped) - _SHOWN_SKIPS} more", highlight=False)
