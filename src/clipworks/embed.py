"""Batch embedding of image files and captions, with unreadable files skipped and reported."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .image.decode import ImageError, load_image
from .model import Clip
from .progress import Progress
from .text import Tokenizer


@dataclass
class ImageEmbeddings:
    features: np.ndarray  # float32 [N, embed_dim], one row per file in ``paths``
    paths: list[Path]
    failures: list[tuple[Path, str]] = field(default_factory=list)


def _decoded(paths: Sequence[Path], transform: Callable, workers: int) -> Iterator[tuple[Path, torch.Tensor | str]]:
    """(path, tensor or error message) in input order; decoding runs ahead in threads (PIL releases the GIL)."""

    def work(p: Path) -> torch.Tensor | str:
        try:
            return transform(load_image(p))
        except ImageError as e:
            return str(e)
        except Exception as e:  # a decoder bug on a hostile file must not end a long run
            return f"{p} failed to decode: {type(e).__name__}: {e}"

    ahead = 4 * max(1, workers)  # bounded, so a slow model never lets decoded images pile up
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending: deque[tuple[Path, Future]] = deque()
        for p in paths:
            pending.append((p, pool.submit(work, p)))
            if len(pending) >= ahead:
                q, fut = pending.popleft()
                yield q, fut.result()
        while pending:
            q, fut = pending.popleft()
            yield q, fut.result()


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
) -> ImageEmbeddings:
    """Embed ``paths``; bad files are skipped and listed in ``failures`` (``strict`` raises on the first)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    chunks: list[np.ndarray] = []
    kept: list[Path] = []
    failures: list[tuple[Path, str]] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            x = torch.stack(batch).to(device=device, dtype=dtype)
            chunks.append(model.encode_image(x, normalize=normalize).float().cpu().numpy())
            batch.clear()

    for path, item in _decoded(paths, transform, workers):
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
