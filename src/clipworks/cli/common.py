"""What every command shares: turning library errors into one red line and exit code 1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import rich.markup
import typer
from rich.console import Console

from ..checkpoints import CheckpointError
from ..data import DataError
from ..images import ImageError
from ..model import ConfigError

err = Console(stderr=True)
USER_ERRORS = (CheckpointError, ConfigError, DataError, ImageError, FileNotFoundError, ValueError, TypeError)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as e:
        err.print(f"[red]error:[/red] {rich.markup.escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
