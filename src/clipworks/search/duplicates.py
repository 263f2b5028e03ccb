"""Near-duplicate groups: items whose embeddings have cosine ≥ threshold, joined transitively into groups.

Pairs come from the index's own k-nearest-neighbour search, run for every item in chunks: each item asks for its
``k`` nearest neighbours, and an item whose ``k``-th neighbour is still above the threshold asks again with twice
the ``k``, so no pair is lost. Memory stays at one chunk of results; the work is one k-NN query per item, which an
approximate index (HNSW, IVF) answers in sub-linear time. With the exact (flat) index the groups are exact: the
same as comparing all pairs (``duplicate_groups`` on plain arrays, used as the reference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UsageError
from ..progress import Progress

if TYPE_CHECKING:
    from .index import Index, Item

Knn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class _Union:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        root = self.parent.setdefault(a, a)
        while self.parent[root] != root:
            root = self.parent[root]
        while a != root:  # path compression
            self.parent[a], a = root, self.parent[a]
        return root

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for a in self.parent:
            out.setdefault(self.find(a), []).append(a)
        return sorted((sorted(g) for g in out.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def check_threshold(threshold: float) -> float:
    if not -1.0 <= float(threshold) <= 1.0:
        raise UsageError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    return float(threshold)


def group_pairs(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (of two or more) of the pairs; largest first, each sorted, ties by first id."""
    union = _Union()
    for a, b in pairs:
        union.join(int(a), int(b))
    return union.groups()


def duplicate_groups(vectors: np.ndarray, threshold: float = 0.95, ids: Sequence[int] | None = None,
                     chunk: int = 4096) -> list[list[int]]:
    """Exact groups over plain unit vectors by chunked all-pairs products (the reference; O(N²) work)."""
    threshold = check_threshold(threshold)
    x = np.asarray(vectors, dtype=np.float32)
    names = np.arange(len(x)) if ids is None else np.asarray(ids, dtype=np.int64)
    pairs = []
    for start in range(0, len(x), chunk):
        sims = x[start : start + chunk] @ x.T
        rows, cols = np.nonzero(sims >= threshold)
        rows += start
        keep = rows < cols
        pairs += zip(names[rows[keep]].tolist(), names[cols[keep]].tolist())
    return group_pairs(pairs)


def knn_pairs(knn: Knn, vectors: np.ndarray, ids: np.ndarray, threshold: float, k: int = 16,
              limit: int | None = None) -> list[tuple[int, int]]:
    """Pairs ``(a, b)`` with ``a < b`` and cosine ≥ threshold, from ``knn(queries, k) -> (scores, ids)``, widening
    ``k`` for queries whose last neighbour is still above the threshold (up to ``limit``, the item count)."""
    limit = limit or len(ids)
    pairs: set[tuple[int, int]] = set()
    pending = np.arange(len(ids))
    k = max(2, min(k, limit))
    while len(pending):
        scores, found = knn(vectors[pending], k)
        scores, found = np.asarray(scores).reshape(len(pending), -1), np.asarray(found).reshape(len(pending), -1)
        hit = (scores >= threshold) & (found >= 0)
        for row, col in zip(*np.nonzero(hit)):
            a, b = int(ids[pending[row]]), int(found[row, col])
            if a != b:
                pairs.add((min(a, b), max(a, b)))
        full = hit[:, -1] if k < limit else np.zeros(len(pending), dtype=bool)
        pending, k = pending[full], min(2 * k, limit)
    return sorted(pairs)


def duplicates(index: Index, threshold: float = 0.95, k: int = 16, chunk: int = 1024,
               progress: Progress | None = None) -> list[list[Item]]:
    """Groups of near-duplicate items (cosine ≥ ``threshold`` between their image embeddings, joined
    transitively), largest first; ``progress`` is given the number of items checked."""
    threshold = check_threshold(threshold)
    all_ids = np.asarray(index.all_ids(), dtype=np.int64)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(all_ids), chunk):
        part = all_ids[start : start + chunk]
        pairs += knn_pairs(lambda q, kk: index.search_vectors(q, kk), index.vectors(part.tolist()), part,
                           threshold, k, limit=len(all_ids))
        if progress is not None:
            progress(len(part))
    groups = group_pairs(pairs)
    items = {item.id: item for item in index.items(sorted({i for g in groups for i in g}))}
    return [sorted((items[i] for i in g), key=lambda item: item.path) for g in groups]
