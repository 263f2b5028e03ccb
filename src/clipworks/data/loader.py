"""Batches from a pair source in an order that is a pure function of (seed, epoch, batch number).

That is the contract behind sample-exact resume: ``epoch(e, start_batch=k)`` yields exactly the batches
``epoch(e)`` yields from k on, with any number of workers. The order is a permutation drawn from
(seed, epoch); rank r takes the r-th slice of each global batch; the caption drawn for sample i and its
train-crop randomness are hashed from (seed, epoch, i), so they depend neither on batch-mates nor on which
process builds the batch.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.data

from ..image.decode import ImageError
from ..image.transforms import ImageTransform, splitmix64
from .pairs import DataError, PairSource

_TOKEN_CACHE_LIMIT = 10_000  # distinct captions kept tokenised; template-captioned sets have a few dozen


@dataclass
class Batch:
    images: torch.Tensor  # float32 [b, 3, S, S]
    tokens: torch.Tensor  # long [b, L]
    labels: torch.Tensor | None  # long [b]; None when the source has no labels
    indices: torch.Tensor  # long [b]: source indices, aligned with images
    captions: list[str]
    skipped: list[str]  # images dropped from this batch (corrupt/missing): key and reason. b may be 0.


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit hash of (seed, epoch): nearby seeds and epochs give unrelated streams."""
    return int(splitmix64(splitmix64([seed]) ^ np.uint64(epoch))[0])


def sample_keys(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """uint64 per sample, a hash of (seed, epoch, index): the root of every per-sample random choice."""
    return splitmix64(np.uint64(epoch_seed(seed, epoch)) ^ np.asarray(indices).astype(np.uint64))


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's sample order: ``torch.randperm`` from a generator seeded by (seed, epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


class _BatchBuilder(torch.utils.data.Dataset):
    """Builds batch b of epoch e from nothing but (e, b), so any process — main or worker — builds the same one."""

    def __init__(self, source: PairSource, transform: ImageTransform, tokenizer: Callable[[list[str]], torch.Tensor],
                 batch_size: int, seed: int, rank: int, world_size: int, drop_last: bool):
        self.source, self.transform, self.tokenizer = source, transform, tokenizer
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.global_batch = batch_size * world_size
        self.num_batches = len(source) // self.global_batch if drop_last else -(-len(source) // self.global_batch)
        # Array-backed sources skip the PIL round trip when the batched transform reproduces the model's own.
        self.fast = callable(getattr(source, "get_batch", None)) and transform.batchable
        self._order: tuple[int, torch.Tensor] | None = None
        self._tokens: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.num_batches

    def indices(self, epoch: int, batch: int) -> torch.Tensor:
        """This rank's slice of global batch ``batch`` of ``epoch``."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, permutation(len(self.source), self.seed, epoch))
        chunk = self._order[1][batch * self.global_batch:(batch + 1) * self.global_batch]
        return torch.tensor_split(chunk, self.world_size)[self.rank].clone()  # not a view pinning the whole order

    def __getitem__(self, position: tuple[int, int]) -> Batch:
        epoch, batch = position
        indices = self.indices(epoch, batch)
        keys = sample_keys(self.seed, epoch, indices.numpy())
        crop_seeds = splitmix64(keys)  # independent of the caption draw, which uses the keys themselves
        return self._fast(indices, keys, crop_seeds) if self.fast else self._per_sample(indices, keys, crop_seeds)

    def _fast(self, indices: torch.Tensor, keys: np.ndarray, crop_seeds: np.ndarray) -> Batch:
        """Array-backed sources: one tensor gather and one batched transform, no PIL round trip."""
        images, captions, labels = self.source.get_batch(indices)  # type: ignore[attr-defined]
        counts = np.fromiter(map(len, captions), dtype=np.uint64, count=len(captions))
        picked = [options[k] for options, k in zip(captions, (keys % counts).tolist())]
        pixels = self.transform.tensor_batch(images, seeds=crop_seeds)
        return Batch(pixels, self._tokenize(picked), labels, indices, picked, [])

    def _per_sample(self, indices: torch.Tensor, keys: np.ndarray, crop_seeds: np.ndarray) -> Batch:
        """Decoded-image sources: a corrupt or missing image is dropped from the batch and reported."""
        pixels, picked, labels, kept, skipped = [], [], [], [], []
        for index, key, crop_seed in zip(indices.tolist(), keys.tolist(), crop_seeds.tolist()):
            try:
                pair = self.source.get(index)
            except ImageError as e:
                skipped.append(str(e))
                continue
            picked.append(pair.captions[key % len(pair.captions)])
            pixels.append(self.transform(pair.image, rng=random.Random(crop_seed)))
            labels.append(pair.label)
            kept.append(index)
        size = self.transform.image_size
        images = torch.stack(pixels) if pixels else torch.empty(0, 3, size, size)
        has_labels = bool(labels) and all(label is not None for label in labels)
        return Batch(images, self._tokenize(picked), torch.tensor(labels) if has_labels else None,
                     torch.tensor(kept, dtype=torch.long), picked, skipped)

    def _tokenize(self, captions: list[str]) -> torch.Tensor:
        """Tokenise each distinct caption once per process; a batch then is one gather."""
        slots: dict[str, int] = {}
        order = [slots.setdefault(c, len(slots)) for c in captions]
        new = [c for c in slots if c not in self._tokens]
        if new:
            if len(self._tokens) + len(new) > _TOKEN_CACHE_LIMIT:
                self._tokens.clear()
                new = list(slots)
            self._tokens.update(zip(new, self.tokenizer(new).unbind(0)))
        if not slots:
            return self.tokenizer([])
        return torch.stack([self._tokens[c] for c in slots])[torch.tensor(order)]


class _Positions(torch.utils.data.Sampler):
    """(epoch, batch) keys for the worker pool; set before each epoch, read in the main process only."""

    def __init__(self) -> None:
        self.epoch, self.start, self.stop = 0, 0, 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, b) for b in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


class PairLoader:
    """Deterministic, resumable, rank-sharded batches of (image tensor, tokens, labels) from a PairSource.

    ``batch_size`` is per rank; the global batch is ``batch_size * world_size``. With ``workers > 0``
    whole batches are built in persistent worker processes and come back in order; ``start_method`` (``spawn``,
    ``forkserver``, ``fork``; None: the platform's default) is how they start — all but ``fork`` pickle the source,
    transform and tokenizer over to them.
    """

    def __init__(self, source: PairSource, transform: ImageTransform, tokenizer: Callable[[list[str]], torch.Tensor],
                 batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 0,
                 drop_last: bool = True, start_method: str | None = None):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or workers < 0:
            raise ValueError(f"PairLoader needs batch_size >= 1, world_size >= 1, 0 <= rank < world_size and "
                             f"workers >= 0; got batch_size={batch_size}, rank={rank}, world_size={world_size}, "
                             f"workers={workers}")
        if start_method is not None and start_method not in multiprocessing.get_all_start_methods():
            raise ValueError(f"PairLoader start_method {start_method!r} is not one of this platform's: "
                             f"{', '.join(multiprocessing.get_all_start_methods())}")
        self.source, self.workers, self.start_method = source, workers, start_method
        self._builder = _BatchBuilder(source, transform, tokenizer, batch_size, seed, rank, world_size, drop_last)
        if len(self) == 0:
            raise DataError(f"{source.description}: {len(source)} samples do not fill one global batch of "
                            f"{batch_size * world_size}; lower the batch size or keep the partial batch (drop_last=False)")
        self.skipped_total = 0
        self._positions = _Positions()
        self._pool: torch.utils.data.DataLoader | None = None

    def __len__(self) -> int:
        return self._builder.num_batches

    def indices(self, epoch: int, batch: int) -> torch.Tensor:
        """Source indices this rank reads for ``batch`` of ``epoch`` (before any corrupt image is dropped)."""
        return self._builder.indices(epoch, batch)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Batches ``start_batch ..`` of ``epoch``; the same ones, bit for bit, whatever ``start_batch`` and ``workers``."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch {start_batch} is outside 0..{len(self)} (batches per epoch)")
        if self.workers == 0:
            batches: Iterator[Batch] = (self._builder[(epoch, b)] for b in range(start_batch, len(self)))
        else:
            self._positions.epoch, self._positions.start, self._positions.stop = epoch, start_batch, len(self)
            batches = iter(self._worker_pool())
        return self._count(batches)

    def _count(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.skipped_total += len(batch.skipped)
            yield batch

    def _worker_pool(self) -> torch.utils.data.DataLoader:
        if self._pool is None:
            self._pool = torch.utils.data.DataLoader(
                self._builder, batch_size=None, sampler=self._positions, num_workers=self.workers,
                persistent_workers=True, prefetch_factor=4, multiprocessing_context=self.start_method)
        return self._pool
