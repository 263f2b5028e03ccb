"""Batch embedding of image files and captions, with unreadable files skipped and reported."""

from __future__ import annotations

import functools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .image.decode import ImageError, load_image
from .image.transforms import ImageTransform
from .model import Clip
from .progress import Progress
from .text import Tokenizer


@dataclass
class ImageEmbeddings:
    features: np.ndarray  # float32 [N, embed_dim], one row per file in ``paths``
    paths: list[Path]
    failures: list[tuple[Path, str]] = field(default_factory=list)


def _load(transform: Callable, p: Path) -> Image.Image:
    """The file decoded as ``transform`` wants it (``ImageTransform.load``: JPEG draft decoding when ``fast``)."""
    return transform.load(p) if isinstance(transform, ImageTransform) else load_image(p)


def _work(transform: Callable, p: Path) -> torch.Tensor | str:
    try:
        return transform(_load(transform, p))
    except ImageError as e:
        return str(e)
    except Exception as e:  # a decoder bug on a hostile file must not end a long run
        return f"{p} failed to decode: {type(e).__name__}: {e}"


def _crop_work(transform: ImageTransform, p: Path) -> np.ndarray | str:
    """A process worker's share: decode, resize and crop to 8-bit pixels (a quarter of the float tensor's bytes to
    send back, and no torch in the worker); the parent normalises."""
    try:
        return np.asarray(transform.crop(_load(transform, p)), dtype=np.uint8)
    except ImageError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001  # as _work: one hostile file must not end a long run
        return f"{p} failed to decode: {type(e).__name__}: {e}"


def _decoded(paths: Sequence[Path], transform: Callable, workers: int,
             processes: bool = False) -> Iterator[tuple[Path, torch.Tensor | str]]:
    """(path, tensor or error message) in input order; decoding runs ahead in ``workers`` threads (PIL releases the
    GIL while it decodes and resizes), or with ``processes`` in worker processes (for when the Python around PIL is
    what limits: many small images, many cores)."""
    ahead = 4 * max(1, workers)  # bounded, so a slow model never lets decoded images pile up
    if processes:
        if not isinstance(transform, ImageTransform):
            raise TypeError("decode worker processes need an ImageTransform (its crop runs in the workers)")
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
        pool: Executor = ProcessPoolExecutor(max(1, workers), mp_context=ctx)
        submit = functools.partial(pool.submit, _crop_work, transform)
        finish = (lambda r: r if isinstance(r, str) else transform.normalize(r))
    else:
        pool = ThreadPoolExecutor(max(1, workers))
        submit = functools.partial(pool.submit, _work, transform)
        finish = (lambda r: r)
    with pool:
        pending: deque[tuple[Path, Future]] = deque()
        for p in paths:
            pending.append((p, submit(p)))
            if len(pending) >= ahead:
                q, fut = pending.popleft()
                yield q, finish(fut.result())
        while pending:
            q, fut = pending.popleft()
            yield q, finish(fut.result())


@torch.inference_mode()
def embed_images(
    model: Clip,
    transform: Callable,
    paths: Sequence[Path],
    batch_size: int = 64,
    normalize: bool = True,
    strict: bool = False,
    workers: int = 2,
    progress: Progress | None = None,
    processes: bool = False,
) -> ImageEmbeddings:
    """Embed ``paths``; bad files are skipped and listed in ``failures`` (``strict`` raises on the first).

    ``workers`` decode ahead in threads, or in processes with ``processes`` (started with ``spawn``: a script that
    calls this needs the usual ``if __name__ == "__main__":`` guard). On CUDA a batch is copied from pinned memory
    without blocking, so the next batch's decoding overlaps the copy."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    chunks: list[np.ndarray] = []
    kept: list[Path] = []
    failures: list[tuple[Path, str]] = []
    batch: list[torch.Tensor] = []

    pin = device.type == "cuda" and torch.cuda.is_available()

    def flush() -> None:
        if batch:
            x = torch.stack(batch)
            if pin:
                x = x.pin_memory()
            x = x.to(device=device, dtype=dtype, non_blocking=pin)
            chunks.append(model.encode_image(x, normalize=normalize).float().cpu().numpy())
            batch.clear()

    for path, item in _decoded(paths, transform, workers, processes):
        if isinstance(item, str):
            if strict:
                raise ImageError(item)
            failures.append((path, item))
        else:
            batch.append(item)
            kept.append(path)
            if len(batch) == batch_size:
                flush()
        if progress:
            progress(1)
    flush()
    dim = model.config.embed_dim
    features = np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
    return ImageEmbeddings(features, kept, failures)


@torch.inference_mode()
def embed_texts(
    model: Clip,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    batch_size: int = 256,
    normalize: bool = True,
    progress: Progress | None = None,
) -> np.ndarray:
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        part = texts[start : start + batch_size]
        tokens = tokenizer(part, context_length=model.context_length).to(device)
        chunks.append(model.encode_text(tokens, normalize=normalize).float().cpu().numpy())
        if progress:
            progress(len(part))
    return np.concatenate(chunks) if chunks else np.zeros((0, model.config.embed_dim), dtype=np.float32)
