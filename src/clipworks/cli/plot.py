from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .common import user_errors

out = Console()


def plot(run_dir: Annotated[Path, typer.Argument(help="A training run directory (holds metrics.jsonl).")]) -> None:
    """Draw a run's training curves as PNG into the run directory; prints the paths written."""
    from ..plots import plot_run  # torch and matplotlib: only when run

    with user_errors():
        for path in plot_run(run_dir):
            out.print(str(path), highlight=False, soft_wrap=True)
