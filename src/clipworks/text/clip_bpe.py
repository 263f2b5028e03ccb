"""CLIP's byte-level BPE tokenizer, id-for-id identical to OpenAI's and open_clip's ``SimpleTokenizer``.

Why not a plain Hugging Face ``CLIPTokenizerFast``: it skips OpenAI's text cleaning (ftfy, double
html unescape), so it disagrees with OpenAI on a few percent of real captions. Here the cleaning and
the word-splitting regex are OpenAI's; BPE runs once per distinct word a call has not seen before, and a
cache of whitespace-separated chunks serves the rest.

Cold start (a fresh process's first call) is kept cheap: the vocabulary comes from a checked marshal cache
(``bpe_cache.py``); a few hundred new words go through OpenAI's merge loop in Python (``bpe_pieces``) and only a
batch of many builds the Rust ``tokenizers`` BPE (~30 ms); ftfy runs once per distinct text; and the cyclic
garbage collector is paused while a batch allocates its many small lists (``paused_gc``).

Speed comes from skipping work that provably changes nothing: text that is printable ASCII without
``&`` is left alone by ftfy and html unescaping, and on ASCII the stdlib ``re`` split below equals
OpenAI's ``regex`` split (``tests/test_tokenizer.py`` checks both claims against the originals).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import threading
from collections.abc import Sequence
from itertools import chain, pairwise
from typing import TYPE_CHECKING

import numpy as np
import regex
from tokenizers import Tokenizer, models, pre_tokenizers

from ..errors import InputTypeError
from .bpe_cache import EOT, SOT, bytes_to_unicode, tables, vocab_and_merges
from .chunk_table import ChunkTable
from .clean import PLAIN_ASCII as _PLAIN_ASCII
from .clean import clean_lower
from .inputs import check_length, check_texts

if TYPE_CHECKING:
    import torch

DEFAULT_CONTEXT_LENGTH = 77
# OpenAI's pattern, applied to lowercased text with IGNORECASE exactly as they do.
_SPLIT = regex.compile(SOT + "|" + EOT + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
# The same split restricted to lowercased ASCII, where \p{L} is [a-z] and \p{N} is [0-9].
_SPLIT_ASCII = re.compile(SOT + "|" + EOT + r"""|[a-z]+|[0-9]|'(?:s|t|re|ve|m|ll|d)|[^\sa-z0-9]+""")
_CACHE_LIMIT = 500_000
_CLEANED_LIMIT = 100_000
# Up to this many new words per call, pure-Python BPE (~20 µs a word) beats building the Rust one (~30 ms).
_PYTHON_BPE_MAX = 1000


@contextlib.contextmanager
def paused_gc():
    """The cyclic garbage collector off for a block that allocates many small acyclic objects.

    A cold batch allocates hundreds of thousands of lists and strings; each allocation burst triggers a
    collection, and a full one walks every object the process holds (millions once torch is imported), which
    measured 0.2 s of a 0.3 s first call. Nothing made here forms a cycle, so nothing is left for the collector.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def clean_text(text: str) -> str:
    """OpenAI's cleaning: ftfy, html unescape twice, collapse whitespace, lowercase (open_clip's ``lower``)."""
    return clean_lower(text)


def split_words(cleaned: str) -> list[str]:
    """OpenAI's pre-tokenization of cleaned text into BPE words."""
    return (_SPLIT_ASCII if cleaned.isascii() else _SPLIT).findall(cleaned)


_BYTE_CHARS = bytes_to_unicode()


class MergeRank:
    """``rank(pair)``: the pair's merge priority, or a number above every rank when it is not a merge.

    Read off the vocabulary instead of a 48,894-entry pair dict (8 ms to build at start-up, plus 10 ms to load the
    merge list): merge ``r`` made token ``512 + r`` and no token string occurs twice (``bpe_cache.read_cached``
    checks the vocabulary size), so the joined pair's id names the only merge that could be this pair, and the
    length of that merge's first part (``bpe_cache.first_lengths``) says whether it is."""

    def __init__(self, vocab: dict[str, int], first_lengths: bytes):
        self.vocab, self.first_lengths = vocab, first_lengths

    def __call__(self, pair: tuple[str, str]) -> int:
        r = self.vocab.get(pair[0] + pair[1], 0) - 512
        return r if 0 <= r < len(self.first_lengths) and self.first_lengths[r] == len(pair[0]) else _NO_RANK


def bpe_pieces(word: str, rank: MergeRank) -> list[str]:
    """OpenAI's byte-level BPE of one word: its UTF-8 bytes as printable characters, ``</w>`` on the last, then the
    lowest-ranked adjacent pair merged everywhere it occurs (left to right), until no pair has a rank."""
    chars = [_BYTE_CHARS[b] for b in word.encode("utf-8")]
    chars[-1] += "</w>"
    parts = chars
    while len(parts) > 1:
        best = min(pairwise(parts), key=rank)
        if rank(best) == _NO_RANK:
            break
        first, second = best
        merged: list[str] = []
        i, n = 0, len(parts)
        while i < n:
            if i < n - 1 and parts[i] == first and parts[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


_NO_RANK = 1 << 62


@functools.lru_cache(maxsize=1)
def rust_bpe() -> Tokenizer:
    """The same BPE in the Rust ``tokenizers`` backend (built once per process, ~30 ms): for batches of many new
    words, where it is several times faster per word than ``bpe_pieces``."""
    vocab, merges = vocab_and_merges()
    bpe = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return bpe


class ClipTokenizer:
    """``tokenizer(texts) -> LongTensor[N, context_length]``: start token, BPE ids, end token, zero padding.

    Over-long texts are truncated and keep their end token, as OpenAI's do. Any ``str`` is accepted. Instances
    pickle (DataLoader workers under spawn, process pools): only the context length travels, the vocabulary is the
    package's and the cache and lock are rebuilt.
    """

    def __init__(self, context_length: int = DEFAULT_CONTEXT_LENGTH):
        self.context_length = check_length(context_length)
        with paused_gc():
            vocab = tables()[0]
        self._vocab = vocab
        self.vocab_size = len(vocab)
        self.sot_token_id = vocab[SOT]
        self.eot_token_id = vocab[EOT]
        self._seed = {SOT: [self.sot_token_id], EOT: [self.eot_token_id], "": []}
        self._table = self._new_table()
        self._cleaned: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, int]:
        return {"context_length": self.context_length}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(state["context_length"])  # type: ignore[misc]

    def _chunks(self, text: object, index: int) -> list[str]:
        """Cleaned text split at whitespace. No split pattern matches across whitespace, so a text's
        ids are its chunks' ids in order, and a chunk seen before skips both the regex and BPE. Text that needs
        ftfy is cleaned once per distinct text (captions and prompts repeat); the result is not to be mutated."""
        if not isinstance(text, str):
            raise InputTypeError(f"tokenizer input {index} is {type(text).__name__}, expected str")
        if _PLAIN_ASCII.fullmatch(text):
            return text.lower().split()
        chunks = self._cleaned.get(text)
        if chunks is None:
            if len(self._cleaned) >= _CLEANED_LIMIT:
                self._cleaned = {}
            chunks = self._cleaned[text] = clean_text(text).split()
        return chunks

    def _learn(self, needed: set[str]) -> None:
        """Make the chunk table hold every chunk in ``needed``: split the new ones with OpenAI's pattern, BPE their
        distinct new words. A full table is restarted with what this call needs. Caller holds the lock."""
        table = self._table
        missing = [c for c in needed if c not in table]
        if not missing:
            return
        words = [split_words(c) for c in missing]
        word_ids = self._word_ids({w for ws in words for w in ws})
        if len(table) + len(missing) > _CACHE_LIMIT:
            kept = [c for c in needed if c in table and c not in self._seed]
            kept_ids = [table.get(c) for c in kept]
            table = self._table = self._new_table()
            table.add(kept, kept_ids)
        table.add(missing, [[i for w in ws for i in word_ids[w]] for ws in words])

    def _new_table(self) -> ChunkTable:
        table = ChunkTable()
        table.add(list(self._seed), list(self._seed.values()))
        return table

    def _word_ids(self, words: set[str]) -> dict[str, list[int]]:
        """BPE ids of each word. A few new words (a cold start's usual case) go through ``bpe_pieces``, which
        needs only the merge ranks; many go through the Rust backend in one batch, built on first need."""
        words.difference_update(self._seed)
        if len(words) <= _PYTHON_BPE_MAX and rust_bpe.cache_info().currsize == 0:
            vocab, firsts = tables()
            rank = MergeRank(vocab, firsts)
            out = {w: [vocab[p] for p in bpe_pieces(w, rank)] for w in words}
        else:
            distinct = list(words)
            encoded = rust_bpe().encode_batch([[w] for w in distinct], is_pretokenized=True, add_special_tokens=False)
            out = dict(zip(distinct, (e.ids for e in encoded)))
        out.update(self._seed)
        return out

    def _gather(self, chunks: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids of ``chunks`` concatenated, ids per chunk), learning the new chunks first."""
        with self._lock:
            try:
                return self._table.gather(chunks)
            except KeyError:
                self._learn(set(chunks))
                return self._table.gather(chunks)

    def _ids(self, texts: list[str], length: int) -> np.ndarray:
        """int64 [N, length]. Texts are chunked, the batch's chunks gathered from the table in one flat pass (one
        BPE pass over the new ones first, when there are any), then every text's first ``length - 2`` ids are
        placed with numpy: no per-text list or array call after the chunking."""
        n, keep = len(texts), length - 2
        out = np.zeros((n, length), dtype=np.int64)
        if not n:
            return out
        plain, chunks_of = _PLAIN_ASCII.fullmatch, self._chunks  # the common case inlined: no call per text
        chunk_lists = [t.lower().split() if type(t) is str and plain(t) else chunks_of(t, i) for i, t in enumerate(texts)]
        flat, counts = self._gather(list(chain.from_iterable(chunk_lists)))
        before_chunk = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=before_chunk[1:])
        text_end = before_chunk[np.cumsum(np.fromiter(map(len, chunk_lists), np.int64, n))]
        lens = np.diff(text_end, prepend=0)
        if lens.max() > keep:  # over-long texts: keep each one's first ``keep`` ids
            flat = flat[np.arange(flat.size) - np.repeat(text_end - lens, lens) < keep]
            lens = np.minimum(lens, keep)
        out[:, 1 : keep + 1][np.arange(keep) < lens[:, None]] = flat
        out[:, 0] = self.sot_token_id
        out[np.arange(n), lens + 1] = self.eot_token_id
        return out

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        import torch  # only here: the ids are numpy's (``encode_np``), which a torch-free runtime uses

        return torch.from_numpy(self.encode_np(texts, context_length))

    def encode_np(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """``int64 [N, context_length]``: what ``__call__`` returns, as a numpy array."""
        if isinstance(texts, str):
            texts = [texts]
        elif not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
            raise InputTypeError(f"tokenizer expects a str or a sequence of str, got {type(texts).__name__}")
        length = check_length(context_length or self.context_length)
        with paused_gc():
            return self._ids(list(texts), length)

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens or truncation."""
        return self._gather(self._chunks(text, 0))[0].tolist()

    def token_count(self, texts: str | Sequence[str]) -> list[int]:
        """Tokens each text takes with its start and end tokens, before truncation: over ``context_length`` means
        the call cuts it (keeping the end token)."""
        return [len(self.encode(t)) + 2 for t in check_texts(texts)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a token sequence; start/end tokens and the padding after the end token are dropped."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        if self.eot_token_id in ids:
            ids = ids[: ids.index(self.eot_token_id)]
        if any(not 0 <= i < self.vocab_size for i in ids):
            raise ValueError(f"token id out of range for a vocabulary of {self.vocab_size}")
        tokens = _id_to_token()
        pieces = [tokens[i] for i in ids if i != self.sot_token_id]
        byte_decoder = {c: b for b, c in _BYTE_CHARS.items()}
        data = bytearray(byte_decoder[c] for c in "".join(pieces))  # type: ignore[arg-type]
        return data.decode("utf-8", errors="replace").replace("</w>", " ").strip()


@functools.lru_cache(maxsize=1)
def _id_to_token() -> list[str]:
    tokens = [""] * len(tables()[0])
    for token, i in tables()[0].items():
        tokens[i] = token
    return tokens


@functools.lru_cache(maxsize=8)
def shared_tokenizer(context_length: int) -> ClipTokenizer:
    return ClipTokenizer(context_length)


def tokenize(texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.Tensor:
    """Module-level convenience, like ``clip.tokenize`` / ``open_clip.tokenize``."""
    return shared_tokenizer(context_length)(texts)
