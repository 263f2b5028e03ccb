"""``clipworks train`` and ``clipworks demo``: parse a run description, hand it to the trainer, print the outcome."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..model import ConfigError
from .common import user_errors

out = Console()

# Flags for the fields people set most; every other TrainConfig field goes through --set key=value.
_FLAGS = ("model", "pretrained", "init", "data", "val_data", "out", "epochs", "max_steps", "batch_size", "lr", "precision",
          "device", "workers", "resume", "seed", "accum_steps", "loss")


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            values[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.replace("-", "_")] = raw  # a bare string such as a path or a name
    return values


def train(
    config: Annotated[Path | None, typer.Argument(help="Run file (.json or .toml) holding TrainConfig fields.")] = None,
    model: Annotated[str | None, typer.Option(help="Model config name or JSON (e.g. ViT-B-32, fmnist-vit).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="Fine-tune from this pretrained tag of --model.")] = None,
    init: Annotated[str | None, typer.Option(help="Start from these weights (any checkpoint format).")] = None,
    data: Annotated[str | None, typer.Option(help="Training pairs: CSV/TSV, image folder, .tar shards, fashion-mnist, openclipart.")] = None,
    val_data: Annotated[str | None, typer.Option(help="Labelled held-out source for zero-shot evaluation.")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Run directory.")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-process batch size.")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 or bf16 (autocast).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader worker processes.")] = None,
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoint directory.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    accum_steps: Annotated[int | None, typer.Option(help="GradCache micro-batches per step.")] = None,
    loss: Annotated[str | None, typer.Option(help="clip or siglip.")] = None,
    sets: Annotated[list[str] | None, typer.Option("--set", help="Any TrainConfig field as KEY=VALUE (JSON values).")] = None,
) -> None:
    """Train or fine-tune a CLIP model; checkpoints, metrics.jsonl and TensorBoard logs go to the run directory."""
    from ..train.config import TrainConfig, read_train_config
    from ..train.loop import train as run_training

    with user_errors():
        values: dict[str, Any] = read_train_config(config) if config else {}
        flags = dict(model=model, pretrained=pretrained, init=init, data=data, val_data=val_data, out=out_dir, epochs=epochs, max_steps=max_steps,
                     batch_size=batch_size, lr=lr, precision=precision, device=device, workers=workers, resume=resume,
                     seed=seed, accum_steps=accum_steps, loss=loss)
        values.update({k: v for k, v in flags.items() if v is not None})
        values.update(_parse_sets(sets or []))
        cfg = TrainConfig.from_dict(values, where=str(config) if config else "flags")
        result = run_training(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports for everyone
    out.print(f"trained {result.steps} steps in {result.train_seconds:.0f} s ({result.samples_per_s:.0f} samples/s); "
              f"checkpoint {result.final_checkpoint}", highlight=False, soft_wrap=True)
    if result.zeroshot is not None:
        out.print(f"zero-shot top-1 {100 * result.zeroshot.top1:.2f}% on {result.zeroshot.n} images", highlight=False)
    for message in result.warnings:
        out.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)
    if result.skipped_images:
        out.print(f"skipped {result.skipped_images} unreadable images", highlight=False)


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory for checkpoints, metrics.json and plots.")] = Path("runs/demo"),
    epochs: Annotated[float | None, typer.Option(help="Training epochs over Fashion-MNIST train (default: the tuned recipe).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when there is one), cpu or cuda.")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace what --out already holds.")] = False,
) -> None:
    """Train a small ViT CLIP on Fashion-MNIST from scratch and report zero-shot accuracy on its 10k test images."""
    from ..demo import run_demo

    with user_errors():
        result = run_demo(out_dir, seed=seed, overwrite=overwrite, device=device,
                          **({} if epochs is None else {'epochs': epochs}))
    m = result.metrics
    out.print(f"zero-shot top-1 {100 * m['zeroshot_top1']:.2f}% on {m['test_images']} Fashion-MNIST test images "
              f"(top-5 {100 * m['zeroshot_top5']:.2f}%), {m['wall_seconds']:.0f} s wall", highlight=False)
    for path in result.files:
        out.print(f"  {path}", highlight=False, soft_wrap=True)
