"""The index's source of truth: one SQLite file (WAL mode) holding the metadata *and* the vectors.

Vectors live in the same database as the rows they belong to and are written in the same transaction, so a
process killed at any instant leaves rows and vectors that agree; the FAISS file beside it is only a cache
rebuilt or patched from here (see ``vectors.py``).

Schema (``FORMAT_VERSION`` 1) — the query side may run SQL on ``items`` and ``tags`` (``Store.select_ids``):

``meta(key TEXT PRIMARY KEY, value TEXT)``
    format, format_version, model (ModelRef JSON), model_config (JSON), dim, kind, options (JSON),
    root (relative to the index folder when possible), root_abs, created, updated (unix seconds), generation,
    excluded (patterns ``remove`` keeps out of later ``add``s).
``items`` — one row per indexed image file
    ``id`` INTEGER PRIMARY KEY AUTOINCREMENT (never reused: a FAISS id),
    ``path`` TEXT UNIQUE (relative to the root, '/'-separated), ``size`` INTEGER (bytes),
    ``mtime`` REAL (unix seconds), ``mtime_ns`` INTEGER, ``sha256`` TEXT (of the file's bytes),
    ``caption`` TEXT NULL, ``sidecar_mtime_ns`` INTEGER NULL (of the caption sidecar last read),
    ``added`` REAL (unix seconds when indexed).
``tags(item_id INTEGER → items.id, tag TEXT)``, primary key (item_id, tag), indexed by tag.
``vectors(id INTEGER PRIMARY KEY → items.id, vector BLOB)`` — float32 little-endian, ``dim`` values.
``caption_vectors(id INTEGER PRIMARY KEY → items.id, vector BLOB)`` — the embedded caption, when there is one.

An item's id names its *content*: a file whose bytes change gets a new id (so the FAISS cache is a function of
the id set alone), a moved or renamed file keeps its id and vector.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClipworksError

DB_NAME = "index.sqlite"
FORMAT = "clipworks-index"
FORMAT_VERSION = 1
_CHUNK = 500  # ids per "IN (…)" query, under SQLite's parameter limit

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    caption TEXT,
    sidecar_mtime_ns INTEGER,
    added REAL NOT NULL
);
CREATE INDEX items_sha256 ON items(sha256);
CREATE TABLE tags (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (item_id, tag)
) WITHOUT ROWID;
CREATE INDEX tags_tag ON tags(tag);
CREATE TABLE vectors (id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE, vector BLOB NOT NULL);
CREATE TABLE caption_vectors (id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE, vector BLOB NOT NULL);
"""

ITEM_COLUMNS = ("id", "path", "size", "mtime", "sha256", "caption", "added")


class IndexFormatError(ClipworksError, ValueError):
    """A folder that is not a clipworks index, or one written by a newer clipworks."""


@dataclass
class Item:
    """One indexed image. ``path`` is relative to the index root, '/'-separated; ``mtime`` in unix seconds."""

    id: int
    path: str
    size: int
    mtime: float
    sha256: str
    caption: str | None
    tags: list[str]


@dataclass
class Row:
    """What change detection needs of an indexed file."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    sidecar_mtime_ns: int | None


@dataclass
class NewItem:
    """A row to insert: the file's stat and hash, its sidecar metadata, and its vectors."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    vector: np.ndarray
    caption: str | None = None
    tags: Sequence[str] = ()
    caption_vector: np.ndarray | None = None
    sidecar_mtime_ns: int | None = None


def _blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


class Store:
    """SQLite access for one index. Writes happen inside ``with store.transaction():`` (one commit each)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA busy_timeout = 10000")
        if readonly:
            self.conn.execute("PRAGMA query_only = ON")

    @classmethod
    def create(cls, path: Path, meta: dict[str, Any]) -> Store:
        store = cls(path)
        store.conn.execute("PRAGMA journal_mode = WAL")
        now = time.time()
        with store.transaction():
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    store.conn.execute(statement)
            store.set_meta(format=FORMAT, format_version=FORMAT_VERSION, created=now, updated=now, generation=0,
                           **meta)
        return store

    @classmethod
    def open(cls, index_dir: Path, readonly: bool = False) -> tuple[Store, dict[str, Any]]:
        """The store of the index at ``index_dir`` and its meta, after checking it is one this code can read.
        Nothing is written before the checks pass."""
        path = index_dir / DB_NAME
        if not path.is_file():
            raise IndexFormatError(f"{index_dir} is not a clipworks index (it has no {DB_NAME})")
        store = cls(path, readonly=readonly)
        try:
            meta = store.meta()
        except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
            store.close()
            raise IndexFormatError(f"{path} is not a clipworks index database ({e})") from e
        if meta.get("format") != FORMAT:
            store.close()
            raise IndexFormatError(f"{index_dir} is not a clipworks index ({DB_NAME} has no '{FORMAT}' record)")
        version = meta.get("format_version")
        if not isinstance(version, int) or version < 1:
            store.close()
            raise IndexFormatError(f"{index_dir}: index format version {version!r} is not a valid version")
        if version > FORMAT_VERSION:
            store.close()
            raise IndexFormatError(f"{index_dir} was written by a newer clipworks (index format {version}; this "
                                   f"version reads up to {FORMAT_VERSION}): upgrade clipworks to use it")
        return store, meta

    def close(self) -> None:
        self.conn.close()

    # -- meta ------------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                              [(k, json.dumps(v)) for k, v in values.items()])

    def bump(self) -> None:
        """Mark a change (inside a transaction): a new generation and ``updated`` time."""
        self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self.set_meta(updated=time.time())

    # -- transactions ----------------------------------------------------------------------------------------
    class _Tx:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def __enter__(self) -> None:
            self.conn.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type, exc, tb) -> None:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def transaction(self) -> Store._Tx:
        return Store._Tx(self.conn)

    # -- reads -----------------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def all_ids(self) -> np.ndarray:
        rows = self.conn.execute("SELECT id FROM items ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def select_ids(self, where_sql: str = "1", params: Sequence[Any] = ()) -> np.ndarray:
        """Ids of ``items`` rows matching ``WHERE <where_sql>`` (columns above; tags via
        ``id IN (SELECT item_id FROM tags WHERE tag = ?)``), ascending."""
        rows = self.conn.execute(f"SELECT id FROM items WHERE {where_sql} ORDER BY id", tuple(params)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def rows_under(self, prefix: str) -> dict[str, Row]:
        """Change-detection rows for paths under folder ``prefix`` ('' for all), by path."""
        sql = "SELECT id, path, size, mtime_ns, sha256, sidecar_mtime_ns FROM items"
        if prefix:
            like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
            cur = self.conn.execute(sql + " WHERE path LIKE ? ESCAPE '\\'", (like,))
        else:
            cur = self.conn.execute(sql)
        return {r[1]: Row(*r) for r in cur}

    def row(self, path: str) -> Row | None:
        r = self.conn.execute("SELECT id, path, size, mtime_ns, sha256, sidecar_mtime_ns FROM items WHERE path = ?",
                              (path,)).fetchone()
        return Row(*r) if r else None

    def ids_with_sha(self, sha256: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT id FROM items WHERE sha256 = ? ORDER BY id", (sha256,))]

    def paths_matching(self, pattern: str) -> dict[str, int]:
        """``path → id`` for the paths ``scan.matches(path, pattern)``: equal, under it as a folder, or a glob."""
        from .scan import matches

        if any(c in pattern for c in "*?["):
            rows = self.conn.execute("SELECT path, id FROM items")
            return {path: item_id for path, item_id in rows if matches(path, pattern)}
        out = dict(self.conn.execute("SELECT path, id FROM items WHERE path = ?", (pattern,)))
        prefix = pattern.rstrip("/")
        if prefix:
            out.update({path: row.id for path, row in self.rows_under(prefix).items()})
        return out

    def items(self, ids: Sequence[int]) -> list[Item]:
        """Items in the order of ``ids``; an unknown id raises KeyError naming it."""
        ids = [int(i) for i in ids]
        found: dict[int, Item] = {}
        for chunk in _chunks(sorted(set(ids))):
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(f"SELECT id, path, size, mtime, sha256, caption FROM items WHERE id IN ({marks})",
                                       chunk):
                found[r[0]] = Item(r[0], r[1], r[2], r[3], r[4], r[5], [])
            for item_id, tag in self.conn.execute(
                    f"SELECT item_id, tag FROM tags WHERE item_id IN ({marks}) ORDER BY item_id, tag", chunk):
                found[item_id].tags.append(tag)
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"no item with id {missing[0]} in the index")
        return [found[i] for i in ids]

    def vectors(self, ids: Sequence[int], dim: int, table: str = "vectors") -> np.ndarray:
        """float32 ``[len(ids), dim]`` in the order of ``ids``; an id without a vector raises KeyError."""
        ids = [int(i) for i in ids]
        out = np.empty((len(ids), dim), dtype=np.float32)
        where = {}
        for pos, i in enumerate(ids):
            where.setdefault(i, []).append(pos)
        seen = 0
        for chunk in _chunks(sorted(where)):
            marks = ",".join("?" * len(chunk))
            for i, blob in self.conn.execute(f"SELECT id, vector FROM {table} WHERE id IN ({marks})", chunk):
                out[where[i]] = np.frombuffer(blob, dtype="<f4")
                seen += 1
        if seen != len(where):
            missing = sorted(set(where) - set(self._ids_in(table, list(where))))
            raise KeyError(f"no vector for id {missing[0]} in the index")
        return out

    def _ids_in(self, table: str, ids: list[int]) -> list[int]:
        got: list[int] = []
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            got += [r[0] for r in self.conn.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk)]
        return got

    def iter_vectors(self, table: str = "vectors", batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All ``(ids, vectors)`` of a table in id order, in batches (bounded memory for big indexes)."""
        last = -1
        while True:
            rows = self.conn.execute(f"SELECT id, vector FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
                                     (last, batch)).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
            yield ids, vecs.astype(np.float32, copy=False)
            last = int(ids[-1])

    def caption_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM caption_vectors").fetchone()[0]

    # -- writes (call inside a transaction) ------------------------------------------------------------------
    def insert(self, item: NewItem) -> int:
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO items(path, size, mtime, mtime_ns, sha256, caption, sidecar_mtime_ns, added) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (item.path, item.size, item.mtime_ns / 1e9, item.mtime_ns, item.sha256, item.caption,
             item.sidecar_mtime_ns, now))
        item_id = int(cur.lastrowid)  # type: ignore[arg-type]
        self.conn.execute("INSERT INTO vectors(id, vector) VALUES (?, ?)", (item_id, _blob(item.vector)))
        self._write_tags(item_id, item.tags)
        if item.caption_vector is not None:
            self.conn.execute("INSERT INTO caption_vectors(id, vector) VALUES (?, ?)",
                              (item_id, _blob(item.caption_vector)))
        return item_id

    def delete(self, ids: Iterable[int]) -> None:
        self.conn.executemany("DELETE FROM items WHERE id = ?", [(int(i),) for i in ids])

    def update_file(self, item_id: int, path: str, size: int, mtime_ns: int) -> None:
        """A file moved or touched with the same bytes: new path/stat, same id and vector."""
        self.conn.execute("UPDATE items SET path = ?, size = ?, mtime = ?, mtime_ns = ? WHERE id = ?",
                          (path, size, mtime_ns / 1e9, mtime_ns, item_id))

    def set_caption(self, item_id: int, caption: str | None, vector: np.ndarray | None) -> None:
        self.conn.execute("UPDATE items SET caption = ? WHERE id = ?", (caption, item_id))
        self.conn.execute("DELETE FROM caption_vectors WHERE id = ?", (item_id,))
        if vector is not None:
            self.conn.execute("INSERT INTO caption_vectors(id, vector) VALUES (?, ?)", (item_id, _blob(vector)))

    def set_tags(self, item_id: int, tags: Sequence[str]) -> None:
        self.conn.execute("DELETE FROM tags WHERE item_id = ?", (item_id,))
        self._write_tags(item_id, tags)

    def set_sidecar_mtime(self, item_id: int, mtime_ns: int | None) -> None:
        self.conn.execute("UPDATE items SET sidecar_mtime_ns = ? WHERE id = ?", (mtime_ns, item_id))

    def _write_tags(self, item_id: int, tags: Sequence[str]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO tags(item_id, tag) VALUES (?, ?)",
                              [(item_id, t) for t in tags])

    def metadata_of(self, item_id: int) -> tuple[str | None, list[str], np.ndarray | None, int | None]:
        """(caption, tags, caption vector, sidecar mtime) of a row, to carry over when its content changes."""
        caption, side = self.conn.execute("SELECT caption, sidecar_mtime_ns FROM items WHERE id = ?",
                                          (item_id,)).fetchone()
        tags = [r[0] for r in self.conn.execute("SELECT tag FROM tags WHERE item_id = ? ORDER BY tag", (item_id,))]
        blob = self.conn.execute("SELECT vector FROM caption_vectors WHERE id = ?", (item_id,)).fetchone()
        return caption, tags, (np.frombuffer(blob[0], dtype="<f4").copy() if blob else None), side


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
