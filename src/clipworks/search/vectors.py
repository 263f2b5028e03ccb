"""The FAISS side of an index: item ids → vectors, searched by inner product (cosine on normalised vectors).

It is a *cache* of the SQLite store: it holds exactly one vector per id, and since an id names a content (a
changed file gets a new id), the cache is correct whenever its id set equals the store's. ``sync`` makes it so
— adding the missing ids, dropping the extra ones — which is how an index recovers from a process killed in the
middle of ``add``: the file on disk is replaced only whole (``atomic_file``), never patched in place.

Kinds:

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)`` with ``M`` (default 32), ``ef_construction`` (200), ``ef_search`` (128).
  HNSW graphs cannot delete, so removed ids become tombstones filtered out of every search (an ``IDSelector``)
  and the graph is rebuilt from its own stored vectors once tombstones pass ``REBUILD_FRACTION`` of it.
- ``ivfpq``: ``IndexIVFPQ`` with ``nlist`` (default ~4·√n at training), ``m`` sub-quantizers (default dim/8),
  ``nbits`` (8) and ``nprobe`` (16). Product quantizers need training data, so until ``train_min`` vectors exist
  (default ``max(10000, 39·nlist)``) the index is exact (a flat one) and is trained on all vectors, once, when
  that many are there. Product-quantised scores alone rank poorly (recall@10 ≈ 0.35 on 1M clustered 512-d
  vectors), so ``Index.search_vectors`` asks for ``rerank``·k candidates (default 10, faiss's ``IndexRefine``
  k-factor) and re-scores them exactly with the vectors the store holds; ``rerank=1`` turns that off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, require
from ..fileio import atomic_file

KINDS = ("flat", "hnsw", "ivfpq")
REBUILD_FRACTION = 0.2
_DEFAULTS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 128},
    "ivfpq": {"nlist": None, "m": None, "nbits": 8, "nprobe": 16, "train_min": None, "rerank": 10},
}


def _faiss():
    return require("faiss", "search", "the search index")


def check_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The kind's options with defaults filled in; an unknown kind or option is a UsageError naming it."""
    if kind not in KINDS:
        raise UsageError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    unknown = sorted(set(options) - set(_DEFAULTS[kind]))
    if unknown:
        known = ", ".join(_DEFAULTS[kind]) or "none"
        raise UsageError(f"unknown option {unknown[0]!r} for a {kind} index (options: {known})")
    merged = {**_DEFAULTS[kind], **options}
    for key, value in merged.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UsageError(f"index option {key}={value!r}: must be a positive integer")
    return merged


class VectorIndex:
    """One FAISS index of ``kind`` over ``dim``-d float32 vectors keyed by int64 ids."""

    def __init__(self, kind: str, dim: int, options: dict[str, Any] | None = None, index: Any = None) -> None:
        self.kind = kind
        self.dim = dim
        self.options = check_options(kind, dict(options or {}))
        self.index = index if index is not None else self._empty()
        self.tombstones: set[int] = set()
        self._ids: np.ndarray | None = None  # ids() cached until the next change
        self.unsaved = 0  # vectors added or removed since the index was loaded or saved

    # -- construction ----------------------------------------------------------------------------------------
    def _empty(self) -> Any:
        faiss = _faiss()
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.options["M"], faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.options["ef_construction"]
            inner.hnsw.efSearch = self.options["ef_search"]
            return faiss.IndexIDMap2(inner)
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))  # flat, and ivfpq before training

    @property
    def trained(self) -> bool:
        """False for an ``ivfpq`` index still searching exactly because too few vectors existed to train it."""
        return self.kind != "ivfpq" or self._ivf() is not None

    def _ivf(self) -> Any:
        faiss = _faiss()
        try:
            return faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None

    def train_min(self, n: int) -> int:
        """Vectors needed before training: ``train_min`` or ``max(10000, 39·nlist)``, and never fewer than k-means
        needs (one point per IVF list and per PQ centroid)."""
        nlist = self.options["nlist"] or _default_nlist(n)
        wanted = self.options["train_min"] or max(10000, 39 * nlist)
        return max(wanted, nlist, 2 ** self.options["nbits"])

    def maybe_train(self) -> bool:
        """Turn an untrained ``ivfpq`` index into IVF-PQ once it holds ``train_min`` vectors; True if it did."""
        if self.trained or self.size < self.train_min(self.size):
            return False
        faiss = _faiss()
        ids, vectors = self._reconstruct_all()
        nlist = self.options["nlist"] or _default_nlist(len(ids))
        m = self.options["m"] or _default_m(self.dim)
        if self.dim % m:
            raise UsageError(f"ivfpq option m={m} must divide the embedding dimension {self.dim}")
        ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(self.dim), self.dim, nlist, m, self.options["nbits"],
                               faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.nprobe = self.options["nprobe"]
        ivf.add_with_ids(vectors, ids)
        self.index = ivf
        self._ids = None
        return True

    # -- contents --------------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Live vectors (tombstones not counted)."""
        return int(self.index.ntotal) - len(self.tombstones)

    def ids(self) -> np.ndarray:
        """The ids held (tombstones excluded), ascending."""
        if self._ids is None:
            self._ids = self._held_ids()
        return self._ids

    def _held_ids(self) -> np.ndarray:
        ivf = self._ivf() if self.kind == "ivfpq" else None
        if ivf is None:
            faiss = _faiss()
            held = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        else:
            held = np.concatenate([np.zeros(0, np.int64)] + list(_ivf_ids(ivf)))
        if self.tombstones:
            held = held[~np.isin(held, np.fromiter(self.tombstones, np.int64))]
        return np.sort(held)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._ids = None
        self.unsaved += len(ids)
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: Iterable[int]) -> None:
        ids = np.fromiter((int(i) for i in ids), dtype=np.int64)
        if len(ids) == 0:
            return
        self._ids = None
        self.unsaved += len(ids)
        if self.kind == "hnsw":
            self.tombstones.update(ids.tolist())
            if len(self.tombstones) > REBUILD_FRACTION * max(1, self.index.ntotal):
                self.compact()
            return
        self.index.remove_ids(_faiss().IDSelectorBatch(ids))

    def compact(self) -> None:
        """Rebuild an HNSW graph without its tombstones (from the vectors it stores, which are exact)."""
        if not self.tombstones:
            return
        ids, vectors = self._reconstruct_all()
        self.tombstones.clear()
        self._ids = None
        self.index = self._empty()
        self.add(ids, vectors)

    def _reconstruct_all(self) -> tuple[np.ndarray, np.ndarray]:
        ids = self.ids()
        if len(ids) == 0:
            return ids, np.zeros((0, self.dim), np.float32)
        return ids, self.index.reconstruct_batch(ids)

    def sync(self, want_ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]) -> int:
        """Make the held id set equal ``want_ids``: add the missing ones (vectors from ``fetch(ids)``), drop the
        extra ones. Returns how many ids changed."""
        have = self.ids()
        missing = np.setdiff1d(want_ids, have, assume_unique=True)
        extra = np.setdiff1d(have, want_ids, assume_unique=True)
        self.remove(extra)
        for start in range(0, len(missing), 65536):
            chunk = missing[start : start + 65536]
            self.add(chunk, fetch(chunk))
        return len(missing) + len(extra)

    # -- search ----------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)``, each ``[M, k']`` with ``k' = min(k, candidates)``; best first.

        ``ids`` restricts the search to those ids (an ``IDSelector``). Approximate kinds may return fewer than
        ``k'`` hits for a restricted search; ``Index.search_vectors`` tops those up exactly."""
        faiss = _faiss()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n = self.size if ids is None else len(ids)
        k = min(int(k), n)
        if k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        made: list[Any] = []  # the selectors must outlive the search call (SWIG does not own them)
        if ids is not None:
            made.append(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))
        if self.tombstones:
            dead = faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64))
            alive = faiss.IDSelectorNot(dead)
            made += [dead, alive] if ids is None else [dead, alive, faiss.IDSelectorAnd(made[0], alive)]
        scores, found = self.index.search(q, k, params=self._params(made[-1] if made else None, k))
        return scores, found

    def _params(self, selector: Any, k: int) -> Any:
        faiss = _faiss()
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.options["ef_search"], k))
        if self.kind == "ivfpq" and self.trained:
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.options["nprobe"])
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    # -- files -----------------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the whole index to ``path`` atomically (tombstones are not saved: ``sync`` re-derives them)."""
        faiss = _faiss()
        with atomic_file(path) as tmp:
            faiss.write_index(self.index, str(tmp))
        self.unsaved = 0

    @classmethod
    def load(cls, path: Path, kind: str, dim: int, options: dict[str, Any]) -> VectorIndex | None:
        """The cached index at ``path``, or None when it is missing, unreadable or not of this kind and dim
        (then the caller rebuilds it from the store)."""
        if not path.is_file():
            return None
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            return None
        if index.d != dim or _kind_of(faiss, index) not in _accepted(kind):
            return None
        if kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = options.get("ef_search") or 128
        return cls(kind, dim, options, index)


def _accepted(kind: str) -> tuple[str, ...]:
    return ("flat", "ivfpq") if kind == "ivfpq" else (kind,)


def _kind_of(faiss: Any, index: Any) -> str:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlatIP):
            return "flat"
    return "other"


def _ivf_ids(ivf: Any) -> Iterator[np.ndarray]:
    faiss = _faiss()
    lists = ivf.invlists
    for i in range(ivf.nlist):
        size = lists.list_size(i)
        if size:
            yield faiss.rev_swig_ptr(lists.get_ids(i), size).astype(np.int64).copy()


def _default_nlist(n: int) -> int:
    return max(1, min(65536, int(4 * math.sqrt(max(n, 1)))))


def _default_m(dim: int) -> int:
    """The largest divisor of ``dim`` that is at most dim/8 (8 dims per sub-quantizer, 64 bytes for 512-d)."""
    target = max(1, dim // 8)
    return max(d for d in range(1, target + 1) if dim % d == 0)
