"""Batch embedding of image files and captions, with unreadable files skipped and reported."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .encoding import ImageEmbeddings, embed_files
from .model import Clip
from .progress import Progress
from .text import Tokenizer

__all__ = ["ImageEmbeddings", "embed_images", "embed_texts"]


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
    pin = device.type == "cuda" and torch.cuda.is_available()

    def encode(batch: list[torch.Tensor]) -> np.ndarray:
        x = torch.stack(batch)
        if pin:  # a non-blocking copy from pinned memory: the next batch decodes while this one is copied
            x = x.pin_memory()
        x = x.to(device=device, dtype=dtype, non_blocking=pin)
        return model.encode_image(x, normalize=normalize).float().cpu().numpy()

    return embed_files(paths, transform, encode, model.config.embed_dim, batch_size, strict, workers, progress,
                       processes)


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
