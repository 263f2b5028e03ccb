"""Compositional evaluation: does the model prefer the true caption over its minimally changed twin?

Scores, all fractions in [0, 1], with ``s(i, c)`` the cosine similarity of image ``i`` and caption ``c`` of a probe:

- ``accuracy``: over every image of every probe, ``s(i, own caption) > s(i, twin)`` (SugarCrepe/ARO's 2-way
  image→text preference). Built-in probes render both scenes and count both directions, so a model that ignores
  the image (always preferring, say, "a square and a circle") scores exactly 0.5 on them, not 0 or 1.
- Winoground's scores over probes with two images (Thrush et al. 2022): ``text_score`` — each image prefers its
  own caption, ``s(0,0) > s(0,1)`` and ``s(1,1) > s(1,0)``; ``image_score`` — each caption prefers its own
  image, ``s(0,0) > s(1,0)`` and ``s(1,1) > s(0,1)``; ``group_score`` — both.

Comparisons are strict, as in Winoground's and SugarCrepe's code: a tie (a model that cannot tell the two apart)
is wrong. Chance for random scores: 0.5 for the preference, 0.25 / 0.25 / 1/6 for text / image / group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..progress import Progress
from .probes import Probe, check_categories, generate_probes

CHANCE: dict[str, float] = {"accuracy": 0.5, "text_score": 0.25, "image_score": 0.25, "group_score": 1 / 6}
WINOGROUND = ("text_score", "image_score", "group_score")


class TwoTowerEncoder(Protocol):
    """What scoring needs of a model: ``clipworks.Encoder`` is one; so is any object with these two methods."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def similarities(encoder: TwoTowerEncoder, probes: Sequence[Probe], progress: Progress | None = None,
                 batch_size: int | None = None) -> np.ndarray:
    """``float64 [len(probes), 2, 2]``: ``[p, i, c]`` is the cosine of probe ``p``'s image ``i`` and caption ``c``;
    NaN rows for a probe's missing second image. Images are rendered and encoded a batch at a time (``progress``
    counts images), captions once each."""
    texts = list(dict.fromkeys(c for p in probes for c in p.captions))
    row = {t: k for k, t in enumerate(texts)}
    text_features = _normalise(encoder.encode_text(texts)) if texts else np.zeros((0, 0))
    caption_rows = np.array([[row[c] for c in p.captions] for p in probes], dtype=np.int64).reshape(-1, 2)

    sims = np.full((len(probes), 2, 2), np.nan)
    slots = [(k, i) for k, p in enumerate(probes) for i in range(len(p.scenes))]
    batch = batch_size or getattr(encoder, "batch_size", 64)
    for start in range(0, len(slots), batch):
        chunk = slots[start : start + batch]
        images = [probes[k].image(i) for k, i in chunk]
        feats = _normalise(encoder.encode_images(images))
        for (k, i), f in zip(chunk, feats):
            sims[k, i] = text_features[caption_rows[k]] @ f
        if progress is not None:
            progress(len(chunk))
    return sims


def preference_correct(sims: np.ndarray) -> np.ndarray:
    """``bool [n, 2]``: image ``i`` prefers its own caption (False where the image is missing; see ``present``)."""
    own = np.stack([sims[:, 0, 0], sims[:, 1, 1]], axis=1)
    twin = np.stack([sims[:, 0, 1], sims[:, 1, 0]], axis=1)
    return own > twin  # NaN compares False


def winoground_correct(sims: np.ndarray) -> dict[str, np.ndarray]:
    """Per probe, ``bool [n]`` each: ``text_score``, ``image_score``, ``group_score`` as Winoground defines them."""
    c0_i0, c1_i0, c0_i1, c1_i1 = sims[:, 0, 0], sims[:, 0, 1], sims[:, 1, 0], sims[:, 1, 1]
    text = (c0_i0 > c1_i0) & (c1_i1 > c0_i1)
    image = (c0_i0 > c0_i1) & (c1_i1 > c1_i0)
    return {"text_score": text, "image_score": image, "group_score": text & image}


def summarise(sims: np.ndarray, kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """``n`` (probes), ``n_images``, ``accuracy``, and Winoground's three scores over the probes that have two
    images (``n_pairs``; absent when none has); with ``kinds``, the same per kind under ``by_kind``."""
    present = ~np.isnan(sims[:, :, 0])
    paired = present.all(axis=1)
    correct = preference_correct(sims)
    out: dict[str, Any] = {"n": len(sims), "n_images": int(present.sum()),
                           "accuracy": float(correct[present].mean()) if present.any() else float("nan")}
    if paired.any():
        out["n_pairs"] = int(paired.sum())
        out.update({k: float(v[paired].mean()) for k, v in winoground_correct(sims).items()})
    if kinds is not None:
        labels = np.asarray(kinds)
        out["by_kind"] = {kind: summarise(sims[labels == kind]) for kind in dict.fromkeys(kinds)}
    return out


def evaluate_compositional(encoder: TwoTowerEncoder, categories: Sequence[str] | str | None = None,
                           n_per_category: int = 200, seed: int = 0, size: int = 224,
                           progress: Progress | None = None) -> dict[str, Any]:
    """Generate the probes of each category (``generate_probes``), encode them, and score them.

    Returns ``{"task", "model"?, "seed", "n_per_category", "image_size", "chance", "categories": {name:
    summary}, "overall": summary}`` where a summary is ``summarise``'s (``overall`` pools every probe; with equal
    ``n`` per category it is the mean of the categories). ``progress`` counts images (two per probe).
    """
    names = check_categories(categories)
    probes = {c: generate_probes(c, n_per_category, seed, size) for c in names}
    flat = [p for c in names for p in probes[c]]
    sims = similarities(encoder, flat, progress)
    result: dict[str, Any] = {"task": "compositional"}
    ref = getattr(encoder, "ref", None)
    if ref is not None and hasattr(ref, "to_dict"):
        result["model"] = ref.to_dict()
    result.update({"seed": seed, "n_per_category": n_per_category, "image_size": size, "chance": dict(CHANCE)})
    result["categories"], start = {}, 0
    for c in names:
        block = sims[start : start + len(probes[c])]
        result["categories"][c] = summarise(block, [p.kind for p in probes[c]])
        start += len(probes[c])
    result["overall"] = summarise(sims)
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The summary as a markdown table in percent, with the chance row last."""
    cols = ("accuracy", *WINOGROUND)
    lines = ["| category | n | accuracy | text | image | group |", "|---|---:|---:|---:|---:|---:|"]

    def row(name: str, s: dict[str, Any]) -> str:
        cells = [f"{100 * s[k]:.1f}" if k in s else "–" for k in cols]
        return f"| {name} | {s['n']} | " + " | ".join(cells) + " |"

    lines += [row(name, s) for name, s in result["categories"].items()]
    lines.append(row("**overall**", result["overall"]))
    lines.append("| *chance* |  | " + " | ".join(f"{100 * result['chance'][k]:.1f}" for k in cols) + " |")
    return "\n".join(lines) + "\n"
