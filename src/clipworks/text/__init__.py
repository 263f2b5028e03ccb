"""Text in: the tokenizer each model was trained with, built from its ``TokenizerConfig``.

``clip`` is OpenAI's BPE (shipped with clipworks, id-for-id open_clip's ``SimpleTokenizer``). ``hf`` reads the
tokenizer files a checkpoint ships: ``tokenizer.json`` through the Rust ``tokenizers`` library (``HFTokenizer``;
T5/XLM-R SentencePiece-only directories are converted), SigLIP's ``spiece.model`` through ``sentencepiece``
(``SentencePieceTokenizer``). Every tokenizer maps ``texts -> LongTensor[N, L]`` padded to the model's context
length, truncates keeping its end token, names a non-str input by index, and pickles.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..model.config import TokenizerConfig
from .clip_bpe import ClipTokenizer, tokenize
from .hf import HFTokenizer
from .hf_dir import TokenizerDir, tokenizer_config_for_dir
from .spm import SentencePieceTokenizer

Tokenizer = ClipTokenizer | HFTokenizer | SentencePieceTokenizer


def build_tokenizer(cfg: TokenizerConfig, context_length: int) -> Tokenizer:
    """The tokenizer ``cfg`` describes, padding to ``context_length``; an ``hf`` name must be a local directory
    by now (``pretrained.resolve_tokenizer_dir`` turns Hub ids into cached directories)."""
    if cfg.type == "clip":
        from .clip_bpe import shared_tokenizer

        return shared_tokenizer(context_length)
    return _shared_hf(str(Path(cfg.name)), context_length, cfg.clean, cfg.strip_sep_token,  # type: ignore[arg-type]
                      cfg.normalize, cfg.padding_side)


@functools.lru_cache(maxsize=8)
def _shared_hf(directory: str, context_length: int, clean: str, strip_sep_token: bool, normalize: str | None,
               padding_side: str | None) -> HFTokenizer | SentencePieceTokenizer:
    """One instance per setting: the Rust and SentencePiece objects are thread-safe and costly to build."""
    normalize = normalize or TokenizerDir.read(directory).normalize
    cls = SentencePieceTokenizer if normalize == "siglip" else HFTokenizer
    return cls(directory, context_length, clean, strip_sep_token, normalize, padding_side)


__all__ = ["ClipTokenizer", "HFTokenizer", "SentencePieceTokenizer", "Tokenizer", "TokenizerDir", "build_tokenizer",
           "tokenize", "tokenizer_config_for_dir"]
