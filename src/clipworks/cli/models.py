from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..model import list_models
from ..model.config import QUICKGELU_SUFFIX, normalize_model_name
from ..pretrained import (
    DEFAULT_FILE,
    PretrainedEntry,
    get_pretrained_cfg,
    list_pretrained,
    list_pretrained_tags_by_model,
)
from .common import user_errors

out = Console()


def describe(target: str, pretrained: str | None, config: str | None) -> dict:
    """``factory.describe``, imported when run (the factory imports torch; the CLI starts without it)."""
    from ..factory import describe as describe_model

    return describe_model(target, pretrained, config)


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
    model: Annotated[str | None, typer.Argument(help="Only this model's tags (NAME-quickgelu: its QuickGELU tags).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List the pretrained weights clipworks knows by name: model, tag, Hub repo, file, what the weights need."""
    with user_errors():
        if model is not None:
            name = normalize_model_name(model)
            tags = list_pretrained_tags_by_model(name)
            if not tags:
                get_pretrained_cfg(name, "")  # raises, listing the models that have weights
            entries = [get_pretrained_cfg(name, t) for t in tags]
        else:  # the stored entries; open_clip's NAME-quickgelu aliases repeat their QuickGELU tags
            entries = [get_pretrained_cfg(m, t) for m, t in list_pretrained(quickgelu_aliases=False)]
        if as_json:
            for e in entries:  # one object a line, unstyled, for scripts
                typer.echo(json.dumps({k: v for k, v in dataclasses.asdict(e).items() if v not in ("", None, {})}))
            return
        table = Table("model", "pretrained", "hub repo", "notes")
        for column in table.columns:
            column.overflow = "fold"  # a repo id cut short is useless: wrap it instead
        for e in entries:
            table.add_row(e.model, e.tag, e.hub, _notes(e))
        out.print(table)
        if model is None:
            out.print(f"{len(entries)} weights; a QuickGELU tag is also listed under NAME{QUICKGELU_SUFFIX}, as in open_clip. "
                      "Load one with create_model(model, pretrained=tag), or any Hub repo as hf-hub:org/name.")


def _notes(entry: PretrainedEntry) -> str:
    """What the weights need beyond their config, and a file other than open_clip's default."""
    if entry.layout == "hf":
        return f"whole model ({entry.model_type or 'hf'} layout)"
    parts = [entry.file] if entry.file != DEFAULT_FILE else []
    parts += ["QuickGELU"] if entry.quick_gelu else []
    parts += [f"{k}={v}" for k, v in entry.preprocess.items()]
    return ", ".join(parts)


def convert(
    src: Annotated[str, typer.Argument(help="Checkpoint to read (any supported format).")],
    dst: Annotated[str, typer.Argument(help="Directory to write.")],
    to: Annotated[str, typer.Option(help="Output format: native or hf.")] = "native",
    config: Annotated[str | None, typer.Option(help="Config name/JSON to read a bare state dict with.")] = None,
) -> None:
    """Convert a checkpoint; the destination appears complete or not at all."""
    from ..checkpoints import load_checkpoint, save_pretrained  # torch: only when run

    with user_errors():
        if to not in ("native", "hf"):
            raise UsageError(f"--to must be 'native' or 'hf', got {to!r}")
        model = load_checkpoint(src, config=config)
        save_pretrained(model, dst, format=to)  # type: ignore[arg-type]
        out.print(f"wrote {to} checkpoint to {dst}")
