from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import UsageError
from .common import user_errors

out = Console()


def interpolate(
    a: Annotated[str, typer.Argument(help="First checkpoint, alpha=0 (e.g. the zero-shot model); any format.")],
    b: Annotated[str, typer.Argument(help="Second checkpoint, alpha=1 (e.g. the fine-tuned model); any format.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write.")],
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of B: (1-alpha)*A + alpha*B.")] = 0.5,
    format: Annotated[str, typer.Option(help="Output format: native or hf.")] = "native",
    config: Annotated[str | None, typer.Option(help="Config name/JSON to read bare state dicts with.")] = None,
) -> None:
    """WiSE-FT: interpolate two checkpoints of one architecture; the output appears complete or not at all."""
    from ..checkpoints import load_checkpoint, save_pretrained  # torch: only when run
    from ..interpolate import interpolate as interpolate_models

    with user_errors():
        if format not in ("native", "hf"):
            raise UsageError(f"--format must be 'native' or 'hf', got {format!r}")
        merged = interpolate_models(load_checkpoint(a, config=config), load_checkpoint(b, config=config), alpha)
        save_pretrained(merged, out_dir, format=format)  # type: ignore[arg-type]
        out.print(f"wrote {format} checkpoint (1-{alpha})·{a} + {alpha}·{b} to {out_dir}", highlight=False, soft_wrap=True)
