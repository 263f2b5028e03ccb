from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..checkpoints import detect_format, load_checkpoint, load_state, save_pretrained
from ..model import get_model_config, list_models
from ..model.config import ConfigError
from .common import user_errors

out = Console()


def info(
    target: Annotated[str, typer.Argument(help="A model config name (see --list) or a checkpoint path.")] = "",
    list_: Annotated[bool, typer.Option("--list", help="List the named model configs.")] = False,
    config: Annotated[str | None, typer.Option(help="Config to read a bare state dict with.")] = None,
) -> None:
    """Describe a named config or a checkpoint: format, architecture, parameter count."""
    with user_errors():
        if list_ or not target:
            for name in list_models():
                out.print(name)
            return
        if Path(target).exists():
            cfg, sd, kind = load_state(target, config)
            params = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
            summary = {"path": target, "format": kind, "container": detect_format(target), "parameters": params,
                       "config": cfg.to_dict()}
        else:
            try:
                cfg = get_model_config(target)
            except ConfigError as e:
                raise ConfigError(f"{target!r} is neither an existing path nor a model config name ({e})") from None
            from ..model import Clip

            summary = {"name": target, "parameters": sum(p.numel() for p in Clip(cfg).parameters()), "config": cfg.to_dict()}
        out.print_json(json.dumps(summary))


def convert(
    src: Annotated[str, typer.Argument(help="Checkpoint to read (any supported format).")],
    dst: Annotated[str, typer.Argument(help="Directory to write.")],
    to: Annotated[str, typer.Option(help="Output format: native or hf.")] = "native",
    config: Annotated[str | None, typer.Option(help="Config name/JSON to read a bare state dict with.")] = None,
) -> None:
    """Convert a checkpoint; the destination appears complete or not at all."""
    with user_errors():
        if to not in ("native", "hf"):
            raise ValueError(f"--to must be 'native' or 'hf', got {to!r}")
        model = load_checkpoint(src, config=config)
        save_pretrained(model, dst, format=to)  # type: ignore[arg-type]
        out.print(f"wrote {to} checkpoint to {dst}")
