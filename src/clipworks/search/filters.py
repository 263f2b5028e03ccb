"""Which items a search may return: folder, modification date, file size and tags, as one SQL condition.

Filters select ids in the index's metadata table first and the vector search then runs over those ids only,
so a filtered top-k is exact (the best k among the matching items), not the matching part of an unfiltered top-k.

- ``folder``: the item's path (relative to the indexed root) lies in this folder or below; an absolute folder
  inside the root is made relative to it.
- ``after`` / ``before``: ISO date or date-time (``2024-05-01``, ``2024-05-01T13:00``, ``…+02:00``); a time
  without a zone is local time, a bare date its midnight. ``after`` keeps mtime ≥ it, ``before`` keeps mtime < it,
  so ``--after 2024-05-01 --before 2024-05-02`` is that day.
- ``min_size`` / ``max_size``: bytes, inclusive; ``500k``, ``2MB``, ``1.5MiB`` are understood (k/M/G = 1000ⁿ,
  Ki/Mi/Gi = 1024ⁿ).
- ``tags``: the item has every one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import UsageError

#: Filter fields as the user names them (``--where FIELD=VALUE``, the keys of a filters mapping).
FIELDS = {
    "folder": "path relative to the index root starts with this folder",
    "after": "modified at or after this ISO date/time",
    "before": "modified before this ISO date/time",
    "min_size": "at least this many bytes (500k, 2MB, 1MiB…)",
    "max_size": "at most this many bytes",
    "tag": "has this tag (repeat for all of several)",
}
_ALIASES = {"min-size": "min_size", "max-size": "max_size", "tags": "tag", "dir": "folder"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_TAG_CONDITION = "id IN (SELECT item_id FROM tags WHERE tag = ?)"  # the index's tags(item_id, tag) table


def unknown_field(name: str) -> UsageError:
    return UsageError(f"unknown filter field {name!r}; the fields are: {', '.join(FIELDS)}")


def parse_size(value: str | int, what: str = "size") -> int:
    """Bytes from ``1234``, ``500k``, ``2MB``, ``1.5MiB``."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise UsageError(f"{what}: {value!r} is not a size (bytes, or a number with k/M/G/T, KiB/MiB/GiB…)")
        base = 1024 if m.group(3) else 1000
        if m.group(3) and not m.group(2):
            raise UsageError(f"{what}: {value!r} is not a size ('i' needs a unit: KiB, MiB…)")
        n = round(float(m.group(1)) * base ** _POWERS[m.group(2).lower()])
    if n < 0:
        raise UsageError(f"{what}: {value!r} is negative")
    return n


def parse_time(value: str | date | datetime | float, what: str = "date") -> float:
    """POSIX seconds from an ISO date / date-time (local time unless it names a zone), a datetime or seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).timestamp()
    try:
        return datetime.fromisoformat(str(value).strip()).timestamp()
    except ValueError:
        raise UsageError(f"{what}: {value!r} is not an ISO date or date-time (2024-05-01, 2024-05-01T13:00)") from None


def normalize_folder(folder: str | Path, root: Path | None = None) -> str | None:
    """The folder as a root-relative POSIX path without trailing slash; None for the root itself."""
    text = str(folder).replace("\\", "/").strip()
    if Path(text).is_absolute():
        if root is None:
            raise UsageError(f"folder {folder!r}: an absolute folder needs the index root to be made relative")
        try:
            text = Path(text).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            raise UsageError(f"folder {folder!r} is not inside the indexed root {root}") from None
    parts = [p for p in PurePosixPath(text).parts if p not in (".", "")]
    if ".." in parts:
        raise UsageError(f"folder {folder!r}: '..' is not allowed (folders are relative to the index root)")
    return "/".join(parts) or None


@dataclass(frozen=True)
class Filters:
    """A conjunction of conditions on an item's metadata; the empty ``Filters()`` keeps everything."""

    folder: str | None = None
    after: float | None = None  # POSIX seconds, inclusive
    before: float | None = None  # POSIX seconds, exclusive
    min_size: int | None = None
    max_size: int | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, *, folder: str | Path | None = None, after: Any = None, before: Any = None,
              min_size: str | int | None = None, max_size: str | int | None = None, tags: Iterable[str] = (),
              where: Iterable[str] = (), root: Path | None = None) -> Filters:
        """Filters from user strings (the CLI's options) plus ``where`` items ``FIELD=VALUE``."""
        values: dict[str, Any] = {"folder": folder, "after": after, "before": before, "min_size": min_size,
                                  "max_size": max_size, "tag": list(tags)}
        for item in where:
            name, sep, value = str(item).partition("=")
            key = _ALIASES.get(name.strip().lower(), name.strip().lower())
            if not sep:
                raise UsageError(f"--where {item!r}: expected FIELD=VALUE; the fields are: {', '.join(FIELDS)}")
            if key not in FIELDS:
                raise unknown_field(name.strip())
            if key == "tag":
                values["tag"].append(value)
            elif values[key] is not None:
                raise UsageError(f"filter {key!r} is given twice")
            else:
                values[key] = value
        return cls.from_mapping(values, root=root)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], root: Path | None = None) -> Filters:
        """Filters from a mapping of field → value (``{"folder": "2024", "tag": ["cat"], "min_size": "1MB"}``)."""
        for key in values:
            if _ALIASES.get(key, key) not in FIELDS:
                raise unknown_field(key)
        get = {_ALIASES.get(k, k): v for k, v in values.items()}
        tags = get.get("tag") or ()
        tags = (tags,) if isinstance(tags, str) else tuple(tags)
        for t in tags:
            if not isinstance(t, str) or not t.strip():
                raise UsageError(f"tag filter: {t!r} is not a tag name")
        out = cls(
            folder=normalize_folder(get["folder"], root) if get.get("folder") is not None else None,
            after=parse_time(get["after"], "after") if get.get("after") is not None else None,
            before=parse_time(get["before"], "before") if get.get("before") is not None else None,
            min_size=parse_size(get["min_size"], "min_size") if get.get("min_size") is not None else None,
            max_size=parse_size(get["max_size"], "max_size") if get.get("max_size") is not None else None,
            tags=tuple(t.strip() for t in tags),
        )
        if out.after is not None and out.before is not None and out.after >= out.before:
            raise UsageError("filters: 'after' is not before 'before', so nothing can match")
        if out.min_size is not None and out.max_size is not None and out.min_size > out.max_size:
            raise UsageError(f"filters: min_size {out.min_size} is above max_size {out.max_size}")
        return out

    def is_empty(self) -> bool:
        return self == Filters()

    def sql(self) -> tuple[str, list[Any]]:
        """``(condition, parameters)`` over the index's ``items`` columns (``path``, ``mtime``, ``size``) and its
        ``tags`` table, for ``Index.select_ids``; ``("1", [])`` when empty."""
        parts: list[str] = []
        params: list[Any] = []
        if self.folder is not None:
            prefix = self.folder + "/"
            parts.append("substr(path, 1, ?) = ?")
            params += [len(prefix), prefix]
        if self.after is not None:
            parts.append("mtime >= ?")
            params.append(self.after)
        if self.before is not None:
            parts.append("mtime < ?")
            params.append(self.before)
        if self.min_size is not None:
            parts.append("size >= ?")
            params.append(self.min_size)
        if self.max_size is not None:
            parts.append("size <= ?")
            params.append(self.max_size)
        for tag in self.tags:
            parts.append(_TAG_CONDITION)
            params.append(tag)
        return (" AND ".join(parts) or "1"), params

    def describe(self) -> str:
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None or v == ():
                continue
            if f.name in ("after", "before"):
                v = datetime.fromtimestamp(v).isoformat(timespec="seconds")
            out.append(f"{f.name}={','.join(v) if f.name == 'tags' else v}")
        return " ".join(out)

