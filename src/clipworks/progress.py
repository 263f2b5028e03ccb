"""One way every long loop reports progress: a rich bar on stderr, or nothing.

Library functions take ``progress: Progress | None`` — a callable given the number of items just done — so
the CLI shows a bar, the service counts, and tests pass nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Progress = Callable[[int], None]


@contextlib.contextmanager
def progress_bar(total: int | None, description: str, show: bool = True) -> Iterator[Progress | None]:
    """A ``Progress`` callable that advances a bar (count, rate, time left) on stderr; None when not ``show``."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
             console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
