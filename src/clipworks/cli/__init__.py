"""The ``clipworks`` command: thin wrappers that parse arguments and call the library."""

from __future__ import annotations

import rich.markup
import typer

from . import classify, data, embed, eval, export, index, interpolate, models, plot, score, search, serve, train

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="CLIP models: train, load any family, embed, classify, index and search, evaluate, score.")
app.command("info")(models.info)
app.command("pretrained")(models.pretrained)
app.command("convert")(models.convert)
app.command("embed")(embed.embed)
app.command("classify")(classify.classify)
app.command("search")(search.search)
app.command("serve")(serve.serve)
app.command("score")(score.score)
app.command("quality")(score.quality)
app.command("filter")(score.filter_images)
app.command("data")(data.data)
app.command("plot")(plot.plot)
app.command("interpolate")(interpolate.interpolate)
app.command("train")(train.train)
app.command("demo")(train.demo)
app.add_typer(index.app, name="index")
app.add_typer(eval.app, name="eval")
app.add_typer(export.app, name="export")


def main() -> None:
    try:
        app(standalone_mode=True)
    except ModuleNotFoundError as e:  # a command of the torch extra on a torch-free install: a user error, one line
        from ..errors import torch_extra_missing
        from .common import err

        missing = torch_extra_missing(e, "this command")
        if missing is None:
            raise
        err.print(f"[red]error:[/red] {rich.markup.escape(str(missing))}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
