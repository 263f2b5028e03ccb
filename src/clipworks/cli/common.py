"""What every command shares: turning the project's own errors into one red line and exit code 1.

Only ``ClipworksError`` (bad input the user can fix: a config, a file, a value) is printed that way; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import rich.markup
import typer
from rich.console import Console

from ..errors import ClipworksError

err = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except ClipworksError as e:
        err.print(f"[red]error:[/red] {rich.markup.escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
