"""The ``clipworks`` command: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import typer

from . import embed, models

app = typer.Typer(no_args_is_help=True, add_completion=False, help="CLIP models: inspect, convert, embed.")
app.command("info")(models.info)
app.command("convert")(models.convert)
app.command("embed")(embed.embed)


def main() -> None:
    app()
