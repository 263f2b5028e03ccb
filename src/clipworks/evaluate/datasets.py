"""Evaluation data: labelled image sets (zero-shot, linear probe) and captioned image sets (retrieval).

Labelled: Fashion-MNIST (pixels in memory, exactly as the trainer reads them), an image-folder tree (class =
subfolder, torchvision ``ImageFolder``-style), or a CSV of (path, label). Captioned: a CSV/TSV/JSONL of (image,
caption) rows where an image may repeat (several captions per image), or a folder of images with ``.txt``
sidecars (one caption per line). Everything is checked at open: errors name the file, and the row where one is bad.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import FASHION_MNIST_TEMPLATES, DataError, FolderSource, open_source
from ..data.fashion_mnist import idx_file
from ..data.folder import image_files
from ..errors import MissingFileError, UsageError
from ..image.decode import IMAGE_SUFFIXES
from ..zeroshot.classifier import read_class_names as zeroshot_class_names

LABELLED_KINDS = "'fashion-mnist' (or 'fashion-mnist:test'), a folder with one subfolder per class, or a .csv/.tsv of (path, label)"
CAPTIONED_KINDS = "a .csv/.tsv/.jsonl of (image, caption) rows, or a folder of images with same-stem .txt captions"
IMAGE_KEYS = ("filepath", "image", "image_path", "path", "file", "filename")
CAPTION_KEYS = ("title", "caption", "captions", "text")


@dataclass
class LabelledImages:
    """Images with integer labels in ``[0, len(class_names))``: uint8 ``pixels`` in memory, or image ``paths``.

    ``named`` is False when the class names are only label ids (a CSV of integer labels with no names file):
    fine for a linear probe, meaningless for zero-shot. ``templates`` is the dataset's own prompt set, if any.
    """

    name: str  # short, for file names and reports: "fashion-mnist:test", a folder or CSV path
    class_names: list[str]
    labels: np.ndarray  # int64 [N]
    pixels: torch.Tensor | None = None  # uint8 [N, H, W] or [N, C, H, W]
    paths: list[Path] | None = None
    named: bool = True
    templates: tuple[str, ...] | None = None
    description: str = ""

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class CaptionedImages:
    """Unique images and their captions; ``caption_image[j]`` is the index in ``images`` of caption j's image."""

    name: str
    images: list[Path]
    captions: list[str]
    caption_image: np.ndarray  # int64 [M]
    description: str = ""
    left_out: list[Path] = field(default_factory=list)  # images found without a caption

    def __len__(self) -> int:
        return len(self.captions)


# ---------------------------------------------------------------------------------------------- labelled sets


def fashion_mnist(split: str = "test", folder: str | Path | None = None) -> LabelledImages:
    """Fashion-MNIST's train or test split through ``clipworks.data`` (the Debian files, or ``folder``)."""
    source = open_source(folder if folder is not None else f"fashion-mnist:{split}", split=split)
    return LabelledImages(
        name=f"fashion-mnist:{split}", class_names=list(source.class_names or []),
        labels=source.labels.numpy().astype(np.int64), pixels=source.images,  # type: ignore[attr-defined]
        templates=tuple(FASHION_MNIST_TEMPLATES), description=source.description)


def read_class_names(path: str | Path, folders: Sequence[str] | None = None) -> list[str]:
    """Class names from a file: one per line (in class-id order; for a folder tree, sorted folder order), or a
    JSON object mapping folder name (or label) → class name."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"class names file {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(mapping, dict) or folders is None:
            raise DataError(f"{path}: a JSON class names file maps folder name → class name, for a folder tree")
        missing = [f for f in folders if f not in mapping]
        if missing:
            raise DataError(f"{path}: no name for class folder(s) {', '.join(map(repr, missing))}")
        return [str(mapping[f]) for f in folders]
    names = list(zeroshot_class_names(path))
    if folders is not None and len(names) != len(folders):
        raise DataError(f"{path}: {len(names)} class names for {len(folders)} class folders (one name per line, in "
                        f"sorted folder order: {', '.join(folders[:5])}{', …' if len(folders) > 5 else ''})")
    return names


def image_folder(root: str | Path, class_names: str | Path | None = None) -> LabelledImages:
    """``root/<class>/**/<image>``: classes are the sorted subfolders (``ImageFolder``'s ids), named by the folder
    name with ``_`` → space unless ``class_names`` (a file) says otherwise. Hidden folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such directory")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class subfolders (expected {root}/<class name>/<images>)")
    paths: list[Path] = []
    labels: list[int] = []
    empty = []
    for label, folder in enumerate(folders):
        files = image_files(root / folder)
        if not files:
            empty.append(folder)
        paths.extend(files)
        labels.extend([label] * len(files))
    if empty:
        raise DataError(f"{root}: class folder(s) without images: {', '.join(map(repr, empty))}")
    names = read_class_names(class_names, folders) if class_names is not None else [f.replace("_", " ") for f in folders]
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    description = f"{root} ({len(paths)} images, {len(folders)} classes" + (
        f"; {len(loose)} images outside class folders ignored)" if loose else ")")
    return LabelledImages(name=str(root), class_names=names, labels=np.array(labels, dtype=np.int64), paths=paths,
                          description=description)


def _read_table(path: Path, separator: str | None) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, cells)]) of a CSV/TSV; blank lines skipped."""
    sep = separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=sep)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot be read as a {'TSV' if sep == chr(9) else 'CSV'} file ({e})") from None
    if not rows:
        raise DataError(f"{path} is empty (no header row)")
    header = [c.strip() for c in rows[0][1]]
    if not rows[1:]:
        raise DataError(f"{path} has a header but no rows")
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
    return header, rows[1:]


def _column(path: Path, header: list[str], key: str | None, candidates: Sequence[str], what: str, flag: str) -> int:
    if key is None:
        key = next((c for c in candidates if c in header), None)
        if key is None:
            raise DataError(f"{path}: no {what} column (looked for {', '.join(map(repr, candidates))}; columns: "
                            f"{', '.join(map(repr, header))}); name it with {flag}")
    if key not in header:
        raise DataError(f"{path} has no column {key!r} (columns: {', '.join(map(repr, header))}); name it with {flag}"
                        + (" or check the separator" if len(header) == 1 else ""))
    return header.index(key)


def _resolve(table: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else table.parent / p


def csv_labels(path: str | Path, image_key: str | None = None, label_key: str = "label",
               class_names: str | Path | None = None, separator: str | None = None) -> LabelledImages:
    """A CSV/TSV of (image path, label) rows; paths are relative to the CSV's folder unless absolute.

    Labels are class names (ids in sorted name order, or in ``class_names`` file order) or integer ids (named by
    ``class_names`` or a ``classes.txt`` beside the CSV, else left unnamed). Every image must exist.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    header, rows = _read_table(path, separator)
    col_img = _column(path, header, image_key, IMAGE_KEYS, "image path", "--image-key")
    col_label = _column(path, header, label_key, (label_key,), "label", "--label-key")
    images, raw = [], []
    for line, row in rows:
        image, label = row[col_img].strip(), row[col_label].strip()
        if not image:
            raise DataError(f"{path} line {line}: empty {header[col_img]!r}")
        if not label:
            raise DataError(f"{path} line {line}: empty {header[col_label]!r}")
        file = _resolve(path, image)
        if not file.is_file():
            raise MissingFileError(f"{path} line {line}: image {file} does not exist"
                                   + ("" if Path(image).is_absolute() else f" (relative paths are read from {path.parent})"))
        images.append(file)
        raw.append((line, label))
    names_file = Path(class_names) if class_names is not None else None
    if names_file is None and (path.parent / "classes.txt").is_file():
        names_file = path.parent / "classes.txt"
    numeric = all(label.lstrip("-").isdigit() for _, label in raw)
    named = True
    if numeric:
        ids = [int(label) for _, label in raw]
        if names_file is not None:
            names = read_class_names(names_file)
        else:
            names, named = [str(i) for i in range(max(ids) + 1)], False
        for (line, _), i in zip(raw, ids):
            if not 0 <= i < len(names):
                raise DataError(f"{path} line {line}: label {i} is outside 0..{len(names) - 1}"
                                + (f" ({len(names)} names in {names_file})" if names_file else ""))
    else:
        names = read_class_names(names_file) if names_file is not None else sorted({label for _, label in raw})
        index = {n: i for i, n in enumerate(names)}
        ids = []
        for line, label in raw:
            if label not in index:
                raise DataError(f"{path} line {line}: label {label!r} is not one of the {len(names)} classes in {names_file}")
            ids.append(index[label])
    return LabelledImages(name=str(path), class_names=names, labels=np.array(ids, dtype=np.int64), paths=images,
                          named=named, description=f"{path} ({len(images)} images, {len(names)} classes)")


def open_labelled(spec: str | Path, split: str = "test", image_key: str | None = None, label_key: str = "label",
                  class_names: str | Path | None = None, separator: str | None = None) -> LabelledImages:
    """``fashion-mnist[:split]``, a folder of Fashion-MNIST IDX files, a class-folder tree, or a CSV/TSV of labels.
    ``split`` applies to Fashion-MNIST only."""
    text = str(spec)
    name, _, suffix = text.partition(":")
    if name in ("fashion-mnist", "fashion_mnist") and not Path(text).exists():
        return fashion_mnist(suffix or split)
    path = Path(spec)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or directory (expected {LABELLED_KINDS})")
    if path.is_dir():
        if any(idx_file(path, s, "images") for s in ("train", "test")):
            return fashion_mnist(split, folder=path)
        return image_folder(path, class_names)
    if path.suffix.lower() in (".csv", ".tsv"):
        return csv_labels(path, image_key, label_key, class_names, separator)
    raise DataError(f"{path}: unknown kind of labelled data {path.suffix or '(no extension)'!r} (expected {LABELLED_KINDS})")


# --------------------------------------------------------------------------------------------- captioned sets


def _group(name: str, rows: list[tuple[Path, str]], description: str) -> CaptionedImages:
    """Rows of (image, caption) → unique images (first-appearance order) and each caption's image index."""
    index: dict[Path, int] = {}
    caption_image = [index.setdefault(image, len(index)) for image, _ in rows]
    return CaptionedImages(name=name, images=list(index), captions=[c for _, c in rows],
                           caption_image=np.array(caption_image, dtype=np.int64),
                           description=f"{description} ({len(index)} images, {len(rows)} captions)")


def _captions_of(value: object, where: str, key: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: {key!r} must be a caption string or a list of them, got {value!r}")
    captions = [" ".join(v.split()) for v in values]
    if not all(captions):
        raise DataError(f"{where}: empty caption in {key!r}")
    return captions


def caption_table(path: str | Path, image_key: str | None = None, caption_key: str | None = None,
                  separator: str | None = None) -> CaptionedImages:
    """(image, caption) rows from a CSV/TSV, or JSONL objects (whose caption may be a list: COCO's five per
    image). An image may appear in several rows; paths are relative to the table's folder unless absolute."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file")
    rows: list[tuple[Path, str]] = []
    entries: list[tuple[int, str, object]] = []  # (line, image, caption value)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        keys: tuple[str, str] | None = None
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {number}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path} line {number}: not a JSON object")
            if keys is None:
                header = list(obj)
                keys = (header[_column(path, header, image_key, IMAGE_KEYS, "image path", "--image-key")],
                        header[_column(path, header, caption_key, CAPTION_KEYS, "caption", "--caption-key")])
            for key in keys:
                if key not in obj:
                    raise DataError(f"{path} line {number}: no {key!r} key")
            if not isinstance(obj[keys[0]], str):
                raise DataError(f"{path} line {number}: {keys[0]!r} must be a path string, got {obj[keys[0]]!r}")
            entries.append((number, obj[keys[0]], obj[keys[1]]))
        if keys is None:
            raise DataError(f"{path} is empty: no (image, caption) objects")
        caption_name = keys[1]
    else:
        header, table = _read_table(path, separator)
        col_img = _column(path, header, image_key, IMAGE_KEYS, "image path", "--image-key")
        col_cap = _column(path, header, caption_key, CAPTION_KEYS, "caption", "--caption-key")
        caption_name = header[col_cap]
        entries = [(line, row[col_img], row[col_cap]) for line, row in table]
    checked: dict[str, Path] = {}
    for line, image, value in entries:
        where = f"{path} line {line}"
        if not image.strip():
            raise DataError(f"{where}: empty image path")
        if image not in checked:
            file = _resolve(path, image.strip())
            if not file.is_file():
                raise MissingFileError(f"{where}: image {file} does not exist"
                                       + ("" if Path(image).is_absolute() else f" (relative paths are read from {path.parent})"))
            checked[image] = file
        rows.extend((checked[image], c) for c in _captions_of(value, where, caption_name))
    return _group(str(path), rows, str(path))


def caption_folder(root: str | Path) -> CaptionedImages:
    """Images under ``root`` (recursively) with same-stem ``.txt`` sidecars, one caption per line; images with no
    sidecar are left out and counted in ``left_out``."""
    source = FolderSource(root)  # DataError naming the folder when nothing is captioned
    rows = [(image, caption) for image, captions in zip(source.images, source.captions) for caption in captions]
    result = _group(str(root), rows, str(root))
    result.left_out = list(source.uncaptioned)
    if source.uncaptioned:
        result.description += f"; {len(source.uncaptioned)} images without a .txt sidecar left out"
    return result


def open_captioned(spec: str | Path, image_key: str | None = None, caption_key: str | None = None,
                   separator: str | None = None) -> CaptionedImages:
    path = Path(spec)
    if not path.exists():
        raise MissingFileError(f"{path}: no such file or directory (expected {CAPTIONED_KINDS})")
    if path.is_dir():
        return caption_folder(path)
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson"):
        return caption_table(path, image_key, caption_key, separator)
    raise DataError(f"{path}: unknown kind of caption data {path.suffix or '(no extension)'!r} (expected {CAPTIONED_KINDS})")


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"{where}: labels must be in 0..{num_classes - 1}, found {int(labels.min())}..{int(labels.max())}")
