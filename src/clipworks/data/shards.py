"""WebDataset tar shards with random access: the tar headers are indexed once at open, so ``get(i)`` is
one ``pread`` of the image bytes — webdataset's own reader streams, which cannot resume mid-epoch exactly.

Layout (webdataset's): members sharing a key form a sample — ``{key}.jpg|jpeg|png|webp`` for the image,
``{key}.txt`` (captions, one per line) and/or ``{key}.json`` (``caption``/``captions``/``label``) and/or
``{key}.cls`` (integer label). The key is the member path up to the first dot of its file name.
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from ..fileio import atomic_file
from ..image.decode import ImageError
from . import tar
from .pairs import DataError, Pair, clean_captions

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_TEXT_EXTENSIONS = ("txt", "json", "cls")
_PARSED_CACHE = 10_000
_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``shards-{000000..000009}.tar`` → the ten names (zero padding kept); ``{a,b}`` lists work too."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    if ".." in body:
        lo, _, hi = body.partition("..")
        if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo):
            raise DataError(f"{pattern}: bad range {{{body}}}; expected {{first..last}} with first <= last")
        width = len(lo) if lo.startswith("0") else 0
        items = [f"{i:0{width}d}" for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [name for item in items for name in expand_braces(pattern[: m.start()] + item + pattern[m.end():])]


def split_key(member: str) -> tuple[str, str] | None:
    """(key, extension) by webdataset's rule, or None for a name with no extension."""
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode now (PIL is lazy) so a truncated image fails here, naming the sample."""
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name} cannot be read as an image: {e}") from e
    return image


def _read_annotation(ext: str, data: bytes, where: str) -> tuple[tuple[str, ...], int | None]:
    """(captions, label) from a .txt, .json or .cls member."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text ({e})") from None
    if ext == "txt":
        return clean_captions(text.splitlines()), None
    if ext == "cls":
        try:
            return (), int(text.strip())
        except ValueError:
            raise DataError(f"{where}: {text.strip()!r} is not an integer class id") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}: expected a JSON object with caption/captions/label, got {type(meta).__name__}")
    captions: list[str] = []
    if isinstance(meta.get("captions"), list):
        captions += [c for c in meta["captions"] if isinstance(c, str)]
    if isinstance(meta.get("caption"), str):
        captions.append(meta["caption"])
    label = meta.get("label")
    if isinstance(label, str) and not captions:  # a text label is the only caption there is
        captions, label = [label], None
    if label is not None and not isinstance(label, int):
        raise DataError(f"{where}: \"label\" is {label!r}, not an integer class id")
    return clean_captions(captions), label


@dataclass
class _Pending:
    image: tuple[int, int] | None = None  # (offset, size) of the image bytes
    text: tuple[str, ...] = ()  # from .txt
    meta: tuple[str, ...] = ()  # from .json
    label: int | None = None

    @property
    def captions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.text + self.meta))


class ShardSource:
    """Samples of one or more uncompressed tar shards, in shard order then member order."""

    def __init__(self, shards: Sequence[str | Path], name: str | None = None):
        self.shards = [Path(s) for s in shards]
        if not self.shards:
            raise DataError(f"{name or 'shards'}: no .tar shards: zero samples")
        self._fds: dict[int, int] = {}
        self.keys: list[str] = []
        self.locations: list[tuple[int, int, int]] = []  # (shard, offset, size)
        self.captions: list[tuple[str, ...]] = []
        self.labels: list[int | None] = []
        images, uncaptioned = 0, []
        parsed: dict[tuple[str, bytes], tuple[tuple[str, ...], int | None]] = {}
        for number, shard in enumerate(self.shards):
            for key, sample in self._index(shard, parsed).items():
                if sample.image is None:
                    continue
                images += 1
                captions = sample.captions
                if not captions:
                    uncaptioned.append(f"{shard}/{key}")
                    continue
                self.keys.append(f"{shard}/{key}")
                self.locations.append((number, *sample.image))
                self.captions.append(captions)
                self.labels.append(sample.label)
        where = name or (str(self.shards[0]) if len(self.shards) == 1 else f"{self.shards[0]} … {self.shards[-1]}")
        if images == 0:
            raise DataError(f"{where}: no images ({', '.join('.' + e for e in IMAGE_EXTENSIONS)}) in "
                            f"{len(self.shards)} shard(s): zero samples")
        if not self.keys:
            raise DataError(f"{where}: {images} images but no captions (e.g. {uncaptioned[0]}) — each sample needs "
                            "a {key}.txt (one caption per line) or a {key}.json with \"caption\"/\"captions\"")
        if any(label is None for label in self.labels):
            self.labels = [None] * len(self.keys)  # labels only count when every sample has one
        classes = self.shards[0].parent / "classes.txt"
        self.class_names = classes.read_text(encoding="utf-8").splitlines() if classes.is_file() else None
        self.uncaptioned = uncaptioned
        self.description = f"{where} ({len(self.keys)} samples in {len(self.shards)} shard(s)" + (
            f"; {len(uncaptioned)} images without captions left out)" if uncaptioned else ")")

    @staticmethod
    def _index(shard: Path, parsed: dict[tuple[str, bytes], tuple[tuple[str, ...], int | None]]) -> dict[str, _Pending]:
        """Member offsets of one shard, with its small caption/label members read on the way. ``parsed`` caches
        annotations by content: template-captioned sets repeat a few dozen distinct members many times."""
        if not shard.is_file():
            raise DataError(f"{shard}: no such shard")
        samples: dict[str, _Pending] = {}
        with open(shard, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise DataError(f"{shard} is empty (0 bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                try:
                    for name, offset, size in tar.members(data):
                        parts = split_key(name)
                        if parts is None:
                            continue
                        key, ext = parts
                        sample = samples.setdefault(key, _Pending())
                        if ext in IMAGE_EXTENSIONS:
                            sample.image = (offset, size)
                        elif ext in _TEXT_EXTENSIONS:
                            content = (ext, data[offset:offset + size])
                            if content not in parsed:
                                if len(parsed) >= _PARSED_CACHE:
                                    parsed.clear()
                                parsed[content] = _read_annotation(*content, f"{shard}/{name}")
                            captions, label = parsed[content]
                            if ext == "txt":
                                sample.text = captions
                            elif ext == "json":
                                sample.meta = captions
                            sample.label = label if label is not None else sample.label
                except tar.TarFormatError as e:
                    raise DataError(f"{shard}: {e}") from None
        return samples

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fds": {}}  # descriptors do not travel to worker processes

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def get(self, index: int) -> Pair:
        shard, offset, size = self.locations[index]
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
        data = os.pread(fd, size, offset)  # no shared file position, so safe across forked workers
        image = decode_image(data, self.keys[index])
        return Pair(image, self.captions[index], self.labels[index], self.keys[index])


def shard_paths(spec: str | Path) -> list[Path]:
    """A .tar file, a directory of .tar files (sorted), or a brace pattern of shard names."""
    text = str(spec)
    if _BRACE.search(text):
        paths = [Path(p) for p in expand_braces(text)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{text}: {len(missing)} of {len(paths)} shards do not exist, e.g. {missing[0]}")
        return paths
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.glob("*.tar") if not p.name.startswith("."))
    return [path]


class ShardWriter:
    """Writes samples into ``out/{prefix}000000.tar``, … with ``shard_size`` samples each. A shard appears under
    its name only when complete (temp file + rename), so an interrupted export never leaves a torn shard."""

    def __init__(self, out_dir: str | Path, shard_size: int = 10000, prefix: str = "shard-"):
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.out_dir, self.shard_size, self.prefix = Path(out_dir), shard_size, prefix
        self.paths: list[Path] = []
        self._stack: contextlib.ExitStack | None = None
        self._file: BinaryIO | None = None
        self._count = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish_shard(None if exc[0] is None else exc)

    def write(self, key: str, files: dict[str, bytes]) -> None:
        """One sample: ``files`` maps extension (``png``, ``txt``, ``json``) to bytes."""
        if split_key(f"{key}.x") != (key, "x") or key.startswith("."):
            raise ValueError(f"sample key {key!r} must not contain a dot in its file name (webdataset groups by it)")
        if self._file is None or self._count == self.shard_size:
            self._finish_shard()
            self._open_shard()
        assert self._file is not None
        self._file.write(b"".join(tar.member(f"{key}.{ext}", data) for ext, data in files.items()))
        self._count += 1

    def close(self) -> list[Path]:
        self._finish_shard()
        return self.paths

    def _open_shard(self) -> None:
        path = self.out_dir / f"{self.prefix}{len(self.paths):06d}.tar"
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_file(path))
        self._file = self._stack.enter_context(open(tmp, "wb"))
        os.chmod(tmp, 0o644)  # a data set is for reading by others; the temp file starts private
        self.paths.append(path)
        self._count = 0

    def _finish_shard(self, exc: tuple | None = None) -> None:
        """Commit the open shard, or with ``exc`` (an exception in flight) discard it."""
        if self._file is None or self._stack is None:
            return
        file, stack, self._file, self._stack = self._file, self._stack, None, None
        if exc is None:
            file.write(tar.END_OF_ARCHIVE)
            stack.close()  # closes the file, then renames it into place
        else:
            self.paths.pop()
            stack.__exit__(*exc)
