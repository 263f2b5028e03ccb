"""Image–text retrieval Recall@K, aware of several captions per image, in bounded memory.

Definitions are CLIP_benchmark's (``zeroshot_retrieval.py``), which are the CLIP papers':
- ``image_retrieval_recall@K`` (text → image): the share of captions whose own image is among the K images
  scoring highest against the caption;
- ``text_retrieval_recall@K`` (image → text): the share of images with at least one of their captions among the
  K captions scoring highest against the image.

CLIP_benchmark builds the whole captions × images score matrix; here queries and candidates are both taken in
chunks and each query keeps a running top-K, so memory is ``chunk × chunk`` scores whatever the collection size.
Ties are broken by the lower candidate index (a stable sort), so the result is deterministic and equals
``np.argsort(-scores, kind="stable")`` on the full matrix; ``torch.topk`` in CLIP_benchmark leaves tie order open.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..encoder import Encoder
from ..errors import UsageError
from ..progress import Progress
from .datasets import CaptionedImages

LOW32 = 0xFFFFFFFF


def _keys(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered like (score descending, index ascending): the float32 score's bits made monotone in the
    high half, the complement of the candidate ``index`` in the low half. Unique per candidate, so ``topk`` on
    them is exact and deterministic."""
    bits = (scores + 0.0).view(torch.int32).to(torch.int64)  # + 0.0: -0.0 → +0.0, which compare equal
    monotone = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (monotone << 32) | (LOW32 - index)


def _block_top(scores: torch.Tensor, offset: int, k: int) -> torch.Tensor:
    """The keys of each row's top ``k`` of a score block whose first column is candidate ``offset``. A float
    ``topk`` finds the set wherever the k-th score is strictly above the next (almost always); only rows with a
    tie across that boundary are ranked by key over the whole row."""
    columns = torch.arange(offset, offset + scores.shape[1], dtype=torch.int64, device=scores.device)
    if scores.shape[1] <= k:
        return _keys(scores, columns)
    values, index = scores.topk(k + 1, dim=1)
    keys = _keys(values[:, :k], index[:, :k] + offset)
    tied = (values[:, k - 1] == values[:, k]).nonzero().flatten()
    if tied.numel():
        keys[tied] = _keys(scores[tied], columns).topk(k, dim=1).values
    return keys


def top_k(queries: np.ndarray, candidates: np.ndarray, k: int, chunk: int = 2048, device: str | torch.device = "cpu",
          progress: Progress | None = None) -> np.ndarray:
    """``int64 [len(queries), min(k, len(candidates))]``: per query, the candidates with the highest dot product,
    best first, ties to the lower index; computed in ``chunk × chunk`` blocks with a running top-k."""
    if chunk < 1 or k < 1:
        raise UsageError(f"chunk and k must be >= 1, got chunk={chunk}, k={k}")
    if len(candidates) >= LOW32:
        raise UsageError(f"{len(candidates)} candidates: at most {LOW32 - 1}")
    k = min(k, len(candidates))
    out = np.zeros((len(queries), k), dtype=np.int64)
    if k == 0:
        return out
    with torch.no_grad():
        pool = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32)).to(device)
        for q0 in range(0, len(queries), chunk):
            q = torch.from_numpy(np.ascontiguousarray(queries[q0:q0 + chunk], dtype=np.float32)).to(device)
            best = _block_top(q @ pool[:chunk].T, 0, k)
            for c0 in range(chunk, len(pool), chunk):  # the running top-k: merge each block's with the best so far
                merged = torch.cat([best, _block_top(q @ pool[c0:c0 + chunk].T, c0, k)], dim=1)
                best = merged.topk(min(k, merged.shape[1]), dim=1).values
            best = best.sort(dim=1, descending=True).values
            out[q0:q0 + len(q)] = (LOW32 - (best & LOW32)).cpu().numpy()
            if progress:
                progress(len(q))
    return out


def recall_at_k(image_features: np.ndarray, text_features: np.ndarray, caption_image: Sequence[int] | np.ndarray,
                ks: Sequence[int] = (1, 5, 10), chunk: int = 2048, device: str | torch.device = "cpu",
                progress: Progress | None = None) -> dict[str, float]:
    """CLIP_benchmark's retrieval metrics from embeddings: ``caption_image[j]`` is the image of caption j.
    Images with no caption are distractors for text → image and are not image → text queries. A K above the
    number of candidates counts every candidate (recall 1)."""
    images = np.asarray(image_features, dtype=np.float32)
    texts = np.asarray(text_features, dtype=np.float32)
    owner = np.asarray(caption_image, dtype=np.int64)
    if images.ndim != 2 or texts.ndim != 2 or images.shape[1] != texts.shape[1]:
        raise UsageError(f"image features {images.shape} and text features {texts.shape} must be [N, D] and [M, D]")
    if owner.shape != (len(texts),):
        raise UsageError(f"caption_image has {owner.shape} entries for {len(texts)} captions")
    if len(images) == 0 or len(texts) == 0:
        raise UsageError(f"retrieval needs images and captions, got {len(images)} images and {len(texts)} captions")
    if owner.min() < 0 or owner.max() >= len(images):
        raise UsageError(f"caption_image must index the {len(images)} images, found {int(owner.min())}..{int(owner.max())}")
    for name, x in (("image", images), ("text", texts)):
        if not np.isfinite(x).all():
            raise UsageError(f"{name} features hold NaN or inf")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UsageError(f"recall K values must be >= 1, got {list(ks)}")
    kmax = ks[-1]

    # text → image: the rank of the caption's own image among the top kmax (kmax when absent).
    top = top_k(texts, images, kmax, chunk, device, progress)
    hit = top == owner[:, None]
    text_rank = np.where(hit.any(1), hit.argmax(1), kmax)
    # image → text: the first of the image's captions in its top kmax.
    top = top_k(images, texts, kmax, chunk, device, progress)
    hit = owner[top] == np.arange(len(images))[:, None]
    image_rank = np.where(hit.any(1), hit.argmax(1), kmax)
    queried = np.bincount(owner, minlength=len(images)) > 0
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float((text_rank < k).mean())
        metrics[f"text_retrieval_recall@{k}"] = float((image_rank[queried] < k).mean())
    return metrics


def evaluate_retrieval(encoder: Encoder, pairs: CaptionedImages, ks: Sequence[int] = (1, 5, 10), chunk: int = 2048,
                       batch_size: int = 64, workers: int = 2, progress: Progress | None = None) -> dict[str, Any]:
    """Recall@K of ``encoder`` on captioned images. Images that cannot be read are left out with their captions
    and listed under ``skipped``. ``progress`` counts images, captions, then queries (twice: both directions)."""
    embedded = encoder.encode_files(pairs.images, workers=workers, progress=progress, batch_size=batch_size)
    position = {path: i for i, path in enumerate(embedded.paths)}  # image paths are unique in CaptionedImages
    keep = np.array([pairs.images[i] in position for i in pairs.caption_image], dtype=bool)
    captions = [c for c, k in zip(pairs.captions, keep) if k]
    owner = np.array([position[pairs.images[i]] for i in pairs.caption_image[keep]], dtype=np.int64)
    if not captions:
        raise UsageError(f"{pairs.name}: none of the {len(pairs.images)} images could be read")
    texts = encoder.encode_text(captions, progress=progress)
    metrics = recall_at_k(embedded.features, texts, owner, ks, chunk, encoder.device, progress)
    return {
        "task": "retrieval",
        "model": {**encoder.ref.to_dict(), "describe": encoder.ref.describe()},
        "dataset": {"name": pairs.name, "description": pairs.description},
        "n": len(captions),
        "n_images": len(embedded.paths),
        "n_captions": len(captions),
        "skipped": [reason for _, reason in embedded.failures],
        "metrics": metrics,
    }
