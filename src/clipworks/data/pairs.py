"""The one sample type every source yields, the map-style source protocol, and the source error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image

from ..errors import ClipworksError


class DataError(ClipworksError, ValueError):
    """A data source cannot be used as given; the message names the path, column, or shard."""


@dataclass(frozen=True)
class Pair:
    """One image with its captions; the loader draws one caption per epoch."""

    image: Image.Image
    captions: tuple[str, ...]
    label: int | None = None  # class / group id for the multi-positive loss; None when unknown
    key: str = ""  # path or shard/key, for messages


class PairSource(Protocol):
    """Map-style on purpose: sample-exact resume needs random access to sample i."""

    description: str
    class_names: list[str] | None

    def __len__(self) -> int: ...

    def get(self, index: int) -> Pair:
        """The i-th pair; raises ``clipworks.image.ImageError`` for a corrupt or missing image."""
        ...


class BatchSource(PairSource, Protocol):
    """An array-backed source that hands out whole batches without a PIL round trip per image."""

    def get_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[tuple[str, ...]], torch.Tensor | None]:
        """(uint8 [B, C, H, W] or [B, H, W], captions per sample, long labels [B] or None)."""
        ...


def clean_captions(lines: Sequence[str]) -> tuple[str, ...]:
    """Stripped, non-empty, whitespace-collapsed captions: a caption never spans lines in our formats."""
    return tuple(c for c in (" ".join(line.split()) for line in lines) if c)
