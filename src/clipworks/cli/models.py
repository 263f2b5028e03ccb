from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..checkpoints import load_checkpoint, save_pretrained
from ..errors import UsageError
from ..factory import describe
from ..model import list_models
from ..model.config import normalize_model_name
from ..pretrained import get_pretrained_cfg, list_pretrained
from .common import user_errors

out = Console()


def info(
    target: Annotated[str, typer.Argument(help="A model config name, hf-hub:org/repo, or a checkpoint path.")] = "",
    pretrained: Annotated[str | None, typer.Option(help="Pretrained tag of a named config.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the named model configs.")] = False,
    config: Annotated[str | None, typer.Option(help="Config to read a bare state dict with.")] = None,
) -> None:
    """Describe a model from its config alone: format, towers, parameter count, preprocessing, tokenizer."""
    with user_errors():
        if list_ or not target:
            for name in list_models():
                out.print(name)
            return
        out.print_json(json.dumps(describe(target, pretrained, config)))


def pretrained(
    model: Annotated[str | None, typer.Argument(help="Only this model config's tags.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List the pretrained weights clipworks knows by name (config, tag, Hub repo)."""
    with user_errors():
        pairs = list_pretrained()
        if model is not None:
            pairs = [(m, t) for m, t in pairs if m == normalize_model_name(model)]
            if not pairs:
                get_pretrained_cfg(model, "")  # raises, listing the models that have weights
        if as_json:
            for m, t in pairs:
                out.print_json(json.dumps({"model": m, "tag": t, "hub": get_pretrained_cfg(m, t).hub}))
            return
        table = Table("model", "pretrained", "hub repo")
        for m, t in pairs:
            table.add_row(m, t, get_pretrained_cfg(m, t).hub)
        out.print(table)


def convert(
    src: Annotated[str, typer.Argument(help="Checkpoint to read (any supported format).")],
    dst: Annotated[str, typer.Argument(help="Directory to write.")],
    to: Annotated[str, typer.Option(help="Output format: native or hf.")] = "native",
    config: Annotated[str | None, typer.Option(help="Config name/JSON to read a bare state dict with.")] = None,
) -> None:
    """Convert a checkpoint; the destination appears complete or not at all."""
    with user_errors():
        if to not in ("native", "hf"):
            raise UsageError(f"--to must be 'native' or 'hf', got {to!r}")
        model = load_checkpoint(src, config=config)
        save_pretrained(model, dst, format=to)  # type: ignore[arg-type]
        out.print(f"wrote {to} checkpoint to {dst}")
