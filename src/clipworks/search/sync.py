"""``Index.add``: bring an index in step with its folder — embed new and changed images, follow moved and copied
ones by content hash (no re-embedding), drop the gone ones, re-read changed caption sidecars.

Crash safety lives here: files are processed in chunks, and each chunk's rows *and* vectors are committed in one
SQLite transaction; the gone rows are deleted last. A process killed anywhere leaves committed chunks whole and
the rest untouched, so the next ``add`` sees the uncommitted files as new (or changed) again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..progress import Progress
from .scan import FileInfo, SidecarError, hash_files, matches, read_sidecars, scan
from .store import NewItem, Row, Store
from .vectors import VectorIndex

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder


@dataclass
class AddReport:
    """What ``Index.add`` did. ``embedded`` images went through the model; ``reused`` vectors were found by
    content hash (moved, renamed or copied files) instead."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    removed: int = 0
    excluded: int = 0
    embedded: int = 0
    reused: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def __str__(self) -> str:
        excluded = f", {self.excluded} excluded" if self.excluded else ""
        return (f"{self.added} added, {self.updated} updated, {self.moved} moved, {self.unchanged} unchanged, "
                f"{self.removed} removed{excluded}, {self.failed} failed ({self.embedded} embedded, {self.reused} "
                f"vectors reused) in {self.seconds:.1f}s")


@dataclass
class _Meta:
    caption: str | None
    tags: list[str]
    sidecar_mtime_ns: int | None


class Sync:
    """One ``add`` run over an index's store and FAISS index; ``encoder`` is called only if something needs
    embedding (so an ``add`` with nothing new never loads the model)."""

    def __init__(self, store: Store, vectors: VectorIndex, encoder: Callable[[], Encoder], dim: int) -> None:
        self.store = store
        self.vectors = vectors
        self.encoder = encoder
        self.dim = dim

    def run(self, root: Path, folder: Path, skip: Path, excluded: list[str], progress: Progress | None,
            on_total: Callable[[int], None] | None, workers: int, commit_every: int) -> AddReport:
        """Sync the files under ``folder`` (inside ``root``; ``skip`` is the index folder, ``excluded`` the
        patterns ``remove`` recorded)."""
        scope = "" if folder == root else folder.relative_to(root).as_posix()
        start = time.perf_counter()
        files, scan_failures = scan(root, folder, skip=skip)
        kept = {rel: info for rel, info in files.items() if not any(matches(rel, p) for p in excluded)}
        n_excluded, files = len(files) - len(kept), kept
        rows = self.store.rows_under(scope)
        report = AddReport(failures=list(scan_failures), excluded=n_excluded)
        unchanged: list[tuple[Row, FileInfo]] = []
        changed: list[FileInfo] = []
        for rel, info in files.items():
            row = rows.get(rel)
            if row is not None and row.size == info.size and row.mtime_ns == info.mtime_ns:
                unchanged.append((row, info))
            else:
                changed.append(info)
        gone_by_sha: dict[str, list[Row]] = {}
        for rel, row in rows.items():
            if rel not in files:
                gone_by_sha.setdefault(row.sha256, []).append(row)
        if on_total:
            on_total(len(changed))
        chunks = [changed[i : i + commit_every] for i in range(0, len(changed), commit_every)]
        with ThreadPoolExecutor(1) as hasher:  # the next chunk is hashed while this one is embedded
            ahead = [hasher.submit(hash_files, [info.abspath for info in chunk], workers) for chunk in chunks[:1]]
            for i, chunk in enumerate(chunks):
                hashes = ahead[i].result()
                if i + 1 < len(chunks):
                    ahead.append(hasher.submit(hash_files, [info.abspath for info in chunks[i + 1]], workers))
                self._chunk(chunk, hashes, rows, gone_by_sha, report, workers, progress)
        self._finish(unchanged, [r for rs in gone_by_sha.values() for r in rs], report)
        report.seconds = time.perf_counter() - start
        return report

    def _chunk(self, chunk: list[FileInfo], hashes: list[str | OSError], rows: dict[str, Row],
                   gone_by_sha: dict[str, list[Row]], report: AddReport, workers: int,
                   progress: Progress | None) -> None:
        """Classify (by hash), embed and commit one chunk of new or changed files (one transaction)."""
        moves: list[tuple[Row, FileInfo]] = []
        touched: list[tuple[Row, FileInfo]] = []
        inserts: list[tuple[FileInfo, Row | None, str, int | None]] = []  # (file, replaced row, sha, vector source)
        drop: list[int] = []
        for info, sha in zip(chunk, hashes):
            row = rows.get(info.path)
            if isinstance(sha, OSError):
                report.failures.append((info.abspath, f"{info.abspath}: cannot read: {sha.strerror or sha}"))
                if row is not None:
                    drop.append(row.id)  # its old content is no longer what the file holds
                continue
            if row is not None and row.sha256 == sha:
                touched.append((row, info))
            elif row is None and gone_by_sha.get(sha):
                moves.append((gone_by_sha[sha].pop(), info))
            else:
                same = self.store.ids_with_sha(sha)
                inserts.append((info, row, sha, same[0] if same else None))
        to_embed = [info for info, _, _, src in inserts if src is None]
        if len(to_embed) < len(chunk) and progress:
            progress(len(chunk) - len(to_embed))
        embedded: dict[Path, np.ndarray] = {}
        if to_embed:
            result = self.encoder().encode_files([i.abspath for i in to_embed], workers=workers, progress=progress)
            embedded = dict(zip(result.paths, result.features))
            report.failures += result.failures
            report.embedded += len(result.paths)
        metas = {info.path: self._file_meta(info, row, report) for info, row, _, _ in inserts}
        metas.update({info.path: self._file_meta(info, row, report) for row, info in moves + touched})
        caption_vecs = self._embed_captions([m.caption for m in metas.values() if m is not None])
        # read reused vectors before any row goes: a source may be a row this chunk replaces (two files swapped)
        sources = sorted({src for _, _, _, src in inserts if src is not None})
        reused = dict(zip(sources, self.store.vectors(sources, self.dim))) if sources else {}
        new_ids: list[int] = []
        new_vecs: list[np.ndarray] = []
        with self.store.transaction():
            for row, info in moves + touched:
                self.store.update_file(row.id, info.path, info.size, info.mtime_ns)
                self._apply_meta(row.id, metas[info.path], caption_vecs)
            for info, row, sha, src in inserts:
                vector = embedded.get(info.abspath) if src is None else reused[src]
                meta = metas[info.path]
                carried = self.store.metadata_of(row.id) if row is not None else None
                if row is not None:
                    self.store.delete([row.id])
                    drop.append(row.id)
                if vector is None:
                    continue  # unreadable: listed in failures by encode_files
                caption, tags, cvec, side = carried if (meta is None and carried) else (None, [], None, None)
                if meta is not None:
                    caption, tags, side = meta.caption, meta.tags, meta.sidecar_mtime_ns
                    cvec = caption_vecs.get(caption) if caption else None
                new_ids.append(self.store.insert(NewItem(info.path, info.size, info.mtime_ns, sha, vector,
                                                          caption, tags, cvec, side)))
                new_vecs.append(vector)
                report.added += row is None
                report.updated += row is not None
                report.reused += src is not None
            self.store.delete(drop)
            self.store.bump()
        report.unchanged += len(touched)
        report.moved += len(moves)
        report.reused += len(moves)
        self.vectors.remove(drop)
        if new_ids:
            self.vectors.add(np.array(new_ids, np.int64), np.stack(new_vecs))

    def _finish(self, unchanged: list[tuple[Row, FileInfo]], gone: list[Row], report: AddReport) -> None:
        """Re-read changed sidecars of unchanged files, drop the gone files."""
        metas = {row.id: m for row, info in unchanged
                 if info.sidecar_mtime_ns != row.sidecar_mtime_ns
                 and (m := self._file_meta(info, row, report, force=True)) is not None}
        caption_vecs = self._embed_captions([m.caption for m in metas.values()])
        with self.store.transaction():
            for item_id, meta in metas.items():
                self._apply_meta(item_id, meta, caption_vecs)
            self.store.delete(row.id for row in gone)
            self.store.bump()
        report.unchanged += len(unchanged)
        report.removed += len(gone)
        self.vectors.remove(row.id for row in gone)

    def _file_meta(self, info: FileInfo, row: Row | None, report: AddReport, force: bool = False) -> _Meta | None:
        """Caption and tags from the file's sidecars when they are new or changed; None to keep what the row has
        (a caption set through the API stays until its sidecar changes)."""
        if row is not None and not force and info.sidecar_mtime_ns == row.sidecar_mtime_ns:
            return None
        if not info.sidecars and row is None:
            return None
        try:
            caption, tags = read_sidecars(info)
        except SidecarError as e:
            report.warnings.append(str(e))
            return None
        return _Meta(caption, tags, info.sidecar_mtime_ns)

    def _embed_captions(self, captions: list[str | None]) -> dict[str, np.ndarray]:
        texts = sorted({c for c in captions if c})
        return dict(zip(texts, self.encoder().encode_text(texts))) if texts else {}

    def _apply_meta(self, item_id: int, meta: _Meta | None, caption_vecs: dict[str, np.ndarray]) -> None:
        if meta is None:
            return
        self.store.set_caption(item_id, meta.caption, caption_vecs.get(meta.caption) if meta.caption else None)
        self.store.set_tags(item_id, meta.tags)
        self.store.set_sidecar_mtime(item_id, meta.sidecar_mtime_ns)

