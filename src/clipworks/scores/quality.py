"""CLIP-IQA-style image quality and "look and feel" from antonym prompt pairs (Wang, Chan & Loy, AAAI 2023).

For each pair ("Good photo.", "Bad photo.") the image's logits to the two prompts, ``scale · cos``, go through a
softmax over the pair; the probability of the positive prompt is the attribute's score in [0, 1].

``scale`` is 100 by default, as CLIP-IQA, pyiqa and torchmetrics' ``CLIPImageQualityAssessment`` compute it (100 is
also where trained OpenAI/open_clip models clamp their logit scale), so scores compare across models and with those
tools. ``scale="model"`` uses the model's own learned scale instead (a SigLIP model's bias cancels in the pair).

The built-in pairs and names are torchmetrics' (CLIP-IQA's paper attributes), with "colorfulness" spelled so
(torchmetrics writes "colorfullness"; that spelling is accepted too). Unlike CLIP-IQA's ResNet-50 run without
positional embeddings at the image's own resolution, images here go through the model's usual preprocessing.
pyiqa's "clipiqa" averages three pairs (good/bad photo, high/low quality, sharp/blurry photo): pass them as pairs and
average if you want its number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import ConfigError, UsageError
from ..progress import Progress
from .inputs import Images, image_features, read_settings, text_list

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

PROMPT_PAIRS: dict[str, tuple[str, str]] = {
    "quality": ("Good photo.", "Bad photo."),
    "brightness": ("Bright photo.", "Dark photo."),
    "noisiness": ("Clean photo.", "Noisy photo."),
    "colorfulness": ("Colorful photo.", "Dull photo."),
    "sharpness": ("Sharp photo.", "Blurry photo."),
    "contrast": ("High contrast photo.", "Low contrast photo."),
    "complexity": ("Complex photo.", "Simple photo."),
    "natural": ("Natural photo.", "Synthetic photo."),
    "happy": ("Happy photo.", "Sad photo."),
    "scary": ("Scary photo.", "Peaceful photo."),
    "new": ("New photo.", "Old photo."),
    "warm": ("Warm photo.", "Cold photo."),
    "real": ("Real photo.", "Abstract photo."),
    "beautiful": ("Beautiful photo.", "Ugly photo."),
    "lonely": ("Lonely photo.", "Sociable photo."),
    "relaxing": ("Relaxing photo.", "Stressful photo."),
}
ALIASES = {"colorfullness": "colorfulness"}
# The "quality" attributes of the CLIP-IQA paper (the rest are its "abstract perception" ones).
DEFAULT_PAIRS = ("quality", "brightness", "noisiness", "colorfulness", "sharpness", "contrast")
CLIP_IQA_SCALE = 100.0

PairSpec = Sequence[str | tuple[str, str]] | Mapping[str, tuple[str, str]]


def resolve_pairs(pairs: PairSpec) -> dict[str, tuple[str, str]]:
    """Attribute name → (positive, negative) prompt: built-in names, (positive, negative) tuples (named
    ``user_defined_<i>`` as torchmetrics names them), or a mapping of names to pairs."""
    items: list[tuple[str, object]] = []
    if isinstance(pairs, Mapping):
        items = list(pairs.items())
    else:
        user = 0
        for p in [pairs] if isinstance(pairs, str) else pairs:
            if isinstance(p, str):
                name = ALIASES.get(p, p)
                if name not in PROMPT_PAIRS:
                    raise UsageError(f"unknown quality attribute {p!r}; built-in: {', '.join(PROMPT_PAIRS)} "
                                     "(or give a (positive, negative) pair)")
                items.append((name, PROMPT_PAIRS[name]))
            else:
                items.append((f"user_defined_{user}", p))
                user += 1
    out: dict[str, tuple[str, str]] = {}
    for name, pair in items:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) and t.strip() for t in pair)):
            raise UsageError(f"quality attribute {name!r}: expected a (positive, negative) pair of prompts, got {pair!r}")
        if name in out:
            raise UsageError(f"quality attribute {name!r} is given twice")
        out[name] = (pair[0], pair[1])
    if not out:
        raise UsageError("quality needs at least one prompt pair")
    return out


def load_pairs(path: str | Path) -> dict[str, tuple[str, str]]:
    """A pairs file: ``{"name": ["positive prompt", "negative prompt"], …}`` in JSON, or ``name = [pos, neg]`` in
    TOML; a built-in name may map to ``true`` to include it unchanged."""
    data = read_settings(path, "prompt pairs")
    out: dict[str, tuple[str, str]] = {}
    for name, value in data.items():
        where = f"{path}: {name}"
        if value is True and ALIASES.get(name, name) in PROMPT_PAIRS:
            out[ALIASES.get(name, name)] = PROMPT_PAIRS[ALIASES.get(name, name)]
            continue
        pair = text_list(value, where)
        if len(pair) != 2:
            raise ConfigError(f"{where}: expected [positive prompt, negative prompt], got {len(pair)} prompts")
        out[name] = (pair[0], pair[1])
    if not out:
        raise ConfigError(f"{path}: no prompt pairs")
    return out


def quality(encoder: Encoder, images: Images, pairs: PairSpec = DEFAULT_PAIRS,
            scale: float | Literal["model"] = CLIP_IQA_SCALE, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Attribute name → ``float32 [N]``: per image, the probability of the pair's positive prompt.

    ``images``: PIL images, or their embeddings from this encoder (``float32 [N, D]``).
    """
    resolved = resolve_pairs(pairs)
    if scale == "model":
        factor = encoder.logit_scale
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0:
        factor = float(scale)
    else:
        raise UsageError(f"scale must be a positive number or 'model', got {scale!r}")
    img = image_features(encoder, images)
    prompts = [t for pair in resolved.values() for t in pair]
    txt = encoder.encode_text(prompts, progress=progress).reshape(len(resolved), 2, -1)
    logits = factor * np.einsum("nd,apd->nap", img.astype(np.float64), txt.astype(np.float64))
    # softmax over the pair, first entry: a logistic of the difference, stable for any scale
    positive = 1.0 / (1.0 + np.exp(logits[:, :, 1] - logits[:, :, 0]))
    return {name: positive[:, a].astype(np.float32) for a, name in enumerate(resolved)}
