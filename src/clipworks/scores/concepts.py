"""Content filtering by concepts described in words: score images against each concept's prompts, flag those at or
above the concept's threshold.

A concept file is JSON or TOML, one table per concept::

    [weapon]
    prompts = ["a photo of a gun", "a photo of a rifle", "a knife held as a weapon"]
    negatives = ["a toy gun", "a kitchen knife on a cutting board"]   # optional
    threshold = 0.02                                                  # optional; --calibrate finds one

The score of an image for a concept is ``cos(image, P) − max_j cos(image, N_j)``: ``P`` the concept's prompts
ensembled as zero-shot classifiers ensemble templates (normalise each embedding, average, renormalise), ``N_j`` each
negative prompt on its own — each is a separate "looks like it but is not" case, so the image is compared with the
closest one. Without negatives the score is the plain cosine (as the LAION and Stable Diffusion safety checkers
threshold concept cosines). A margin rather than a softmax over positive and negatives: it needs no temperature,
works with and without negatives, and a threshold of 0 has a meaning (closer to the concept than to any negative),
which is the default when negatives are given. Cosines are model-specific, so thresholds are too: calibrate them on a
small labelled set (``scores.calibrate``) rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, UsageError
from ..modelref import ModelRef
from ..progress import Progress
from .calibrate import Calibration, calibrate
from .inputs import Images, image_features, number, read_settings, text_list, write_settings

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

FIELDS = ("prompts", "negatives", "threshold")


@dataclass(frozen=True)
class Concept:
    name: str
    prompts: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    threshold: float | None = None  # None: not flagged until calibrated (0.0 by default when negatives exist)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", text_list(list(self.prompts), f"concept {self.name!r}: prompts"))
        object.__setattr__(self, "negatives", text_list(list(self.negatives), f"concept {self.name!r}: negatives",
                                                        allow_empty=True))
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a concept needs a name, got {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": list(self.prompts), "negatives": list(self.negatives) or None, "threshold": self.threshold}


def parse_concepts(data: dict[str, Any], where: str = "concepts") -> list[Concept]:
    """Concepts from a parsed concept file; errors name the file, the concept and the field."""
    if not data:
        raise ConfigError(f"{where}: no concepts")
    out = []
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: concept {name!r} must be a table with 'prompts' (and optional 'negatives', "
                              f"'threshold'), got {table!r}")
        unknown = sorted(set(table) - set(FIELDS))
        if unknown:
            raise ConfigError(f"{where}: concept {name!r} has unknown field(s) {', '.join(unknown)}; "
                              f"known: {', '.join(FIELDS)}")
        if "prompts" not in table:
            raise ConfigError(f"{where}: concept {name!r} has no 'prompts'")
        prompts = text_list(table["prompts"], f"{where}: {name}.prompts")
        negatives = text_list(table.get("negatives", []), f"{where}: {name}.negatives", allow_empty=True)
        threshold = table.get("threshold")
        threshold = number(threshold, f"{where}: {name}.threshold") if threshold is not None else (0.0 if negatives else None)
        out.append(Concept(name, prompts, negatives, threshold))
    return out


def load_concepts(path: str | Path) -> list[Concept]:
    """Concepts from a ``.json`` or ``.toml`` concept file."""
    return parse_concepts(read_settings(path, "concepts"), str(path))


def save_concepts(concepts: Sequence[Concept], path: str | Path) -> None:
    """Write a concept file (``.json`` or ``.toml``) atomically; TOML comments of an older file are not kept."""
    write_settings(path, {c.name: c.to_dict() for c in concepts})


def with_thresholds(concepts: Sequence[Concept], thresholds: dict[str, float]) -> list[Concept]:
    unknown = sorted(set(thresholds) - {c.name for c in concepts})
    if unknown:
        raise UsageError(f"no concept named {', '.join(map(repr, unknown))}")
    return [replace(c, threshold=thresholds[c.name]) if c.name in thresholds else c for c in concepts]


@dataclass(frozen=True)
class ConceptScores:
    concepts: tuple[Concept, ...]
    scores: np.ndarray  # float32 [N, C]
    model: ModelRef | None = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    @property
    def flags(self) -> np.ndarray:
        """``bool [N, C]``: score at or above the concept's threshold (never for a concept without one)."""
        thresholds = np.array([np.inf if c.threshold is None else c.threshold for c in self.concepts])
        return self.scores >= thresholds[None, :]

    def flagged(self) -> list[tuple[int, str, float]]:
        """(image index, concept name, score) of every flag, by image then concept order."""
        rows, cols = np.nonzero(self.flags)
        return [(int(i), self.concepts[j].name, float(self.scores[i, j])) for i, j in zip(rows, cols)]


class ConceptFilter:
    """Concepts with their prompt embeddings, computed once: ``scores(images)`` for any number of calls."""

    def __init__(self, encoder: Encoder, concepts: Sequence[Concept], progress: Progress | None = None):
        if not concepts:
            raise UsageError("a concept filter needs at least one concept")
        names = [c.name for c in concepts]
        if len(set(names)) != len(names):
            raise UsageError(f"concept {next(n for n in names if names.count(n) > 1)!r} is given twice")
        self.encoder = encoder
        self.concepts = tuple(concepts)
        prompts = [p for c in concepts for p in (*c.prompts, *c.negatives)]
        embedded = iter(encoder.encode_text(prompts, progress=progress))
        positives, self.negatives = [], []
        for c in concepts:
            mean = np.mean([next(embedded) for _ in c.prompts], axis=0)
            positives.append(mean / np.linalg.norm(mean))
            self.negatives.append(np.stack([next(embedded) for _ in c.negatives]) if c.negatives else None)
        self.positives = np.stack(positives).astype(np.float32)  # [C, D]

    def scores(self, images: Images) -> ConceptScores:
        """Per image and concept ``cos(image, P) − max_j cos(image, N_j)`` (or ``cos(image, P)`` without negatives)."""
        img = image_features(self.encoder, images)
        out = img @ self.positives.T
        for j, neg in enumerate(self.negatives):
            if neg is not None:
                out[:, j] -= (img @ neg.T).max(axis=1)
        return ConceptScores(self.concepts, out.astype(np.float32), self.encoder.ref)

    def calibrate(self, images: Images, labels: Mapping[str, np.ndarray], target_precision: float) -> dict[str, Calibration]:
        """Set each labelled concept's threshold to the lowest whose precision on ``images`` reaches the target.

        ``labels``: concept name → per image 1/0 (or bool), NaN where unknown. Concepts without labels keep theirs.
        """
        unknown = sorted(set(labels) - set(self.names))
        if unknown:
            raise UsageError(f"labels for unknown concept(s) {', '.join(map(repr, unknown))}; the concepts are "
                             f"{', '.join(self.names)}")
        scores = self.scores(images).scores
        out = {}
        for name, values in labels.items():
            v = np.asarray(values, dtype=np.float64).reshape(-1)
            if v.size != len(scores):
                raise UsageError(f"concept {name!r}: {v.size} labels for {len(scores)} images")
            known = ~np.isnan(v)
            out[name] = calibrate(scores[known, self.names.index(name)], v[known], target_precision, name)
        self.concepts = tuple(with_thresholds(self.concepts, {n: c.threshold for n, c in out.items()}))
        return out

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]


def concept_scores(encoder: Encoder, images: Images, concepts: Sequence[Concept]) -> ConceptScores:
    """One-off: build the filter and score ``images`` (PIL images or their ``[N, D]`` embeddings)."""
    return ConceptFilter(encoder, concepts).scores(images)
