"""What is on disk: the image files under a folder with their stat, caption sidecars, and content hashes.

Captions and tags come from sidecar files next to an image, as img2dataset and webdataset lay them out:
``photo.txt`` holds the caption; ``photo.json`` may hold ``{"caption": "…", "tags": ["…"]}`` (other keys are
ignored). When both give a caption the ``.txt`` wins. Hidden files and folders (a leading ``.``) are skipped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClipworksError
from ..image.decode import IMAGE_SUFFIXES

SIDECAR_SUFFIXES = (".txt", ".json")


class SidecarError(ClipworksError, ValueError):
    """A caption sidecar cannot be read or has the wrong shape; the message names the file."""


@dataclass
class FileInfo:
    path: str  # relative to the index root, '/'-separated
    abspath: Path
    size: int
    mtime_ns: int
    sidecars: tuple[Path, ...]  # the caption sidecars that exist next to it
    sidecar_mtime_ns: int | None  # the newest of their mtimes


def scan(root: Path, folder: Path, skip: Path | None = None) -> tuple[dict[str, FileInfo], list[tuple[Path, str]]]:
    """Image files under ``folder`` (inside ``root``) by relative path, and the folders that could not be read.
    ``skip`` (the index folder, when it lies inside the root) is not entered. Symlinked folders are followed, but
    each real folder is entered once, so a link loop (``photos/all -> ..``) or two links to one place do not index
    the same files many times."""
    files: dict[str, FileInfo] = {}
    failures: list[tuple[Path, str]] = []
    seen = {os.path.realpath(folder)}
    if skip is not None:
        seen.add(os.path.realpath(skip))
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            failures.append((here, f"{here}: cannot list folder: {e.strerror or e}"))
            continue
        names = {e.name for e in entries}
        subfolders: list[os.DirEntry] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    subfolders.append(entry)
                    continue
                if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES or not entry.is_file():
                    continue
                st = entry.stat()
                stem = entry.name[: -len(Path(entry.name).suffix)]
                sidecars = tuple(Path(here, stem + s) for s in SIDECAR_SUFFIXES if stem + s in names)
                side_mtime = max((p.stat().st_mtime_ns for p in sidecars), default=None)
            except OSError as e:
                failures.append((Path(entry.path), f"{entry.path}: cannot stat: {e.strerror or e}"))
                continue
            rel = Path(entry.path).relative_to(root).as_posix()
            files[rel] = FileInfo(rel, Path(entry.path), st.st_size, st.st_mtime_ns, sidecars, side_mtime)
        for entry in sorted(subfolders, key=lambda e: e.is_symlink()):  # a real folder before a link to it
            real = os.path.realpath(entry.path)
            if real not in seen:
                seen.add(real)
                stack.append(Path(entry.path))
    return files, failures


def matches(path: str, pattern: str) -> bool:
    """``path`` (relative, '/'-separated) is ``pattern``, lies under it as a folder, or matches it as a glob
    (``*`` and ``?`` also match '/', ``[…]`` a set of characters)."""
    folder = pattern.rstrip("/")
    return path == pattern or (bool(folder) and path.startswith(folder + "/")) or fnmatch.fnmatchcase(path, pattern)


def read_sidecars(info: FileInfo) -> tuple[str | None, list[str]]:
    """(caption, tags) from the file's sidecars; a sidecar that cannot be read raises ``SidecarError``."""
    caption: str | None = None
    tags: list[str] = []
    for side in info.sidecars:
        try:
            text = side.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SidecarError(f"caption sidecar {side} cannot be read: {e}") from e
        if side.suffix == ".txt":
            caption = text.strip() or None
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SidecarError(f"caption sidecar {side} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise SidecarError(f"caption sidecar {side}: expected a JSON object with 'caption' and/or 'tags'")
        value = data.get("caption")
        if value is not None and not isinstance(value, str):
            raise SidecarError(f"caption sidecar {side}: 'caption' must be a string, not {type(value).__name__}")
        raw_tags = data.get("tags", [])
        if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
            raise SidecarError(f"caption sidecar {side}: 'tags' must be a list of strings")
        if caption is None and value and value.strip():
            caption = value.strip()
        tags = clean_tags(raw_tags)
    return caption, tags


def clean_tags(tags: Sequence[str]) -> list[str]:
    """Stripped, non-empty, unique, sorted."""
    return sorted({t.strip() for t in tags if t.strip()})


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(paths: Sequence[Path], workers: int = 2) -> list[str | OSError]:
    """sha256 of each file (hashlib releases the GIL, so threads overlap reads and hashing), or its OSError."""

    def one(p: Path) -> str | OSError:
        try:
            return sha256_file(p)
        except OSError as e:
            return e

    if len(paths) < 2 or workers <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))
