"""The tokenizer of a Hugging Face text tower, behind ``ClipTokenizer``'s call contract.

It reads the directory's ``tokenizer.json`` with the Rust ``tokenizers`` library (no transformers
needed) and returns ``LongTensor[N, context_length]``: the tokenizer's own special tokens, truncation
that keeps the closing token, padding with the pad id the text tower masks.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from ..errors import InputTypeError, TokenizerError

# Files a Hugging Face tokenizer is made of; copied next to a saved model so it tokenizes on its own.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _pad_token(directory: Path, tokenizer: Tokenizer) -> tuple[str, int]:
    """(pad token, id) as transformers picks it: tokenizer_config/special_tokens_map first, then the
    padding that tokenizer.json itself configures."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / name
        token = json.loads(path.read_text()).get("pad_token") if path.is_file() else None
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            return token, tokenizer.token_to_id(token)
    if tokenizer.padding is not None:
        return tokenizer.padding["pad_token"], tokenizer.padding["pad_id"]
    raise TokenizerError(f"{directory}: the tokenizer names no pad token (special_tokens_map.json, tokenizer_config.json)")


class HFTokenizer:
    """``tokenizer(texts) -> LongTensor[N, context_length]`` from a directory's ``tokenizer.json``."""

    def __init__(self, directory: str | Path, context_length: int = 77):
        self.directory = Path(directory)
        path = self.directory / "tokenizer.json"
        if not path.is_file():
            what = "has no tokenizer.json" if self.directory.is_dir() else "does not exist"
            raise TokenizerError(f"Hugging Face tokenizer directory {self.directory} {what}")
        if context_length < 2:
            raise TokenizerError(f"context_length must be at least 2 (start and end tokens), got {context_length}")
        self._json = path.read_text(encoding="utf-8")
        self._plain = Tokenizer.from_str(self._json)
        self.pad_token, self.pad_token_id = _pad_token(self.directory, self._plain)
        self._plain.no_padding()
        self._plain.no_truncation()
        self.vocab_size = self._plain.get_vocab_size()
        self.context_length = context_length
        self._by_length: dict[int, Tokenizer] = {}

    def _fixed(self, length: int) -> Tokenizer:
        """A tokenizer truncating and padding to ``length``; one per length, as the setting is per object."""
        tok = self._by_length.get(length)
        if tok is None:
            tok = Tokenizer.from_str(self._json)
            tok.enable_truncation(max_length=length)
            tok.enable_padding(length=length, pad_id=self.pad_token_id, pad_token=self.pad_token)
            self._by_length[length] = tok
        return tok

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
            raise InputTypeError(f"tokenizer expects a str or a sequence of str, got {type(texts).__name__}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputTypeError(f"tokenizer input {i} is {type(text).__name__}, expected str")
        length = context_length or self.context_length
        if length < 2:
            raise TokenizerError(f"context_length must be at least 2 (start and end tokens), got {length}")
        encodings = self._fixed(length).encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), length)
        return torch.from_numpy(ids)

    def encode(self, text: str) -> list[int]:
        """Ids of one text, without special tokens or truncation."""
        return self._plain.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a token sequence; special tokens and padding are dropped."""
        ids = [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]
        return self._plain.decode(ids, skip_special_tokens=True)


@functools.lru_cache(maxsize=8)
def shared_hf_tokenizer(directory: str, context_length: int) -> HFTokenizer:
    return HFTokenizer(directory, context_length)
