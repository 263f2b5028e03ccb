"""``clipworks search`` and ``clipworks index duplicates``: thin wrappers over ``clipworks.search``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..cpu import set_threads
from ..errors import UsageError
from ..progress import progress_bar
from .common import BackendArg, DeviceArg, PrecisionArg, ThreadsArg, err, open_index, user_errors

out = Console(soft_wrap=True)

QUERY_HELP = ('Text, an image path, or a combination: \'"beach" + 0.5*photo.jpg - "people"\' (quoted text, image '
              "paths, optional weights w*term, + and -).")


def search(
    index_dir: Annotated[Path, typer.Argument(metavar="IDX", help="Index folder (from `clipworks index build`).")],
    query: Annotated[str | None, typer.Argument(help=QUERY_HELP)] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", "-i", help="A query image (repeatable); added to "
                                                     "QUERY with weight 1.")] = None,
    k: Annotated[int, typer.Option("--top-k", "-k", "--limit", min=1, help="Hits per page.")] = 10,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many hits (paging: --offset 10 -k 10 is page 2).")] = 0,
    captions: Annotated[bool, typer.Option("--captions", help="Rank the indexed captions instead of the images "
                                           "(image → text).")] = False,
    paths: Annotated[bool, typer.Option("--paths", help="Print bare absolute paths, one per line.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML contact sheet here.")] = None,
    folder: Annotated[str | None, typer.Option(help="Only items in this folder (relative to the indexed root).")] = None,
    after: Annotated[str | None, typer.Option(help="Only files modified at or after this ISO date/time.")] = None,
    before: Annotated[str | None, typer.Option(help="Only files modified before this ISO date/time.")] = None,
    min_size: Annotated[str | None, typer.Option(help="Only files of at least this size (bytes, 500k, 2MB…).")] = None,
    max_size: Annotated[str | None, typer.Option(help="Only files of at most this size.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Only items with this tag (repeat: all of them).")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="FIELD=VALUE, any filter field (folder, after, "
                                                    "before, min_size, max_size, tag); repeatable.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Optional: must be the index's model.")] = None,
    pretrained: Annotated[str | None, typer.Option("--pretrained", help="Optional, with --model.")] = None,
    backend: BackendArg = "torch",
    precision: PrecisionArg = "fp32",
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
) -> None:
    """Search an index by text, image, or a weighted combination; the index knows its model (with --backend onnx,
    --model is the exported folder of that model)."""
    from ..search import render
    from ..search.filters import Filters
    from ..search.query import QueryTerm, parse_query
    from ..search.retrieve import search as run_search

    with user_errors():
        set_threads(threads)
        if sum([paths, as_json, html is not None]) > 1:
            raise UsageError("choose one output: --paths, --json or --html")
        if query is None and not image:
            raise UsageError("give a QUERY, --image FILE, or both")
        terms = parse_query(query) if query is not None else []
        terms += [QueryTerm(1.0, p) for p in image or []]
        with open_index(index_dir, model, pretrained, backend, precision, device) as index:
            filters = Filters.parse(folder=folder, after=after, before=before, min_size=min_size,
                                    max_size=max_size, tags=tag or [], where=where or [], root=Path(index.root))
            page = run_search(index, terms, k=k, offset=offset, filters=filters,
                              target="captions" if captions else "images")
        if paths:
            sys.stdout.write(render.paths(page))
        elif as_json:
            sys.stdout.write(render.to_json(page) + "\n")
        elif html is not None:
            render.write_html(render.contact_sheet(page), html)
            err.print(f"wrote {html} ({len(page.hits)} hits)", highlight=False)
        else:
            render.print_table(page, out)
            return
        if page.note:
            err.print(f"[yellow]{page.note}[/yellow]", highlight=False)


def duplicates(
    index_dir: Annotated[Path, typer.Argument(metavar="IDX", help="Index folder.")],
    threshold: Annotated[float, typer.Option(min=-1.0, max=1.0, help="Cosine similarity at or above which two "
                                             "images are near-duplicates.")] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Write the groups as an HTML contact sheet.")] = None,
) -> None:
    """Groups of near-duplicate images (cosine ≥ --threshold, joined transitively), largest first."""
    from rich.table import Table

    from ..search import render
    from ..search.duplicates import duplicates as find_duplicates
    from ..search.index import Index

    with user_errors():
        with Index.open(index_dir) as index, progress_bar(len(index), "duplicates", show=not as_json) as progress:
            root = Path(index.root)
            groups = find_duplicates(index, threshold, progress=progress)
        if as_json:
            data = {"threshold": threshold, "root": str(root), "groups": [
                [{"id": it.id, "path": it.path, "file": str(root / it.path), "size": it.size, "sha256": it.sha256}
                 for it in g] for g in groups]}
            sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            return
        if html is not None:
            render.write_html(render.groups_sheet(groups, root, threshold), html)
            err.print(f"wrote {html} ({len(groups)} groups)", highlight=False)
            return
        t = Table(title=f"{len(groups)} near-duplicate groups (cosine ≥ {threshold})", title_justify="left")
        t.add_column("group", justify="right")
        t.add_column("path", overflow="fold")
        t.add_column("size", justify="right")
        t.add_column("sha256")
        for i, g in enumerate(groups, 1):
            for j, it in enumerate(g):
                t.add_row(str(i) if j == 0 else "", it.path, str(it.size), it.sha256[:12],
                          end_section=j == len(g) - 1)
        out.print(t)
