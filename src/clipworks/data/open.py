"""``open_source``: one string or path → the right source, checked at open so bad data fails before training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .fashion_mnist import FashionMNIST, idx_file
from .folder import FolderSource, image_files
from .openclipart import OpenClipart
from .pairs import DataError, PairSource
from .shards import ShardSource, shard_paths
from .table import TableSource

KINDS = ("a .csv/.tsv table, a folder of images with .txt sidecars, a .tar shard, a folder of .tar shards, "
         "a shard pattern like shards-{000000..000009}.tar, 'fashion-mnist[:test]' or a folder of its IDX files, "
         "'openclipart' or a folder of .svg files")


def open_source(
    spec: str | Path,
    *,
    split: str = "train",
    csv_img_key: str = "filepath",
    csv_caption_key: str = "title",
    csv_separator: str | None = None,
    templates: Sequence[str] | None = None,
    image_size: int = 224,
) -> PairSource:
    """Open ``spec`` as a pair source (see ``KINDS``).

    ``split`` picks Fashion-MNIST's train/test files; ``templates`` its captions; ``image_size`` the raster size
    of SVGs. Every structural problem — missing path, empty table, missing columns, images without captions,
    zero samples — raises DataError here, naming the path or column.
    """
    source = _open(spec, split, csv_img_key, csv_caption_key, csv_separator, templates, image_size)
    if templates is not None and not isinstance(source, FashionMNIST):
        raise DataError(f"{spec}: templates= only applies to Fashion-MNIST; this source has its own captions")
    return source


def _open(spec: str | Path, split: str, csv_img_key: str, csv_caption_key: str, csv_separator: str | None,
          templates: Sequence[str] | None, image_size: int) -> PairSource:
    text = str(spec)
    name, _, suffix = text.partition(":")
    if name in ("fashion-mnist", "fashion_mnist") and not Path(text).exists():
        return FashionMNIST(split=suffix or split, templates=templates)
    if text == "openclipart" and not Path(text).exists():
        return OpenClipart(size=image_size)
    if "{" in text and "}" in text:
        return ShardSource(shard_paths(text), name=text)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory (expected {KINDS})")
    if path.is_file():
        kind = path.suffix.lower()
        if kind in (".csv", ".tsv"):
            return TableSource(path, csv_img_key, csv_caption_key, csv_separator)
        if kind == ".tar":
            return ShardSource([path])
        raise DataError(f"{path}: unknown kind of data file {kind or '(no extension)'!r} (expected {KINDS})")
    if any(idx_file(path, s, "images") for s in ("train", "test")):
        return FashionMNIST(path, split=split, templates=templates)
    shards = shard_paths(path)
    if shards:
        return ShardSource(shards, name=str(path))
    if image_files(path):
        return FolderSource(path)
    if any(path.rglob("*.svg")):
        return OpenClipart(path, size=image_size)
    raise DataError(f"{path}: no samples — the folder holds none of: images with .txt sidecars, .tar shards, "
                    "Fashion-MNIST IDX files, .svg files")
