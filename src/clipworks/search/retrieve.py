"""``search(index, query)``: one page of the best matches, with their metadata and an honest count.

Paging is by ``offset`` and ``k`` with no silent cap: the page is the exact slice ``[offset, offset + k)`` of the
ranking over all candidates (the items the filters keep), and ``Page.total`` says how many candidates there are.
Asking past the end returns what remains (possibly nothing) and ``Page.note`` says so. Ties are broken by id, so
consecutive pages concatenate to one big page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from .filters import Filters
from .query import QueryLike, describe_query, query_terms, query_vector

if TYPE_CHECKING:
    from .index import Index, Item

TARGETS = ("images", "captions")


@dataclass(frozen=True)
class Hit:
    """One result: its 1-based rank in the whole ranking, its score (cosine similarity) and the indexed item."""

    rank: int
    score: float
    item: Item
    root: Path

    @property
    def id(self) -> int:
        return self.item.id

    @property
    def path(self) -> str:
        """Relative to the indexed root, as stored."""
        return self.item.path

    @property
    def file(self) -> Path:
        """The absolute path of the file now (the root is where the index says it is)."""
        return self.root / self.item.path

    def to_dict(self) -> dict[str, Any]:
        meta = asdict(self.item) if is_dataclass(self.item) else dict(vars(self.item))
        meta["tags"] = list(meta.get("tags") or [])
        return {"rank": self.rank, "score": self.score, **meta, "file": str(self.file)}


@dataclass(frozen=True)
class Page:
    """A slice of the ranking: ``hits`` are ranks ``offset + 1 …``; ``total`` counts every candidate."""

    query: str
    target: str
    hits: list[Hit]
    offset: int
    k: int
    total: int
    filters: str = ""
    root: Path = field(default_factory=Path)

    @property
    def end(self) -> int:
        return self.offset + len(self.hits)

    @property
    def has_more(self) -> bool:
        return self.end < self.total

    @property
    def note(self) -> str | None:
        """Why the page is shorter than ``k`` (past the end of the ranking), or None."""
        if len(self.hits) == self.k:
            return None
        what = "captioned items" if self.target == "captions" else "candidates" if self.filters else "items"
        if not self.hits:
            return f"no hits: offset {self.offset} is at or past the end ({self.total} {what})"
        return (f"only {len(self.hits)} of the {self.k} hits asked for: ranks {self.offset + 1}–{self.end} "
                f"are the last of {self.total} {what}")

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "target": self.target, "filters": self.filters, "offset": self.offset,
                "k": self.k, "total": self.total, "returned": len(self.hits), "has_more": self.has_more,
                "note": self.note, "root": str(self.root), "hits": [h.to_dict() for h in self.hits]}


def _filters(filters: Filters | Mapping[str, Any] | None, root: Path) -> Filters:
    if filters is None:
        return Filters()
    if isinstance(filters, Filters):
        return filters
    if isinstance(filters, Mapping):
        return Filters.from_mapping(filters, root=root)
    raise UsageError(f"filters: expected a Filters or a mapping of field → value, got {type(filters).__name__}")


def candidate_ids(index: Index, filters: Filters) -> np.ndarray | None:
    """Sorted int64 ids the filters keep; None when there are no filters (every item, no restriction)."""
    if filters.is_empty():
        return None
    where, params = filters.sql()
    return np.sort(np.asarray(index.select_ids(where, params), dtype=np.int64))


def _top(scores: np.ndarray, ids: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``want`` first, ties by id (so pages of one ranking fit together)."""
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:want]
    return scores[order], ids[order]


def rank(index: Index, vector: np.ndarray, want: int, ids: np.ndarray | None, target: str = "images",
         ) -> tuple[np.ndarray, np.ndarray, int]:
    """The top ``want`` ``(scores, ids)`` among the candidates ``ids`` (None: all) and the candidate count.

    Images go through the index's vector search (restricted to ``ids``, exact for flat indexes and small
    candidate sets); captions are few (one per captioned item) and are ranked exactly here."""
    if target == "captions":
        caption_ids, caption_vectors = index.caption_vectors()
        if ids is not None:
            keep = np.isin(caption_ids, ids)
            caption_ids, caption_vectors = caption_ids[keep], caption_vectors[keep]
        scores, found = _top(caption_vectors @ vector, caption_ids, want)
        return scores, found, len(caption_ids)
    total = len(ids) if ids is not None else len(index)
    if min(want, total) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), total
    # Ties by id need every item tied with the page's last score (copies of a file share one vector), and the
    # vector search picks among tied items in no set order: ask for more until the score after the page drops.
    fetch = min(want + 1, total)
    while True:
        scores, found = index.search_vectors(vector, fetch, ids=ids)
        scores, found = np.asarray(scores).reshape(-1), np.asarray(found).reshape(-1)
        if fetch >= total or len(scores) < fetch or scores[-1] < scores[want - 1]:
            break
        fetch = min(2 * fetch, total)
    scores, found = _top(scores, found, want)
    return scores, found, total


def search(index: Index, query: QueryLike | np.ndarray, k: int = 10, offset: int = 0,
           filters: Filters | Mapping[str, Any] | None = None, target: str = "images") -> Page:
    """The hits ranked ``offset + 1 … offset + k`` for ``query`` among the items ``filters`` keep.

    ``query``: a query string (see ``clipworks.search.query``), an image path or PIL image, a list of
    ``(weight, text-or-image)``, or a unit ``float32 [D]`` vector. ``target="images"`` ranks the indexed images
    (text → image, image → image, mixed); ``"captions"`` ranks the items by their indexed captions' text
    embeddings (image → text: which captions describe this picture).
    """
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    if offset < 0:
        raise UsageError(f"offset must be 0 or more, got {offset}")
    if target not in TARGETS:
        raise UsageError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    root = Path(index.root)
    chosen = _filters(filters, root)
    if isinstance(query, np.ndarray):
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        if vector.shape[0] != index.ref.embed_dim:
            raise UsageError(f"query vector has {vector.shape[0]} dimensions, the index {index.ref.embed_dim}")
        description = f"<vector {vector.shape[0]}-d>"
    else:
        terms = query_terms(query)
        vector = query_vector(index.encoder, terms)
        description = describe_query(terms)
    scores, found, total = rank(index, vector, offset + k, candidate_ids(index, chosen), target)
    scores, found = scores[offset:], found[offset:]
    items = index.items(found.tolist())
    hits = [Hit(offset + i + 1, float(s), item, root) for i, (s, item) in enumerate(zip(scores, items))]
    return Page(description, target, hits, offset, k, total, chosen.describe(), root)
