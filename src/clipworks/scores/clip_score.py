"""CLIP Score: how well each image matches its prompt (Hessel et al. 2021, "CLIPScore"; torchmetrics' ``CLIPScore``).

Per image–prompt pair ``w · max(cos(image, prompt), 0)``, and the mean over pairs. ``w = 100`` is torchmetrics'
scale (the number most text-to-image papers quote); ``w = 2.5`` is the CLIP-S paper's, which stretches the cosines
of real captions (about 0.2–0.4 for ViT-B/32) over roughly [0, 1].

Two deliberate differences from torchmetrics (1.9):

- **The clamp is per pair.** torchmetrics computes ``100 · cos`` per pair and clamps the *mean*:
  ``max(mean(100 · cos), 0)``. Here each pair is clamped first, as the CLIP-S paper defines it, so the mean is
  ``mean(w · max(cos, 0))``. The two agree exactly when every cosine is non-negative (the usual case with a
  trained model); with a negative pair torchmetrics lets it pull the mean down, here it counts as 0.
- **Long prompts keep their end token.** torchmetrics slices the token ids at 77, which drops CLIP's end-of-text
  token, and CLIP pools the text at that token — so an over-long prompt is pooled at an arbitrary token instead
  (the highest-id one with OpenAI's Hub configs; the start token, the same for every prompt, with newer ones):
  torchmetrics issue #2883, whose example drops from 26 to 17 one token past the limit (``tests/test_scores.py``
  shows two different long prompts scoring the same there). Here the model's own tokenizer
  truncates, keeping the end token (as OpenAI's and open_clip's ``tokenize`` do), and the truncated prompts are
  counted and listed in the result, since their ends were not scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..progress import Progress
from .inputs import Images, check_texts, image_features

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

TORCHMETRICS_WEIGHT = 100.0
CLIP_S_WEIGHT = 2.5


@dataclass(frozen=True)
class ClipScoreResult:
    scores: np.ndarray        # float32 [N]: weight · max(cos, 0) per image–prompt pair
    cosines: np.ndarray       # float32 [N]: the raw cosines
    mean: float               # mean of ``scores``
    weight: float
    truncated: tuple[int, ...]  # indices of the prompts cut to the context length (end token kept)
    context_length: int

    @property
    def truncated_count(self) -> int:
        return len(self.truncated)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "weight": self.weight, "pairs": len(self.scores),
                "truncated_count": self.truncated_count, "truncated": list(self.truncated),
                "context_length": self.context_length, "scores": self.scores.tolist(), "cosines": self.cosines.tolist()}


def check_weight(weight: float) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise UsageError(f"weight must be a positive number (100: torchmetrics' scale, 2.5: the CLIP-S paper's), "
                         f"got {weight!r}")
    return float(weight)


def truncated_prompts(encoder: Encoder, prompts: Sequence[str]) -> tuple[int, ...]:
    """Indices of the prompts longer than the model's context: the tokenizer cuts them, keeping the end token."""
    counts = encoder.tokenizer.token_count(list(prompts))
    return tuple(i for i, n in enumerate(counts) if n > encoder.model.context_length)


def clip_score(encoder: Encoder, images: Images, prompts: Sequence[str], weight: float = TORCHMETRICS_WEIGHT,
               progress: Progress | None = None) -> ClipScoreResult:
    """CLIP Score of ``images[i]`` with ``prompts[i]``: ``weight · max(cos, 0)`` per pair and their mean.

    ``images``: PIL images, or their embeddings from this encoder (``float32 [N, D]``). ``progress`` counts prompts.
    """
    weight = check_weight(weight)
    prompts = check_texts(prompts, "prompt")
    n_images = len(images)
    if n_images != len(prompts):
        raise UsageError(f"CLIP Score pairs each image with one prompt: got {n_images} images and {len(prompts)} "
                         "prompts")
    if not prompts:
        raise UsageError("CLIP Score needs at least one image–prompt pair")
    img = image_features(encoder, images)
    txt = encoder.encode_text(prompts, progress=progress)
    cosines = np.einsum("nd,nd->n", img, txt).astype(np.float32)
    scores = (weight * np.maximum(cosines, 0.0)).astype(np.float32)
    return ClipScoreResult(scores, cosines, float(scores.mean(dtype=np.float64)), weight,
                           truncated_prompts(encoder, prompts), encoder.model.context_length)
