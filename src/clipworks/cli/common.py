"""What every command shares: turning the project's own errors into one red line and exit code 1.

Only ``ClipworksError`` (bad input the user can fix: a config, a file, a value) is printed that way; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import rich.markup
import typer
from rich.console import Console

from ..encoder import Encoder
from ..errors import ClipworksError

err = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except ClipworksError as e:
        err.print(f"[red]error:[/red] {rich.markup.escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


ModelArg = Annotated[str, typer.Option("--model", "-m", help="Config name, hf-hub:org/repo, or checkpoint path.")]
PretrainedArg = Annotated[str | None, typer.Option("--pretrained", help="Pretrained tag of --model (see `clipworks "
                                                   "pretrained`) or a checkpoint file to read into it.")]
DeviceArg = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps …")]
BatchArg = Annotated[int, typer.Option("--batch-size", min=1, help="Images per model call.")]


def load_encoder(model: str, pretrained: str | None, device: str = "cpu", batch_size: int = 64) -> Encoder:
    """The model every application command embeds with, loaded once (with a status line: big models take a while)."""
    with err.status(f"loading {model}" + (f" ({pretrained})" if pretrained else "")):
        return Encoder.load(model, pretrained, device=device, batch_size=batch_size)
