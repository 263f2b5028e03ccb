"""The ``clipworks`` command: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import typer

from . import data, embed, index, interpolate, models, plot, search, train

app = typer.Typer(no_args_is_help=True, add_completion=False, help="CLIP models: train, evaluate, inspect, convert, embed.")
app.command("info")(models.info)
app.command("pretrained")(models.pretrained)
app.command("convert")(models.convert)
app.command("embed")(embed.embed)
app.command("data")(data.data)
app.command("plot")(plot.plot)
app.command("interpolate")(interpolate.interpolate)
app.command("train")(train.train)
app.command("demo")(train.demo)
app.add_typer(index.app, name="index")
app.command("search")(search.search)


def main() -> None:
    app()
