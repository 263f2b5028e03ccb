"""Thresholds from a small labelled set: the lowest threshold whose precision reaches a target.

An image is flagged when its score is at or above the threshold, so the candidates are the labelled scores
themselves. Recall only falls as the threshold rises, so the lowest threshold that reaches the precision target is
the one with the best recall among those that do. Precision is not monotone in the threshold: a higher threshold
may fall below the target again; the lowest one that reaches it is the answer all the same.

Labels file (CSV, header ``image,<concept>,<concept>…``): one row per labelled image, 1/0 (or true/false, yes/no)
per concept, blank where unknown; relative image paths are relative to the CSV's folder.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MissingFileError, UsageError

TRUE, FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}


@dataclass(frozen=True)
class Calibration:
    concept: str
    threshold: float
    precision: float   # on the labelled set, flagging scores >= threshold
    recall: float
    flagged: int       # labelled images at or above the threshold
    positives: int     # labelled positives
    labelled: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(scores: np.ndarray, labels: np.ndarray, target_precision: float, concept: str = "concept") -> Calibration:
    """The lowest threshold whose precision on (``scores``, ``labels``) reaches ``target_precision``.

    Raises UsageError naming ``concept`` and the best precision reachable when no threshold reaches the target.
    """
    if isinstance(target_precision, bool) or not isinstance(target_precision, (int, float)) \
            or not 0 < target_precision <= 1:
        raise UsageError(f"target precision must be in (0, 1], got {target_precision!r}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise UsageError(f"concept {concept!r}: labels must be 0/1 or booleans")
        y = y.astype(bool)
    if s.shape != y.shape:
        raise UsageError(f"concept {concept!r}: {s.size} scores but {y.size} labels")
    if not np.isfinite(s).all():
        raise UsageError(f"concept {concept!r}: scores contain NaN or infinity")
    positives = int(y.sum())
    if positives == 0:
        raise UsageError(f"concept {concept!r}: the labelled set has no positive example to calibrate on "
                         f"({s.size} labelled)")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each distinct score, descending
    precision = tp[ends] / (ends + 1)
    reached = np.flatnonzero(precision >= target_precision - 1e-12)
    if reached.size == 0:
        best = int(np.argmax(precision))
        raise UsageError(f"concept {concept!r}: no threshold reaches precision {target_precision:g} on the "
                         f"{s.size} labelled images; the best is {precision[best]:.3f} (threshold "
                         f"{s[ends[best]]:.4f}, recall {tp[ends[best]] / positives:.3f})")
    k = ends[reached[-1]]  # the lowest such threshold: scores are descending
    return Calibration(concept, float(s[k]), float(precision[reached[-1]]), float(tp[k] / positives), int(k + 1),
                       positives, int(s.size))


@dataclass(frozen=True)
class Labels:
    paths: list[Path]                     # resolved, one per row
    values: dict[str, np.ndarray]         # concept → float [rows]: 1, 0, or NaN where unknown

    def for_concept(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(row indices with a label, the labels as bool)."""
        v = self.values[name]
        rows = np.flatnonzero(~np.isnan(v))
        return rows, v[rows].astype(bool)


def load_labels(path: str | Path) -> Labels:
    """A labels CSV; errors name the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"labels file {path}: no such file")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or not rows[0] or rows[0][0].strip().lower() != "image" or len(rows[0]) < 2:
        raise ConfigError(f"{path}: line 1 must be the header 'image,<concept>,<concept>…'")
    header = [h.strip() for h in rows[0]]
    names = header[1:]
    if len(set(names)) != len(names) or "" in names:
        raise ConfigError(f"{path}: line 1: concept columns must be named and distinct, got {names}")
    values = {n: np.full(len(rows) - 1, np.nan) for n in names}
    paths: list[Path] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}: line {line}: expected {len(header)} fields, got {len(row)}")
        image = row[0].strip()
        if not image:
            raise ConfigError(f"{path}: line {line}: no image path")
        p = Path(image)
        paths.append((p if p.is_absolute() else path.parent / p).resolve())
        for name, cell in zip(names, row[1:]):
            cell = cell.strip().lower()
            if cell in TRUE:
                values[name][line - 2] = 1.0
            elif cell in FALSE:
                values[name][line - 2] = 0.0
            elif cell:
                raise ConfigError(f"{path}: line {line}, column {name!r}: {cell!r} is not a label "
                                  "(1/0, true/false, yes/no, or blank for unknown)")
    if not paths:
        raise ConfigError(f"{path}: no labelled images")
    return Labels(paths, values)
