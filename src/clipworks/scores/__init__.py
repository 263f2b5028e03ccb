"""Scores from the two encoders: CLIP Score of image–prompt pairs, CLIP-IQA-style quality from antonym prompts,
and content filtering by concepts described in words (with thresholds calibrated on a small labelled set).

Each takes an ``Encoder`` and images as PIL images or their embeddings, and returns numpy.
"""

from .calibrate import Calibration, Labels, calibrate, load_labels
from .clip_score import CLIP_S_WEIGHT, TORCHMETRICS_WEIGHT, ClipScoreResult, clip_score, truncated_prompts
from .concepts import (
    Concept,
    ConceptFilter,
    ConceptScores,
    concept_scores,
    load_concepts,
    parse_concepts,
    save_concepts,
    with_thresholds,
)
from .quality import DEFAULT_PAIRS, PROMPT_PAIRS, load_pairs, quality, resolve_pairs

__all__ = ["CLIP_S_WEIGHT", "DEFAULT_PAIRS", "PROMPT_PAIRS", "TORCHMETRICS_WEIGHT", "Calibration", "ClipScoreResult",
           "Concept", "ConceptFilter", "ConceptScores", "Labels", "calibrate", "clip_score", "concept_scores",
           "load_concepts", "load_labels", "load_pairs", "parse_concepts", "quality", "resolve_pairs", "save_concepts",
           "truncated_prompts", "with_thresholds"]
