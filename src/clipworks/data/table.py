"""CSV/TSV of (image path, caption[, label]) rows — open_clip's ``--train-data x.csv`` layout."""

from __future__ import annotations

import csv
from pathlib import Path

from ..image.decode import load_image
from .pairs import DataError, Pair

_EXISTENCE_PROBE = 32  # rows checked at open: a wrong image folder shows up before training, not as 100% skips


class TableSource:
    """One sample per row; image paths are relative to the table's folder unless absolute.

    An optional integer ``label`` column becomes ``Pair.label``; a ``classes.txt`` beside the table
    (one name per line, as ``clipworks data --format csv`` writes) becomes ``class_names``.
    """

    def __init__(self, path: str | Path, img_key: str = "filepath", caption_key: str = "title",
                 separator: str | None = None, label_key: str = "label"):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        sep = separator or ("\t" if self.path.suffix.lower() == ".tsv" else ",")
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f, delimiter=sep))
        if not rows or not any(cell.strip() for cell in rows[0]):
            raise DataError(f"{self.path} is empty (no header row)")
        header, body = [c.strip() for c in rows[0]], rows[1:]
        for key, flag in ((img_key, "csv_img_key"), (caption_key, "csv_caption_key")):
            if key not in header:
                raise DataError(f"{self.path} has no column {key!r} (columns: {', '.join(map(repr, header))}); "
                                f"set {flag} / --{flag.replace('_', '-')} to the right one"
                                + (f" or check the separator ({sep!r} was used)" if len(header) == 1 else ""))
        if not body:
            raise DataError(f"{self.path} has a header but no rows: zero samples")
        col_img, col_cap = header.index(img_key), header.index(caption_key)
        col_label = header.index(label_key) if label_key in header else None
        folder = self.path.parent
        self.images: list[Path] = []
        self.captions: list[str] = []
        self.labels: list[int] | None = [] if col_label is not None else None
        for line, row in enumerate(body, start=2):
            if len(row) != len(header):
                raise DataError(f"{self.path} line {line}: {len(row)} fields, the header has {len(header)}")
            image, caption = row[col_img].strip(), " ".join(row[col_cap].split())
            if not image:
                raise DataError(f"{self.path} line {line}: empty {img_key!r}")
            if not caption:
                raise DataError(f"{self.path} line {line}: empty {caption_key!r}")
            self.images.append(folder / image)
            self.captions.append(caption)
            if self.labels is not None:
                try:
                    self.labels.append(int(row[col_label]))
                except ValueError:
                    raise DataError(f"{self.path} line {line}: {label_key!r} is {row[col_label]!r}, "
                                    "not an integer class id") from None
        probe = list(dict.fromkeys(self.images[:_EXISTENCE_PROBE]))
        if not any(p.is_file() for p in probe):
            raise DataError(f"{self.path}: none of the first {len(probe)} files in column {img_key!r} exist, e.g. "
                            f"{probe[0]} (relative paths are read from {folder})")
        classes = folder / "classes.txt"
        self.class_names = classes.read_text(encoding="utf-8").splitlines() if classes.is_file() else None
        self.description = f"{self.path} ({len(self.images)} rows)"

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int) -> Pair:
        label = self.labels[index] if self.labels is not None else None
        return Pair(load_image(self.images[index]), (self.captions[index],), label, str(self.images[index]))
