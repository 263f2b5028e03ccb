from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..cpu import set_threads
from ..errors import MissingFileError, UsageError
from ..fileio import atomic_file
from ..image.decode import ImageError, expand_image_paths
from .common import BackendArg, PrecisionArg, ThreadsArg, err, load_encoder, user_errors

out = Console()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err, transient=False)


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def embed(
    inputs: Annotated[list[str] | None, typer.Argument(help="Image files and/or directories.")] = None,
    model: Annotated[str, typer.Option(help="Config name, hf-hub:org/repo, or checkpoint path (with --backend onnx: "
                                            "an exported folder).")] = "ViT-B-32",
    pretrained: Annotated[str | None, typer.Option("--pretrained", "--checkpoint",
                                                   help="Pretrained tag of --model (see `clipworks pretrained`) or a "
                                                        "checkpoint file to read into it.")] = None,
    text: Annotated[Path | None, typer.Option(help="Embed the captions in this file, one per line.")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Output .npy file (float32, one row per input).")] = Path("embeddings.npy"),
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[str, typer.Option()] = "cpu",
    threads: ThreadsArg = None,
    normalize: Annotated[bool, typer.Option(help="L2-normalise the embeddings.")] = True,
    strict: Annotated[bool, typer.Option(help="Stop at the first unreadable image instead of skipping it.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Image decoding threads.")] = 2,
    backend: BackendArg = "torch",
    precision: PrecisionArg = "fp32",
    processes: Annotated[bool, typer.Option("--processes", help="Decode in worker processes instead of threads "
                                            "(for many small images on many cores; torch backend).")] = False,
    fast_decode: Annotated[bool, typer.Option("--fast-decode", help="Approximate, faster preprocessing: JPEG draft "
                                              "decoding and a reducing resize. Not open_clip's exact pixels (see "
                                              "bench/preprocess_speed.py for the difference; torch backend).")] = False,
) -> None:
    """Embed images (or captions with --text) into a .npy; row order is written to OUT.paths.txt."""
    with user_errors():
        set_threads(threads)
        if not inputs and text is None:
            raise UsageError("give image files/directories, or --text FILE")
        if inputs and text is not None:
            raise UsageError("embed images or --text captions, not both in one run")
        encoder = load_encoder(model, pretrained, device, batch_size, backend, precision)
        encoder.text_batch_size = batch_size
        decode_options = {}
        if processes or fast_decode:
            if backend != "torch":
                raise UsageError("--processes and --fast-decode run the torch backend's image transform; the onnx "
                                 "backend decodes in threads, exactly")
            if fast_decode:
                encoder.preprocess = dataclasses.replace(encoder.preprocess, fast=True)  # type: ignore[attr-defined]
            decode_options["processes"] = processes
        listing = out_path.with_suffix(".paths.txt")
        if text is not None:
            if not text.is_file():
                raise MissingFileError(f"--text {text}: no such file")
            captions = text.read_text(encoding="utf-8").splitlines()
            with _progress() as bar:
                task = bar.add_task("captions", total=len(captions))
                features = encoder.encode_text(captions, progress=lambda n: bar.advance(task, n), normalize=normalize)
            _save(out_path, features)
            out.print(f"embedded {len(captions)} captions → {out_path} {features.shape}")
            return
        paths = expand_image_paths(inputs or [])
        if not paths:
            raise ImageError(f"no image files found in {', '.join(inputs or [])}")
        with _progress() as bar:
            task = bar.add_task("images", total=len(paths))
            result = encoder.encode_files(paths, strict, workers, progress=lambda n: bar.advance(task, n),
                                          normalize=normalize, **decode_options)
        _save(out_path, result.features)
        with atomic_file(listing) as tmp:
            tmp.write_text("".join(f"{p}\n" for p in result.paths), encoding="utf-8")
        out.print(f"embedded {len(result.paths)} images → {out_path} {result.features.shape}; row order in {listing}")
        if result.failures:
            err.print(f"[yellow]skipped {len(result.failures)} unreadable file(s):[/yellow]")
            for _, reason in result.failures:
                err.print(f"  {reason}", highlight=False, markup=False, soft_wrap=True)
