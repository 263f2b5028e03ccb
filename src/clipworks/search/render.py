"""A page of hits as a terminal table, bare paths, JSON, or a self-contained HTML contact sheet.

The contact sheet embeds each thumbnail as a small base64 JPEG, so the one file can be mailed or opened anywhere;
every string from the index or the query is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import atomic_file
from ..image.decode import ImageError, load_image, to_rgb
from .retrieve import Page

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .index import Item


def table(page: Page) -> Table:
    """rank, score, path, caption (and tags when any hit has some)."""
    from rich.table import Table

    title = f"{page.query}  ·  {page.target}"
    if page.filters:
        title += f"  ·  {page.filters}"
    shown = f"ranks {page.offset + 1}–{page.end} of {page.total}" if page.hits else f"0 of {page.total}"
    t = Table(title=title, caption=shown, title_justify="left", caption_justify="left")
    t.add_column("rank", justify="right")
    t.add_column("score", justify="right")
    t.add_column("path", overflow="fold")
    t.add_column("caption", overflow="fold")
    with_tags = any(h.item.tags for h in page.hits)
    if with_tags:
        t.add_column("tags")
    for h in page.hits:
        row = [str(h.rank), f"{h.score:.4f}", h.path, h.item.caption or ""]
        if with_tags:
            row.append(", ".join(h.item.tags))
        t.add_row(*row)
    return t


def print_table(page: Page, console: Console) -> None:
    from rich.markup import escape

    console.print(table(page))
    if page.note:
        console.print(f"[yellow]{escape(page.note)}[/yellow]")


def paths(page: Page) -> str:
    """One absolute path per line (for ``xargs``, ``feh``…)."""
    return "".join(f"{h.file}\n" for h in page.hits)


def to_json(page: Page) -> str:
    return json.dumps(page.to_dict(), indent=2, ensure_ascii=False)


def thumbnail_data_uri(file: Path, size: int = 160, quality: int = 80) -> str | None:
    """A ``data:image/jpeg;base64,…`` thumbnail at most ``size`` px on its long side; None if unreadable."""
    try:
        image = load_image(file)
    except ImageError:
        return None
    image = to_rgb(image)
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.2em;margin:0 0 .3em}p.meta{color:#555;margin:.2em 0 1em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(%(cell)dpx,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px;overflow:hidden}
figure img{display:block;margin:0 auto;max-width:100%%;max-height:%(size)dpx}
.missing{height:%(size)dpx;display:flex;align-items:center;justify-content:center;color:#a00;background:#fee}
figcaption{font-size:.8em;word-break:break-all;margin-top:4px}.score{font-weight:600}
.cap{color:#444;word-break:normal}
"""


def _figure(rank: int | None, score: float | None, item: Item, root: Path, size: int) -> str:
    file = root / item.path
    uri = thumbnail_data_uri(file, size)
    e = html.escape
    img = (f'<img src="{uri}" alt="{e(item.path)}" loading="lazy">' if uri
           else '<div class="missing">unreadable</div>')
    head = ""
    if rank is not None and score is not None:
        head = f'<span class="score">#{rank} · {score:.4f}</span><br>'
    caption = f'<br><span class="cap">{e(item.caption)}</span>' if item.caption else ""
    tags = f'<br><span class="cap">tags: {e(", ".join(item.tags))}</span>' if item.tags else ""
    return (f'<figure title="{e(str(file))}">{img}<figcaption>{head}{e(item.path)}{caption}{tags}'
            "</figcaption></figure>")


def _document(title: str, meta: str, body: str, size: int) -> str:
    e = html.escape
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{_STYLE % {'cell': size + 20, 'size': size}}</style></head>"
            f"<body><h1>{e(title)}</h1><p class=\"meta\">{e(meta)}</p>{body}</body></html>\n")


def contact_sheet(page: Page, size: int = 160) -> str:
    """The page as one self-contained HTML document (query, filters, then a grid of thumbnails)."""
    meta = f"{page.target}; ranks {page.offset + 1}–{page.end} of {page.total}; root {page.root}"
    if page.filters:
        meta += f"; filters: {page.filters}"
    if page.note:
        meta += f"; {page.note}"
    meta += f"; written {datetime.now().isoformat(timespec='seconds')}"
    figures = "".join(_figure(h.rank, h.score, h.item, page.root, size) for h in page.hits)
    return _document(f"search: {page.query}", meta, f'<div class="grid">{figures}</div>', size)


def groups_sheet(groups: Sequence[Sequence[Item]], root: Path, threshold: float, size: int = 120) -> str:
    """Near-duplicate groups as one self-contained HTML document, one row of thumbnails per group."""
    body = "".join(f"<h2>group {i + 1} ({len(g)} items)</h2><div class=\"grid\">"
                   + "".join(_figure(None, None, item, root, size) for item in g) + "</div>"
                   for i, g in enumerate(groups))
    return _document("near-duplicates", f"{len(groups)} groups at cosine ≥ {threshold}; root {root}", body, size)


def write_html(text: str, path: Path) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
