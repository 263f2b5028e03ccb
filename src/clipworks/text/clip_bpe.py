"""CLIP's byte-level BPE tokenizer, id-for-id identical to OpenAI's and open_clip's ``SimpleTokenizer``.

Why not a plain Hugging Face ``CLIPTokenizerFast``: it skips OpenAI's text cleaning (ftfy, double
html unescape), so it disagrees with OpenAI on a few percent of real captions. Here the cleaning and
the word-splitting regex are OpenAI's; BPE merges run in the Rust ``tokenizers`` backend, batched
over the distinct words a call has not seen before, and a cache of whitespace-separated chunks
serves the rest.

Speed comes from skipping work that provably changes nothing: text that is printable ASCII without
``&`` is left alone by ftfy and html unescaping, and on ASCII the stdlib ``re`` split below equals
OpenAI's ``regex`` split (``tests/test_tokenizer.py`` checks both claims against the originals).
"""

from __future__ import annotations

import functools
import gzip
import re
import threading
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import regex
from tokenizers import Tokenizer, models, pre_tokenizers

from ..errors import InputTypeError
from .clean import PLAIN_ASCII as _PLAIN_ASCII
from .clean import clean_lower
from .inputs import check_length, check_texts

if TYPE_CHECKING:
    import torch

DEFAULT_CONTEXT_LENGTH = 77
SOT = "<start_of_text>"
EOT = "<end_of_text>"
# OpenAI's pattern, applied to lowercased text with IGNORECASE exactly as they do.
_SPLIT = regex.compile(SOT + "|" + EOT + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
# The same split restricted to lowercased ASCII, where \p{L} is [a-z] and \p{N} is [0-9].
_SPLIT_ASCII = re.compile(SOT + "|" + EOT + r"""|[a-z]+|[0-9]|'(?:s|t|re|ve|m|ll|d)|[^\sa-z0-9]+""")
_CACHE_LIMIT = 500_000


def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte → printable-character map that byte-level BPE runs on."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    path = resources.files("clipworks") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT, EOT]
    return {tok: i for i, tok in enumerate(vocab)}, merges  # type: ignore[return-value]


def clean_text(text: str) -> str:
    """OpenAI's cleaning: ftfy, html unescape twice, collapse whitespace, lowercase (open_clip's ``lower``)."""
    return clean_lower(text)


def split_words(cleaned: str) -> list[str]:
    """OpenAI's pre-tokenization of cleaned text into BPE words."""
    return (_SPLIT_ASCII if cleaned.isascii() else _SPLIT).findall(cleaned)


class ClipTokenizer:
    """``tokenizer(texts) -> LongTensor[N, context_length]``: start token, BPE ids, end token, zero padding.

    Over-long texts are truncated and keep their end token, as OpenAI's do. Any ``str`` is accepted. Instances
    pickle (DataLoader workers under spawn, process pools): only the context length travels, the vocabulary is the
    package's and the cache and lock are rebuilt.
    """

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH):
        self.context_length = check_length(context_length)
        vocab, merges = vocab_and_merges()
        self.vocab_size = len(vocab)
        self.sot_token_id = vocab[SOT]
        self.eot_token_id = vocab[EOT]
        self._bpe = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>"))
        self._bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        self._seed = {SOT: [self.sot_token_id], EOT: [self.eot_token_id], "": []}
        self._cache: dict[str, list[int]] = dict(self._seed)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, int]:
        return {"context_length": self.context_length}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["context_length"])  # type: ignore[misc]

    def _chunks(self, text: object, index: int) -> list[str]:
        """Cleaned text split at whitespace. No split pattern matches across whitespace, so a text's
        ids are its chunks' ids in order, and a chunk seen before skips both the regex and BPE."""
        if not isinstance(text, str):
            raise InputTypeError(f"tokenizer input {index} is {type(text).__name__}, expected str")
        return text.lower().split() if _PLAIN_ASCII.fullmatch(text) else clean_text(text).split()

    def _learn(self, chunks: list[list[str]]) -> dict[str, list[int]]:
        """Add every new chunk in ``chunks`` to the chunk → ids cache: split each with OpenAI's
        pattern, BPE the distinct new words in one Rust batch."""
        cache = self._cache
        missing = list({c for cs in chunks for c in cs if c not in cache})
        if missing:
            words = [split_words(c) for c in missing]
            distinct = list({w for ws in words for w in ws})
            encoded = self._bpe.encode_batch([[w] for w in distinct], is_pretokenized=True, add_special_tokens=False)
            word_ids = dict(zip(distinct, (e.ids for e in encoded)))
            word_ids.update(self._seed)
            with self._lock:
                if len(cache) + len(missing) > _CACHE_LIMIT:
                    cache = self._cache = dict(self._seed)
                for chunk, ws in zip(missing, words):
                    cache[chunk] = [i for w in ws for i in word_ids[w]]
        return cache

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        import torch  # only here: the ids are numpy's (``encode_np``), which the torch-free runtime uses

        return torch.from_numpy(self.encode_np(texts, context_length))

    def encode_np(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """``int64 [N, context_length]``: what ``__call__`` returns, as a numpy array."""
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
            raise InputTypeError(f"tokenizer expects a str or a sequence of str, got {type(texts).__name__}")
        length = check_length(context_length or self.context_length)
        keep, eot = length - 2, self.eot_token_id
        out = np.zeros((len(texts), length), dtype=np.int64)
        out[:, 0] = self.sot_token_id
        cache = self._cache
        unseen: list[tuple[int, list[str]]] = []
        for i, text in enumerate(texts):
            chunks = self._chunks(text, i)
            try:
                ids = [t for c in chunks for t in cache[c]][:keep]
            except KeyError:
                unseen.append((i, chunks))
                continue
            out[i, 1 : len(ids) + 1] = ids
            out[i, len(ids) + 1] = eot
        if unseen:
            cache = self._learn([cs for _, cs in unseen])
            for i, chunks in unseen:
                ids = [t for c in chunks for t in cache[c]][:keep]
                out[i, 1 : len(ids) + 1] = ids
                out[i, len(ids) + 1] = eot
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens or truncation."""
        chunks = self._chunks(text, 0)
        cache = self._learn([chunks])
        return [i for c in chunks for i in cache[c]]

    def token_count(self, texts: str | Sequence[str]) -> list[int]:
        """Tokens each text takes with its start and end tokens, before truncation: over ``context_length`` means
        the call cuts it (keeping the end token)."""
        return [len(self.encode(t)) + 2 for t in check_texts(texts)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a token sequence; start/end tokens and the padding after the end token are dropped."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        if self.eot_token_id in ids:
            ids = ids[: ids.index(self.eot_token_id)]
        pieces = [self._bpe.id_to_token(i) for i in ids if i != self.sot_token_id]
        if None in pieces:
            raise ValueError(f"token id out of range for a vocabulary of {self.vocab_size}")
        byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        data = bytearray(byte_decoder[c] for c in "".join(pieces))  # type: ignore[arg-type]
        return data.decode("utf-8", errors="replace").replace("</w>", " ").strip()


@functools.lru_cache(maxsize=8)
def shared_tokenizer(context_length: int) -> ClipTokenizer:
    return ClipTokenizer(context_length)


def tokenize(texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.Tensor:
    """Module-level convenience, like ``clip.tokenize`` / ``open_clip.tokenize``."""
    return shared_tokenizer(context_length)(texts)
