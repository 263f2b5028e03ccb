"""``SiglipTokenizer`` (Hugging Face SigLIP directories: ``spiece.model`` only) run on the ``sentencepiece`` library,
as transformers runs it — so its ids are the reference's by construction, not by a conversion.

transformers' class does more than ``sp.encode``, all of it reproduced here:

1. ``"▁" + text.replace("▁", " ")``, then a split on added/special tokens (``</s>``, ``<unk>``…) with their
   lstrip/rstrip flags, before any cleaning — a literal ``</s>`` in a caption is the end token;
2. each other chunk canonicalised (``clean.siglip_canonicalize``: lowercase per ``do_lower_case``, punctuation
   dropped, whitespace collapsed) and encoded as ``sp.encode("<unk>" + chunk)`` minus the pieces of ``<unk>`` (the
   trick that keeps SentencePiece's dummy prefix off the chunk);
3. a leading ``▁`` piece dropped when a special token follows it; truncation to ``context_length - 1``; ``</s>``
   appended unless the ids already end with it; right padding with the pad id (``</s>`` by default).

Needs the ``sentencepiece`` extra. Instances pickle: the processor is rebuilt from the model bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import TokenizerError, require
from ..model.config import PADDING_SIDES
from .clean import clean_fn, siglip_canonicalize
from .hf_dir import SENTENCEPIECE_FILES, AddedToken, TokenizerDir
from .inputs import check_length, check_texts, not_unicode, prepare

if TYPE_CHECKING:
    import torch

SPIECE_UNDERLINE = "▁"


class SentencePieceTokenizer:
    """``tokenizer(texts) -> LongTensor[N, context_length]``, id-for-id transformers' ``SiglipTokenizer`` called with
    ``padding="max_length", truncation=True``. ``clean``: open_clip's cleaning, applied first."""

    def __init__(self, directory: str | Path, context_length: int = 64, clean: str = "none",
                 strip_sep_token: bool = False, normalize: str | None = None, padding_side: str | None = None):
        self.directory = Path(directory)
        self.context_length = check_length(context_length)
        files = TokenizerDir.read(self.directory)
        self.normalize = normalize or files.normalize
        if self.normalize != "siglip":
            raise TokenizerError(f"{self.directory}: the SentencePiece runner implements SiglipTokenizer (normalize "
                                 f"'siglip'), not normalize {self.normalize!r}")
        if strip_sep_token:
            raise TokenizerError(f"{self.directory}: strip_sep_token is set but SiglipTokenizer has no sep_token")
        path = files.sentencepiece_model
        if path is None:
            raise TokenizerError(f"SigLIP tokenizer directory {files.describe()} has no SentencePiece model "
                                 f"({', '.join(SENTENCEPIECE_FILES)})")
        if files.settings.get("legacy") is False:
            raise TokenizerError(f"{self.directory}: tokenizer_config.json sets legacy=false, which clipworks does not "
                                 "implement for SiglipTokenizer")
        self.clean, self.strip_sep_token = clean, False
        self.padding_side = padding_side or files.padding_side
        if self.padding_side not in PADDING_SIDES:
            raise TokenizerError(f"padding_side must be one of {PADDING_SIDES}, got {self.padding_side!r}")
        self.lower = files.flag("do_lower_case") is not False
        self._model = path.read_bytes()
        self.unk_token = files.token("unk_token") or "<unk>"
        self.eos_token = files.token("eos_token") or "</s>"
        self.pad_token = files.token("pad_token") or self.eos_token
        self._added = _added_tokens(files)
        clean_fn(clean)
        self._setup()
        self.eos_token_id = self._id(self.eos_token)
        self.pad_token_id = self._id(self.pad_token)
        self.vocab_size = self._sp.get_piece_size()

    def _setup(self) -> None:
        spm = require("sentencepiece", "sentencepiece", "a SentencePiece tokenizer (SigLIP)")
        self._sp = spm.SentencePieceProcessor(model_proto=self._model)
        self._clean = clean_fn(self.clean)
        self._ids = {**{self._sp.id_to_piece(i): i for i in range(self._sp.get_piece_size())},
                     **{t.content: t.id for t in self._added.values() if t.id is not None}}
        self._unk_id = self._sp.unk_id()  # what piece_to_id gives a piece outside the vocabulary
        self._unk_len = len(self._sp.encode(self.unk_token))
        self._split = re.compile("(" + "|".join(map(re.escape, sorted(self._added, key=len, reverse=True))) + ")") \
            if self._added else None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_sp", "_clean", "_ids", "_split")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def _id(self, piece: str) -> int:
        return self._ids.get(piece, self._unk_id)

    def _chunks(self, text: str) -> list[str]:
        """transformers' added-token split of ``"▁" + text`` with each token's lstrip/rstrip."""
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        parts = self._split.split(text) if self._split is not None else [text]
        for i in range(1, len(parts), 2):  # odd positions hold the added tokens
            token = self._added[parts[i]]
            if token.rstrip and i + 1 < len(parts) and parts[i + 1]:
                parts[i + 1] = parts[i + 1].lstrip()
            if token.lstrip and parts[i - 1]:
                parts[i - 1] = parts[i - 1].rstrip()
        return parts

    def _pieces(self, texts: list[str]) -> list[list[str]]:
        """Piece strings of each text, before the end token."""
        split = [self._chunks(t) for t in texts]
        plain = [siglip_canonicalize(p, self.lower) for parts in split for p in parts[0::2] if p]
        encoded = iter(self._sp.encode([self.unk_token + p for p in plain], out_type=str))
        out = []
        for parts in split:
            pieces: list[str] = []
            for i, part in enumerate(parts):
                if i % 2:
                    pieces.append(part)
                elif part:
                    got = next(encoded)
                    pieces.extend(got[self._unk_len:] if len(got) >= self._unk_len else got)
            if len(pieces) > 1 and pieces[0] == SPIECE_UNDERLINE and pieces[1] in self._added:
                pieces = pieces[1:]
            out.append(pieces)
        return out

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        import torch  # only here: the ids are numpy's (``encode_np``), which the torch-free runtime uses

        return torch.from_numpy(self.encode_np(texts, context_length))

    def encode_np(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """``int64 [N, context_length]``: what ``__call__`` returns, as a numpy array."""
        texts, length = prepare(texts, context_length or self.context_length,
                                None if self.clean == "none" else self._clean)
        try:
            pieces = self._pieces(texts)
        except (TypeError, RuntimeError, UnicodeEncodeError) as e:
            raise not_unicode(texts) from e
        out = np.full((len(texts), length), self.pad_token_id, dtype=np.int64)
        for row, ps in zip(out, pieces):
            ids = [self._id(p) for p in ps[: length - 1]]
            if not ids or ids[-1] != self.eos_token_id:
                ids.append(self.eos_token_id)
            if self.padding_side == "right":
                row[: len(ids)] = ids
            else:
                row[length - len(ids):] = ids
        return out

    def encode(self, text: str) -> list[int]:
        """Ids of one (cleaned) text, without the end token or truncation."""
        return [self._id(p) for p in self._pieces([self._clean(check_texts(text)[0])])[0]]

    def token_count(self, texts: str | Sequence[str]) -> list[int]:
        """Tokens each text takes with its end token, before truncation: over ``context_length`` means the call cuts
        it (keeping the end token)."""
        texts, _ = prepare(texts, self.context_length, None if self.clean == "none" else self._clean)
        try:
            pieces = self._pieces(texts)
        except (TypeError, RuntimeError, UnicodeEncodeError) as e:
            raise not_unicode(texts) from e
        return [len(ps) + (0 if ps and self._id(ps[-1]) == self.eos_token_id else 1) for ps in pieces]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a token sequence; special tokens and padding are dropped."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        special = {t.id for t in self._added.values() if t.special} | {self.eos_token_id, self.pad_token_id}
        return self._sp.decode([i for i in ids if i not in special])


def _added_tokens(files: TokenizerDir) -> dict[str, AddedToken]:
    """The tokens transformers splits on: tokenizer_config.json's ``added_tokens_decoder``, then the named special
    tokens it leaves out (``SiglipTokenizer`` wraps those with lstrip/rstrip) and ``additional_special_tokens``."""
    out = {t.content: t for t in files.added_tokens()}
    for name in ("eos_token", "unk_token", "pad_token"):
        token = files.token(name)
        if token and token not in out:
            out[token] = AddedToken(token, None, lstrip=True, rstrip=True)
    for token in files.settings.get("additional_special_tokens") or []:
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and token and token not in out:
            out[token] = AddedToken(token, None)
    return out
