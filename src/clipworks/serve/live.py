"""An index that answers searches while it is being updated: readers see whole snapshots, never a half-written one.

``Index.add`` commits in chunks and patches its in-memory FAISS index as it goes, so a search on the *writing*
``Index`` could see part of an add (and shares its SQLite connection mid-transaction). Instead searches go to a
read-only ``Index`` opened while no write runs, whose SQLite connection holds one read transaction from then on:
in WAL mode that pins the database as it was, so its rows, tags and vectors agree with its FAISS cache however
many chunks a writer commits meanwhile. Writes (``add``, ``remove``) run one at a time under a lock on a writable
``Index``; when one finishes, a new snapshot is opened and swapped in, and the old one is closed once the searches
still using it are done. Searches never wait for a write (only the swap itself, a few milliseconds, is locked).

Another process may write too (``clipworks index add`` while the server runs): at most every ``check_every``
seconds a search looks at the database's change counter (``generation``, bumped by every commit) through a small
unpinned connection, and when it moved and no write of the server's own is running, a fresh snapshot is opened.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..search.index import Index
from ..search.store import DB_NAME

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

R = TypeVar("R")


class _Snapshot:
    def __init__(self, index: Index, generation: int) -> None:
        self.index = index
        self.generation = generation
        self.users = 0
        self.retired = False


class LiveIndex:
    """``with live.reader() as index:`` a consistent read-only ``Index``; ``live.write(fn)`` runs ``fn(writable)``
    exclusively, then publishes the result to new readers.

    ``writer`` is a writable ``Index`` to use for writes (the caller owns it); without one, each write opens the
    index writable for its duration (so other processes can write between the server's writes)."""

    def __init__(self, path: str | Path, encoder: Encoder, writer: Index | None = None,
                 check_every: float = 1.0) -> None:
        self.path = Path(path)
        self.encoder = encoder
        self.check_every = check_every
        self._writer = writer
        self._write_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probe = sqlite3.connect(str(self.path / DB_NAME), isolation_level=None, check_same_thread=False)
        self._probe.execute("PRAGMA query_only = ON")
        self._checked = time.monotonic()
        self._current = self._open_snapshot()
        self.root = self._current.index.root
        self.ref = self._current.index.ref

    @classmethod
    def of(cls, index: Index, encoder: Encoder) -> LiveIndex:
        return cls(index.path, encoder, writer=index if index.writable else None)

    def _open_snapshot(self) -> _Snapshot:
        index = Index.open(self.path, encoder=self.encoder)
        db = index.db
        db.execute("BEGIN")  # one read transaction for the snapshot's life: WAL keeps this view of the database
        row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return _Snapshot(index, int(row[0]) if row else 0)

    def _generation(self) -> int:
        with self._probe_lock:
            row = self._probe.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def _follow_other_writers(self) -> None:
        """Open a fresh snapshot when another process committed since ours (checked every ``check_every`` s)."""
        now = time.monotonic()
        if now - self._checked < self.check_every:
            return
        self._checked = now
        if self._generation() == self._current.generation or not self._write_lock.acquire(blocking=False):
            return  # unchanged, or a write of ours is running (it refreshes when done)
        try:
            if self._generation() != self._current.generation:
                self.refresh()
        finally:
            self._write_lock.release()

    @contextlib.contextmanager
    def reader(self) -> Iterator[Index]:
        self._follow_other_writers()
        with self._swap_lock:
            snap = self._current
            snap.users += 1
        try:
            yield snap.index
        finally:
            with self._swap_lock:
                snap.users -= 1
                close = snap.retired and snap.users == 0
            if close:
                _close(snap.index)

    def __len__(self) -> int:
        with self.reader() as index:
            return len(index)

    def write(self, fn: Callable[[Index], R]) -> R:
        """Run ``fn`` on a writable index, one write at a time; readers see its result when it returns."""
        with self._write_lock:
            try:
                if self._writer is not None:
                    return fn(self._writer)
                with Index.open(self.path, encoder=self.encoder, writable=True) as writer:
                    return fn(writer)
            finally:
                self.refresh()

    def refresh(self) -> None:
        """Publish the database as it is now to new searches (called after each write)."""
        fresh = self._open_snapshot()
        with self._swap_lock:
            old, self._current = self._current, fresh
            old.retired = True
            close = old.users == 0
        if close:
            _close(old.index)

    def close(self) -> None:
        with self._write_lock, self._swap_lock:
            self._current.retired = True
            if self._current.users == 0:
                _close(self._current.index)
            with self._probe_lock:
                self._probe.close()


def _close(index: Index) -> None:
    with contextlib.suppress(Exception):
        index.db.execute("COMMIT")
    index.close()


