"""``clipworks eval compositional``: generated spatial/counting/negation/binding probes, scored per category."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..cpu import set_threads
from ..evaluate.compositional import evaluate_compositional, markdown_table
from ..evaluate.probes import CATEGORIES, MIN_SIZE, check_categories, generate_probes, save_probes
from ..evaluate.report import write_report
from ..progress import progress_bar
from .common import (
    BatchArg,
    DeviceArg,
    ModelArg,
    PretrainedArg,
    ThreadsArg,
    emit_json,
    err,
    load_encoder,
    user_errors,
)

out = Console()
EXAMPLES_PER_CATEGORY = 8


def compositional(
    model: ModelArg,
    pretrained: PretrainedArg = None,
    categories: Annotated[str | None, typer.Option(help=f"Comma-separated subset of: {', '.join(CATEGORIES)}.")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Probes per category (each is two images, two captions).")] = 200,
    seed: Annotated[int, typer.Option(help="Fixes every probe; the same seed gives the same probes.")] = 0,
    size: Annotated[int, typer.Option(min=MIN_SIZE, help="Probe image size in pixels.")] = 224,
    out_dir: Annotated[Path, typer.Option("--out", help="Write compositional.json and compositional.md here.")]
        = Path("eval-results"),
    save_images: Annotated[Path | None, typer.Option("--save-images", help=f"Write the first "
                                                     f"{EXAMPLES_PER_CATEGORY} probes of each category as PNGs "
                                                     "with captions.tsv here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON result instead of the table.")] = False,
    device: DeviceArg = "cpu",
    threads: ThreadsArg = None,
    batch_size: BatchArg = 64,
) -> None:
    """Compositional probes (spatial relations, counting, negation, attribute binding): how often the model
    prefers the true caption over its minimally changed twin, and Winoground text/image/group scores."""
    with user_errors():
        set_threads(threads)
        names = check_categories(categories)
        if save_images is not None:
            examples = [p for c in names for p in generate_probes(c, min(n, EXAMPLES_PER_CATEGORY), seed, size)]
            written = save_probes(examples, save_images)
            err.print(f"wrote {len(written)} probe images and captions.tsv to {save_images}")
        encoder = load_encoder(model, pretrained, device, batch_size)
        with progress_bar(2 * n * len(names), "compositional probes") as progress:
            result = evaluate_compositional(encoder, names, n, seed, size, progress=progress)
        table = markdown_table(result)
        for path in write_report(result, out_dir, "compositional",
                                 {"categories": names, "n": n, "seed": seed, "size": size, "device": device}, table):
            err.print(f"wrote {path}")
        if as_json:
            emit_json(result)
        else:
            out.print(table, markup=False, highlight=False, end="")
