"""Text in: the tokenizer each model was trained with, built from its config.

``clip`` is OpenAI's BPE (shipped with clipworks, id-for-id open_clip's ``SimpleTokenizer``); ``hf`` reads the
tokenizer files a checkpoint ships (``tokenizer.json``). Every tokenizer maps ``texts -> LongTensor[N, L]``
padded to the model's context length.
"""

from __future__ import annotations

from pathlib import Path

from ..model.config import TokenizerConfig
from .clip_bpe import ClipTokenizer, tokenize
from .hf import HFTokenizer, shared_hf_tokenizer

Tokenizer = ClipTokenizer | HFTokenizer


def build_tokenizer(cfg: TokenizerConfig, context_length: int) -> Tokenizer:
    """The tokenizer ``cfg`` describes, padding to ``context_length``; an ``hf`` name must be a local directory
    by now (``pretrained.resolve_tokenizer`` turns Hub ids into cached directories)."""
    if cfg.type == "clip":
        from .clip_bpe import _shared_tokenizer

        return _shared_tokenizer(context_length)
    return shared_hf_tokenizer(str(Path(cfg.name)), context_length)  # type: ignore[arg-type]


__all__ = ["ClipTokenizer", "HFTokenizer", "Tokenizer", "build_tokenizer", "tokenize"]
