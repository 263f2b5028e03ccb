"""The tokenizer a Hugging Face directory ships, behind ``ClipTokenizer``'s call contract, with the Rust
``tokenizers`` library alone (no transformers at run time).

It reads ``tokenizer.json`` (or converts a T5/XLM-R SentencePiece model, ``text/spm_convert.py``) and returns
``LongTensor[N, context_length]`` as transformers does with ``padding="max_length", truncation=True``: the
tokenizer's own special tokens, truncation that keeps them, padding with the pad id on the class's side. What the
reference does in Python on top of the files is applied here too: open_clip's ``clean`` and ``strip_sep_token``,
``Siglip2Tokenizer``'s lowercasing, and the ``add_bos_token``/``add_eos_token`` flags transformers turns into the
post-processor. Instances pickle (DataLoader workers under spawn, process pools): the Rust objects are rebuilt from
the JSON they were made from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from ..errors import TokenizerError
from ..model.config import NORMALIZE_MODES, PADDING_SIDES
from . import hf_classes
from .clean import clean_fn
from .hf_dir import SENTENCEPIECE_FILES, TOKENIZER_JSON, TokenizerDir
from .inputs import check_length, check_texts, not_unicode, prepare

if TYPE_CHECKING:
    import torch


class HFTokenizer:
    """``tokenizer(texts) -> LongTensor[N, context_length]`` from a directory's ``tokenizer.json`` (or a T5/XLM-R
    SentencePiece model). ``clean``/``strip_sep_token``: open_clip's; ``normalize``/``padding_side`` None: as the
    directory's transformers class does (``hf_dir.TokenizerDir``)."""

    def __init__(self, directory: str | Path, context_length: int = 77, clean: str = "none",
                 strip_sep_token: bool = False, normalize: str | None = None, padding_side: str | None = None):
        self.directory = Path(directory)
        self.context_length = check_length(context_length)
        files = TokenizerDir.read(self.directory)
        self.clean, self.strip_sep_token = clean, strip_sep_token
        self.normalize = normalize or files.normalize
        self.padding_side = padding_side or files.padding_side
        if self.normalize == "siglip":
            raise TokenizerError(f"{self.directory}: SiglipTokenizer's canonicalisation runs on its SentencePiece "
                                 "model; build it with text.build_tokenizer (SentencePieceTokenizer)")
        if self.normalize not in NORMALIZE_MODES or self.padding_side not in PADDING_SIDES:
            raise TokenizerError(f"normalize must be one of {NORMALIZE_MODES} and padding_side one of {PADDING_SIDES}, "
                                 f"got {self.normalize!r} and {self.padding_side!r}")
        clean_fn(clean)
        self._json = _tokenizer_text(files)
        self._pipeline: dict[str, Any] | None = None
        tok = self._build()  # the file's own; the class pipeline goes on it, ids stay
        self._pipeline = hf_classes.pipeline_spec(files, tok, self.normalize)
        hf_classes.apply(tok, self._pipeline)
        self.pad_token, self.pad_token_id = _pad(files, tok)
        self.sep_token_id = _id(tok, files.token("sep_token"))
        if strip_sep_token and self.sep_token_id is None:
            raise TokenizerError(f"{self.directory}: strip_sep_token is set but the tokenizer has no sep_token")
        self.vocab_size = tok.get_vocab_size()
        self._setup()

    # Rust objects are built from the JSON text per context length, also after unpickling; none is kept for
    # __init__'s look-ups (a 900k-piece vocabulary, XLM-V's, is worth not holding twice).
    def _build(self, length: int | None = None) -> Tokenizer:
        tok = Tokenizer.from_str(self._json)
        if self._pipeline is not None:
            hf_classes.apply(tok, self._pipeline)
        tok.no_padding()
        tok.no_truncation()
        if length is not None:
            tok.enable_truncation(max_length=length)
            tok.enable_padding(length=length, direction=self.padding_side, pad_id=self.pad_token_id,
                               pad_token=self.pad_token)
        return tok

    def _setup(self) -> None:
        self._clean = clean_fn(self.clean)
        self._by_length: dict[int | None, Tokenizer] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_clean", "_by_length")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def _fixed(self, length: int | None) -> Tokenizer:
        """A tokenizer truncating and padding to ``length`` (None: neither); one per length, as the setting is per
        object and the Rust object is shared by threads."""
        tok = self._by_length.get(length)
        if tok is None:
            tok = self._by_length[length] = self._build(length)
        return tok

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        import torch  # only here: the ids are numpy's (``encode_np``), which the torch-free runtime uses

        return torch.from_numpy(self.encode_np(texts, context_length))

    def encode_np(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """``int64 [N, context_length]``: what ``__call__`` returns, as a numpy array."""
        texts, length = prepare(texts, context_length or self.context_length,
                                None if self.clean == "none" else self._clean)
        try:
            encodings = self._fixed(length).encode_batch(texts)
        except (TypeError, ValueError) as e:
            raise not_unicode(texts) from e
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), length)
        if self.strip_sep_token:
            ids[ids == self.sep_token_id] = 0  # open_clip writes 0, whatever the pad id
        return ids

    def encode(self, text: str) -> list[int]:
        """Ids of one (cleaned) text, without special tokens or truncation."""
        text = check_texts(text)[0]
        return self._fixed(None).encode(self._clean(text), add_special_tokens=False).ids

    def token_count(self, texts: str | Sequence[str]) -> list[int]:
        """Tokens each text takes with its special tokens, before truncation: over ``context_length`` means the
        call cuts it (keeping the special tokens)."""
        texts, _ = prepare(texts, self.context_length, None if self.clean == "none" else self._clean)
        try:
            return [len(e.ids) for e in self._fixed(None).encode_batch(texts)]
        except (TypeError, ValueError) as e:
            raise not_unicode(texts) from e

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of a token sequence; special tokens and padding are dropped."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        return self._fixed(None).decode(ids, skip_special_tokens=True)


def _tokenizer_text(files: TokenizerDir) -> str:
    """The tokenizer as JSON: ``tokenizer.json``, else a converted T5/XLM-R SentencePiece model."""
    path = files.tokenizer_json
    if path is not None:
        return path.read_text(encoding="utf-8")
    if files.sentencepiece_model is not None:
        from .spm_convert import convert

        return convert(files).to_str()
    raise TokenizerError(f"Hugging Face tokenizer directory {files.describe()} has no {TOKENIZER_JSON} and no "
                         f"SentencePiece model ({', '.join(SENTENCEPIECE_FILES)})")


def _id(tok: Tokenizer, token: str | None) -> int | None:
    return None if token is None else tok.token_to_id(token)


def _pad(files: TokenizerDir, tok: Tokenizer) -> tuple[str, int]:
    """(pad token, id) as transformers picks it: the files' (or the class's default), then tokenizer.json's padding."""
    token = files.token("pad_token")
    if token is not None and tok.token_to_id(token) is not None:
        return token, tok.token_to_id(token)
    if tok.padding is not None:
        return tok.padding["pad_token"], tok.padding["pad_id"]
    raise TokenizerError(f"{files.directory}: the tokenizer names no pad token in its vocabulary (tokenizer_config.json, "
                         f"special_tokens_map.json), so it cannot pad to the context length")
