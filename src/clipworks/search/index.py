"""A persistent image search index: a folder of images embedded once, kept in step with the folder by ``add``.

An index folder holds ``index.sqlite`` (metadata and vectors, the source of truth, see ``store.py``) and
``vectors.faiss`` (the FAISS index, a cache of it, see ``vectors.py``). One index, one model: it records the
``ModelRef`` and config of the encoder that made its vectors and refuses another one, naming both.

Crash safety: ``add`` commits rows and their vectors together in SQLite transactions of ``commit_every`` files;
the FAISS file is rewritten whole (atomic rename) at the end, or left a few changes behind (``CACHE_SLACK``).
A process killed at any point leaves a database whose rows and vectors agree; ``open`` brings the FAISS cache
to the database's id set (adds the missing ids' vectors from SQLite, drops the extra ones), and the next ``add``
finds the files not yet committed as new (or changed) and embeds them.

Portable: paths are stored relative to the root, and the root relative to the index folder, so moving both
together (or the index folder alone, when the root stays put) keeps the index working.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ..errors import BusyError, MissingFileError, UsageError
from ..fileio import atomic_dir
from ..modelref import ModelRef
from ..progress import Progress
from .scan import clean_tags, hash_files
from .store import DB_NAME, FORMAT, Item, NewItem, Store
from .sync import AddReport, Sync
from .vectors import VectorIndex, check_options

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

CACHE_NAME = "vectors.faiss"
LOCK_NAME = ".lock"
CACHE_SLACK = 256  # changes the FAISS file may lag the database by (per thousand items beyond 256k)
EXACT_LIMIT = 65536  # restricted searches over at most this many candidates are exact, whatever the kind


class Index:
    """Open with ``Index.create(...)`` or ``Index.open(...)``; use as a context manager or ``close()``."""

    def __init__(self, path: Path, store: Store, meta: dict[str, Any], encoder: Encoder | None, writable: bool,
                 device: str, lock: Any, batch_size: int = 64) -> None:
        self.path = path
        self._store = store
        self._meta = meta
        self.ref = ModelRef.from_dict(meta["model"], where=f"{path / DB_NAME} model record")
        self.dim = int(meta["dim"])
        self.kind = str(meta["kind"])
        self.options = dict(meta["options"])
        self.root = _resolve_root(path, meta)
        self.writable = writable
        self._device = device
        self._batch_size = batch_size
        self._lock = lock
        self._encoder: Encoder | None = None
        self._captions: tuple[int, np.ndarray, np.ndarray] | None = None
        if encoder is not None:
            self.check_encoder(encoder)
            self._encoder = encoder
        self._vectors = self._load_vectors()
        if writable:
            self._record_root()

    # -- lifecycle -------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, index_dir: str | Path, root: str | Path, encoder: Encoder, kind: str = "flat",
               **options: Any) -> Index:
        """A new, empty index of ``root`` at ``index_dir`` (then ``add()`` fills it). Refuses an existing
        index or a non-empty folder, and a model with random weights."""
        index_dir, root = Path(index_dir), Path(root)
        if not root.is_dir():
            raise MissingFileError(f"folder to index {root} does not exist or is not a folder")
        if encoder.ref.is_random:
            raise UsageError(f"model {encoder.ref.describe()}: its vectors mean nothing and "
                             f"cannot be reproduced: give --pretrained TAG or a trained checkpoint")
        if (index_dir / DB_NAME).exists():
            raise UsageError(f"{index_dir} is already a clipworks index; add files to it with "
                             f"`clipworks index add {index_dir}`")
        if index_dir.exists() and (not index_dir.is_dir() or any(index_dir.iterdir())):
            raise UsageError(f"{index_dir} exists and is not an empty folder or an index; refusing to write into it")
        options = check_options(kind, options)
        if kind == "ivfpq" and options["m"] and encoder.embed_dim % options["m"]:  # found now, not at training time
            raise UsageError(f"ivfpq option m={options['m']} must divide the embedding dimension {encoder.embed_dim}")
        absolute = index_dir.absolute()
        meta = {"model": encoder.ref.to_dict(), "model_config": encoder.model_config,
                "dim": encoder.embed_dim, "kind": kind, "options": options,
                "root": _relative_root(root, absolute), "root_abs": str(root.resolve())}
        with atomic_dir(index_dir) as tmp:
            Store.create(tmp / DB_NAME, meta).close()
        return cls.open(index_dir, encoder=encoder, writable=True)

    @classmethod
    def open(cls, index_dir: str | Path, encoder: Encoder | None = None, writable: bool = False,
             device: str = "cpu", batch_size: int = 64) -> Index:
        """Open an index; ``encoder`` (optional) must be the recorded model, else it is loaded when needed (on
        ``device``, embedding ``batch_size`` images per call)."""
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise MissingFileError(f"index {index_dir} does not exist")
        if writable:  # check it is an index before the lock file is written into it (it may be a photo folder)
            Store.open(index_dir, readonly=True)[0].close()
        lock = _lock(index_dir) if writable else None
        try:
            store, meta = Store.open(index_dir, readonly=not writable)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        try:
            return cls(index_dir, store, meta, encoder, writable, device, lock, batch_size)
        except BaseException:
            store.close()
            if lock is not None:
                lock.close()
            raise

    def close(self) -> None:
        self._store.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._store.count()

    # -- the model -------------------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        """The recorded model, loaded on first use (queries and ``add`` need it; ``vectors``/``items`` do not)."""
        if self._encoder is None:
            for name in (self.ref.model, self.ref.pretrained):
                if name and os.path.isabs(name) and not Path(name).exists():
                    raise MissingFileError(f"the index's model checkpoint {name} is not there any more; open the "
                                           f"index with that model given explicitly (--model/--pretrained)")
            from ..encoding import torch_encoder

            encoder = torch_encoder().load(self.ref.model, self.ref.pretrained, device=self._device,
                                   batch_size=self._batch_size)
            self.check_encoder(encoder)
            self._encoder = encoder
        return self._encoder

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse an encoder whose weights are not the ones that made this index's vectors, naming both."""
        if not encoder.ref.same_weights(self.ref):
            raise UsageError(f"index {self.path} was built with {self.ref.describe()}; the model given is "
                             f"{encoder.ref.describe()} — its vectors cannot be compared with the index's")

    # -- queries ---------------------------------------------------------------------------------------------
    @property
    def db(self):
        """The SQLite connection, for read queries on the tables documented in ``search/store.py``."""
        return self._store.conn

    def select_ids(self, where_sql: str = "1", params: Sequence[Any] = ()) -> np.ndarray:
        """Ids of ``items`` rows matching ``WHERE <where_sql>``, ascending (see ``store.py`` for the columns)."""
        return self._store.select_ids(where_sql, params)

    def all_ids(self) -> np.ndarray:
        return self._store.all_ids()

    def items(self, ids: Sequence[int] | np.ndarray) -> list[Item]:
        return self._store.items([int(i) for i in ids])

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored (exact) image vectors of ``ids``, float32 ``[N, dim]`` in that order."""
        return self._store.vectors([int(i) for i in ids], self.dim)

    def caption_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, float32 [N, dim])`` of the embedded captions of indexed items, for image → text search."""
        generation = self._store.meta().get("generation", 0)
        if self._captions is None or self._captions[0] != generation:
            parts = list(self._store.iter_vectors("caption_vectors"))
            ids = np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in parts])
            vecs = np.concatenate([np.zeros((0, self.dim), np.float32)] + [p[1] for p in parts])
            self._captions = (generation, ids, vecs)
        return self._captions[1], self._captions[2]

    def search_vectors(self, queries: np.ndarray, k: int, ids: np.ndarray | None = None,
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items by inner product: ``(scores, ids)``, ``[k']`` for one query ``[dim]`` or ``[M, k']``
        for ``[M, dim]``, best first, ``k' = min(k, candidates)`` (no silent cap). ``ids`` restricts the search
        to those items. Exact for ``flat``, and for any kind when ``ids`` has at most ``EXACT_LIMIT`` items."""
        q = np.asarray(queries, dtype=np.float32)
        single = q.ndim == 1
        q = np.atleast_2d(q)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise UsageError(f"query vectors of shape {tuple(np.shape(queries))} do not fit this index of "
                             f"{self.dim}-d vectors ({self.ref.describe()})")
        if k < 1:
            raise UsageError(f"k must be at least 1, not {k}")
        cand = None if ids is None else np.intersect1d(np.asarray(ids, dtype=np.int64), self._vectors.ids())
        kk = min(k, self._vectors.size if cand is None else len(cand))
        if kk == 0:
            scores, found = np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        elif self._vectors.kind != "flat" and self._vectors.trained and cand is not None and len(cand) <= EXACT_LIMIT:
            scores, found = self._exact(q, cand, kk)
        elif self._vectors.kind == "ivfpq" and self._vectors.trained and self._vectors.options["rerank"] > 1:
            scores, found = self._reranked(q, kk, cand)
        else:
            scores, found = self._vectors.search(q, kk, cand)
            if (found < 0).any():  # an approximate search that could not reach k' candidates: no silent cap
                scores, found = self._exact(q, self._vectors.ids() if cand is None else cand, kk)
        return (scores[0], found[0]) if single else (scores, found)

    def tune(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Query-time speed/recall knobs of the approximate kinds (``hnsw``: ef_search, ``ivfpq``: nprobe), for
        this open index only; the recorded options stay the defaults."""
        for name, value, kind in (("ef_search", ef_search, "hnsw"), ("nprobe", nprobe, "ivfpq")):
            if value is None:
                continue
            if self.kind != kind:
                raise UsageError(f"{name} tunes a {kind} index; {self.path} is a {self.kind} index")
            if value < 1:
                raise UsageError(f"{name} must be a positive integer, not {value}")
            self._vectors.options[name] = int(value)

    def _reranked(self, q: np.ndarray, k: int, cand: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ's ``rerank``·k best by their quantised scores, re-scored exactly from the stored vectors."""
        wide = k * self._vectors.options["rerank"]
        _, shortlist = self._vectors.search(q, wide, cand)
        rows = []
        for i, ids in enumerate(shortlist):
            ids = ids[ids >= 0]
            if len(ids) < k:  # the probed lists held too few candidates: no silent cap
                ids = self._vectors.ids() if cand is None else cand
            rows.append(self._exact(q[i : i + 1], ids, k))
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

    def _exact(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores_all = q @ self.vectors(cand).T
        order = np.argsort(-scores_all, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores_all, order, axis=1).astype(np.float32), cand[order]

    # -- information -----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        meta = self._store.meta()
        db_bytes = sum(p.stat().st_size for p in self.path.glob(DB_NAME + "*") if p.is_file())
        cache = self.path / CACHE_NAME
        cache_bytes = cache.stat().st_size if cache.is_file() else 0
        out = {
            "path": str(self.path), "root": str(self.root), "model": self.ref.describe(),
            "model_ref": self.ref.to_dict(), "dim": self.dim, "kind": self.kind, "options": self.options,
            "count": len(self), "captions": self._store.caption_count(), "excluded": self.excluded, "format": FORMAT,
            "format_version": meta["format_version"], "created": _iso(meta["created"]), "updated": _iso(meta["updated"]),
            "sizes": {"database_bytes": db_bytes, "faiss_bytes": cache_bytes, "total_bytes": db_bytes + cache_bytes},
        }
        if self.kind == "ivfpq":
            out["trained"] = self._vectors.trained
        if self.kind == "hnsw":
            out["tombstones"] = len(self._vectors.tombstones)
        return out

    # -- writes ----------------------------------------------------------------------------------------------
    def add(self, directory: str | Path | None = None, progress: Progress | None = None, *,
            on_total: Callable[[int], None] | None = None, workers: int = 2, commit_every: int = 512) -> AddReport:
        """Bring the index in step with the files under ``directory`` (default: the whole root): embed new and
        changed images, reuse the vectors of moved or copied ones by content hash, drop the gone ones.

        ``progress`` advances once per new or changed file; ``on_total`` is told how many there are first.
        Unreadable files are skipped and listed in ``failures``; rows are committed every ``commit_every``."""
        self._check_writable("add")
        if commit_every < 1:
            raise UsageError(f"commit_every must be at least 1, not {commit_every}")
        start = time.perf_counter()
        root = self._existing_root()
        folder = root if directory is None else self._inside_root(Path(directory))
        sync = Sync(self._store, self._vectors, lambda: self.encoder, self.dim)
        report = sync.run(root, folder, self.path, self.excluded, progress, on_total, workers, commit_every)
        self._save_vectors()
        report.seconds = time.perf_counter() - start
        return report

    def remove(self, path_or_glob: str | Path, exclude: bool = True) -> int:
        """Remove items by path, folder or glob (relative to the root, or absolute inside it); how many went.

        With ``exclude`` (the default) the pattern is also recorded so that later ``add``s do not index those
        files again while they are still in the folder; ``include(pattern)`` lifts it."""
        self._check_writable("remove")
        pattern = self._relative_pattern(path_or_glob)
        ids = sorted(set(self._store.paths_matching(pattern).values()))
        keep_out = exclude and bool(ids) and pattern not in self.excluded
        if ids or keep_out:
            with self._store.transaction():
                self._store.delete(ids)
                if keep_out:
                    self._store.set_meta(excluded=[*self.excluded, pattern])
                self._store.bump()
            self._vectors.remove(ids)
            self._save_vectors()
        return len(ids)

    @property
    def excluded(self) -> list[str]:
        """Patterns removed with ``remove`` that ``add`` skips."""
        return list(self._store.meta().get("excluded", []))

    def include(self, pattern: str | Path) -> bool:
        """Lift an exclusion ``remove`` recorded, so the next ``add`` indexes those files again; False if there
        was none."""
        self._check_writable("change exclusions of")
        pattern = self._relative_pattern(pattern)
        if pattern not in self.excluded:
            return False
        with self._store.transaction():
            self._store.set_meta(excluded=[p for p in self.excluded if p != pattern])
            self._store.bump()
        return True

    def set_caption(self, path: str | Path, caption: str | None) -> None:
        """Set (or clear) an item's caption and embed it; it stays until the item's sidecar file changes."""
        self._check_writable("set a caption in")
        item_id = self._id_of(path)
        caption = caption.strip() if caption and caption.strip() else None
        vector = self.encoder.encode_text([caption])[0] if caption else None
        with self._store.transaction():
            self._store.set_caption(item_id, caption, vector)
            self._store.bump()

    def set_tags(self, path: str | Path, tags: Sequence[str]) -> None:
        """Replace an item's tags; they stay until the item's sidecar file changes."""
        self._check_writable("set tags in")
        if isinstance(tags, str):
            raise UsageError("set_tags takes a list of tags, not one string")
        item_id = self._id_of(path)
        with self._store.transaction():
            self._store.set_tags(item_id, clean_tags(tags))
            self._store.bump()

    def add_embeddings(self, paths: Sequence[str | Path], vectors: np.ndarray) -> list[int]:
        """Index files under the root with vectors computed elsewhere by this index's model (``clipworks embed``),
        without embedding them again; their stat and hash are read now. Returns the new ids."""
        self._check_writable("add to")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(paths), self.dim):
            raise UsageError(f"add_embeddings: vectors of shape {vectors.shape} for {len(paths)} paths; this index "
                             f"holds {self.dim}-d vectors")
        files = [self.root / self._relative_file(p) for p in paths]
        hashes = hash_files(files)
        ids: list[int] = []
        with self._store.transaction():
            for f, sha, v in zip(files, hashes, vectors):
                if isinstance(sha, OSError):
                    raise MissingFileError(f"{f}: cannot read: {sha.strerror or sha}")
                st = f.stat()
                old = self._store.row(f.relative_to(self.root).as_posix())
                if old is not None:
                    self._store.delete([old.id])
                    self._vectors.remove([old.id])
                ids.append(self._store.insert(NewItem(f.relative_to(self.root).as_posix(), st.st_size,
                                                      st.st_mtime_ns, sha, v)))
            self._store.bump()
        self._vectors.add(np.array(ids, np.int64), vectors)
        self._save_vectors()
        return ids

    # -- internals -------------------------------------------------------------------------------------------
    def _check_writable(self, what: str) -> None:
        if not self.writable:
            raise UsageError(f"index {self.path} was opened read-only; open it with writable=True to {what} it")

    def _record_root(self) -> None:
        """After a move, record where the root is now (both ways of finding it), so the next move works too."""
        if not self.root.is_dir():
            return
        now = {"root": _relative_root(self.root, self.path.absolute()), "root_abs": str(self.root.resolve())}
        if any(self._meta.get(k) != v for k, v in now.items()):
            with self._store.transaction():
                self._store.set_meta(**now)
            self._meta.update(now)

    def _existing_root(self) -> Path:
        if not self.root.is_dir():
            raise MissingFileError(f"the indexed folder {self.root} is not there (recorded as "
                                   f"{self._meta['root']!r} relative to {self.path}, or {self._meta['root_abs']})")
        return self.root

    def _inside_root(self, folder: Path) -> Path:
        if not folder.is_dir():
            raise MissingFileError(f"folder {folder} does not exist")
        resolved = folder.resolve()
        if resolved != self.root.resolve() and self.root.resolve() not in resolved.parents:
            raise UsageError(f"{folder} is not inside the indexed folder {self.root}; an index covers one folder")
        return self.root / resolved.relative_to(self.root.resolve())

    def _relative_pattern(self, path: str | Path) -> str:
        p = Path(path)
        if p.is_absolute():
            for base in (self.root, self.root.resolve()):
                try:
                    return p.relative_to(base).as_posix()
                except ValueError:
                    pass
            raise UsageError(f"{p} is not inside the indexed folder {self.root}")
        return p.as_posix()

    def _relative_file(self, path: str | Path) -> str:
        """A file's path relative to the root, '..' resolved; one outside the root is refused (an item's path is
        always under it)."""
        rel = posixpath.normpath(self._relative_pattern(path))
        if rel == "." or rel == ".." or rel.startswith("../"):
            raise UsageError(f"{path} is not a file inside the indexed folder {self.root}")
        return rel

    def _id_of(self, path: str | Path) -> int:
        rel = self._relative_pattern(path)
        row = self._store.row(rel)
        if row is None:
            raise MissingFileError(f"{rel} is not in the index {self.path}")
        return row.id

    def _load_vectors(self) -> VectorIndex:
        cache = self.path / CACHE_NAME
        if self.writable:  # a process killed while writing the cache leaves its temp file behind
            for stale in self.path.glob(f".{CACHE_NAME}.tmp-*"):
                stale.unlink(missing_ok=True)
        vectors = VectorIndex.load(cache, self.kind, self.dim, self.options)
        if vectors is None:
            vectors = VectorIndex(self.kind, self.dim, self.options)
            cache.unlink(missing_ok=True)  # unreadable or of another kind: rebuilt below, written when writable
        vectors.sync(self._store.all_ids(), lambda ids: self.vectors(ids))
        if self.writable:
            self._save_vectors(vectors)
        return vectors

    def _save_vectors(self, vectors: VectorIndex | None = None) -> None:
        """Write the FAISS cache when it is missing, was just trained, or lags the database by more than a few
        changes (``open`` patches those from SQLite, which is cheaper than rewriting a big index each time)."""
        vectors = vectors or self._vectors
        cache = self.path / CACHE_NAME
        slack = max(CACHE_SLACK, vectors.size // 1000)
        if vectors.maybe_train() or not cache.is_file() or vectors.unsaved > slack:
            vectors.save(cache)

def _lock(index_dir: Path) -> Any:
    """An exclusive lock for one writer at a time (released by the OS if the process dies)."""
    handle = open(index_dir / LOCK_NAME, "a+")  # noqa: SIM115 (held open for the index's lifetime)
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no fcntl (Windows): SQLite's own locking still keeps the database consistent
        pass
    except BlockingIOError:
        handle.close()
        raise BusyError(f"another process is writing to the index {index_dir}; try again when it is done") from None
    return handle


def _relative_root(root: Path, index_dir: Path) -> str:
    try:
        return Path(os.path.relpath(root.resolve(), index_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): only an absolute path can name it
        return str(root.resolve())


def _resolve_root(index_dir: Path, meta: dict[str, Any]) -> Path:
    """The root relative to the index folder (they moved together), else where it was (the index moved alone)."""
    relative = Path(os.path.normpath(index_dir.absolute() / meta["root"]))
    if relative.is_dir() or not Path(meta["root_abs"]).is_dir():
        return relative
    return Path(meta["root_abs"])


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")
