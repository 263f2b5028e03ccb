"""Write any source back out: WebDataset shards (the loader's fastest random-access format) or open_clip's
CSV layout (``images/*.png`` + ``data.csv`` with ``filepath,title[,label]``) so its trainer reads the same data."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..fileio import atomic_file
from ..image.decode import ImageError
from ..image.transforms import to_rgb
from .pairs import DataError, PairSource
from .shards import ShardWriter

_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}
Progress = Callable[[int], None]


@dataclass
class ExportResult:
    samples: int  # written
    files: list[Path]  # the shards, or [data.csv]
    skipped: list[str]  # unreadable images: key and reason


@dataclass(frozen=True)
class _Encoded:
    index: int
    image: bytes = b""
    ext: str = ""
    captions: tuple[str, ...] = ()
    label: int | None = None
    error: str | None = None


def encode_image(image: Image.Image) -> tuple[bytes, str]:
    """(bytes, extension): PNG, lossless so pixels round-trip exactly — except a decoded JPEG, which is
    re-saved as JPEG with its own quantisation tables (no second generation of loss worth a 10× larger PNG)."""
    buf = io.BytesIO()
    if image.format == "JPEG":
        image.save(buf, "JPEG", quality="keep", subsampling="keep")
        return buf.getvalue(), "jpg"
    (image if image.mode in _PNG_MODES else to_rgb(image)).save(buf, "PNG")
    return buf.getvalue(), "png"


def _encode(source: PairSource, index: int) -> _Encoded:
    try:
        pair = source.get(index)
    except ImageError as e:
        return _Encoded(index, error=str(e))
    data, ext = encode_image(pair.image)
    return _Encoded(index, data, ext, pair.captions, pair.label)


_worker_source: PairSource | None = None


def _init_worker(source: PairSource) -> None:
    global _worker_source
    _worker_source = source


def _encode_in_worker(index: int) -> _Encoded:
    assert _worker_source is not None
    return _encode(_worker_source, index)


def _encoded(source: PairSource, count: int, workers: int) -> Iterator[_Encoded]:
    """Samples 0..count-1 decoded and re-encoded, in order; with workers, in a process pool (SVG rendering and
    PNG encoding are CPU-bound), the source handed to each worker once."""
    if workers == 0:
        yield from (_encode(source, i) for i in range(count))
        return
    with multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(source,)) as pool:
        yield from pool.imap(_encode_in_worker, range(count), chunksize=16)


def _count(source: PairSource, limit: int | None) -> int:
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    return len(source) if limit is None else min(limit, len(source))


def _write_classes(source: PairSource, out: Path) -> None:
    if source.class_names:
        with atomic_file(out / "classes.txt") as tmp:
            tmp.write_text("".join(f"{name}\n" for name in source.class_names), encoding="utf-8")
            os.chmod(tmp, 0o644)  # readable like the data it describes; the temp file starts private


def _readable(items: Iterator[_Encoded], progress: Progress | None, skipped: list[str]) -> Iterator[_Encoded]:
    """The items that decoded; each one ticks the progress, and each failure is recorded in ``skipped``."""
    for item in items:
        if progress:
            progress(1)
        if item.error is not None:
            skipped.append(item.error)
            continue
        yield item


def export_shards(source: PairSource, out: str | Path, shard_size: int = 10000, limit: int | None = None,
                  workers: int = 0, progress: Progress | None = None) -> ExportResult:
    """``out/shard-000000.tar``, …: per sample ``{key}.png|jpg``, ``{key}.txt`` (captions, one per line) and,
    when labelled, ``{key}.json`` (``{"label": n}``); ``out/classes.txt`` when the source names its classes.
    Keys are source indices, so a skipped image leaves a gap rather than shifting every later key."""
    out = Path(out)
    if out.is_dir() and any(out.glob("shard-*.tar")):
        raise DataError(f"{out} already holds shard-*.tar files; remove them or choose another directory")
    written, skipped = 0, []
    with ShardWriter(out, shard_size) as writer:
        for item in _readable(_encoded(source, _count(source, limit), workers), progress, skipped):
            files = {item.ext: item.image, "txt": "".join(f"{c}\n" for c in item.captions).encode()}
            if item.label is not None:
                files["json"] = json.dumps({"label": item.label}).encode()
            writer.write(f"{item.index:08d}", files)
            written += 1
    if not written:
        raise DataError(f"{source.description}: no readable images, nothing written")
    _write_classes(source, out)
    return ExportResult(written, writer.paths, skipped)


def export_csv(source: PairSource, out: str | Path, limit: int | None = None, workers: int = 0,
               progress: Progress | None = None) -> ExportResult:
    """``out/images/{key}.png|jpg`` + ``out/data.csv`` (``filepath,title``, plus ``label`` when labelled).

    open_clip reads one caption per row, so each image gets one: caption ``index % n`` of its n — with
    template captions that spreads the templates evenly over the set. ``data.csv`` is written last and
    atomically, so an interrupted export has no table that points at missing images.
    """
    out = Path(out)
    table = out / "data.csv"
    if table.exists():
        raise DataError(f"{table} already exists; remove it or choose another directory")
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, int | None]] = []
    skipped: list[str] = []
    for item in _readable(_encoded(source, _count(source, limit), workers), progress, skipped):
        name = f"images/{item.index:08d}.{item.ext}"
        (out / name).write_bytes(item.image)
        rows.append((name, item.captions[item.index % len(item.captions)], item.label))
    if not rows:
        raise DataError(f"{source.description}: no readable images, nothing written")
    labelled = all(label is not None for _, _, label in rows)
    with atomic_file(table) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        os.chmod(tmp, 0o644)
        writer = csv.writer(f)
        writer.writerow(["filepath", "title", "label"] if labelled else ["filepath", "title"])
        writer.writerows(rows if labelled else [row[:2] for row in rows])
    _write_classes(source, out)
    return ExportResult(len(rows), [table], skipped)
