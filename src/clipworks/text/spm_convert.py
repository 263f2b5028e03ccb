"""A SentencePiece model turned into the Rust tokenizer transformers 5 builds from it, for directories that ship
only ``spiece.model`` / ``sentencepiece.bpe.model`` (google/mt5-*, older XLM-R/XLM-V uploads).

For these classes transformers' own reference *is* such a conversion: ``T5Tokenizer`` and ``XLMRobertaTokenizer`` are
Rust-backed, built from the model's pieces and scores (a Unigram model) and its precompiled normalization charsmap;
their ``__init__`` adds the rest (``hf_classes``). This module reads the protobuf itself (no sentencepiece or protobuf
package needed) and lays the vocabulary out as the class does: T5 as the model has it plus ``extra_ids`` sentinels,
XLM-R in fairseq's layout (<s> 0, <pad> 1, </s> 2, <unk> 3, the model's pieces from its fourth on, <mask> last).
``tests/test_tokenizers.py`` checks the result id-for-id against transformers' conversion.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, normalizers

from ..errors import TokenizerError
from .hf_dir import TokenizerDir

NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4
CONVERTED = ("T5Tokenizer", "XLMRobertaTokenizer")


@dataclass
class SentencePieceModel:
    """The parts of a SentencePiece ``ModelProto`` a conversion needs."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    model_type: int = 1                                                # 1 unigram, 2 BPE
    unk_id: int = 0
    charsmap: bytes = b""


def _fields(data: bytes):
    """(field number, wire type, value) of one protobuf message; values are ints or bytes."""
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    while pos < end:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, data[pos:pos + 8]
            pos += 8
        elif wire == 2:
            size = varint()
            yield number, wire, data[pos:pos + size]
            pos += size
        elif wire == 5:
            yield number, wire, data[pos:pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def read_model(path: Path) -> SentencePieceModel:
    """Pieces (field 1), trainer spec (2: model_type 3, unk_id 40) and normalizer spec (3: charsmap 2)."""
    model = SentencePieceModel()
    try:
        for number, _, value in _fields(path.read_bytes()):
            if number == 1:
                piece, score, kind = "", 0.0, NORMAL
                for n, _, v in _fields(value):
                    if n == 1:
                        piece = v.decode("utf-8")
                    elif n == 2:
                        score = struct.unpack("<f", v)[0]
                    elif n == 3:
                        kind = v
                model.pieces.append((piece, score, kind))
            elif number == 2:
                for n, _, v in _fields(value):
                    if n == 3:
                        model.model_type = v
                    elif n == 40:
                        model.unk_id = v
            elif number == 3:
                for n, _, v in _fields(value):
                    if n == 2:
                        model.charsmap = bytes(v)
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as e:
        raise TokenizerError(f"{path} is not a SentencePiece model: {e}") from e
    if not model.pieces:
        raise TokenizerError(f"{path} is not a SentencePiece model: it holds no pieces")
    return model


def convert(files: TokenizerDir) -> Tokenizer:
    """The vocabulary of the directory's SentencePiece model as a Rust tokenizer in the class's id layout
    (T5 or XLM-R); ``hf_classes.apply`` then builds the class pipeline around it."""
    path = files.sentencepiece_model
    cls = files.tokenizer_class
    if path is None or cls not in CONVERTED:
        raise TokenizerError(
            f"{files.describe()}: without a tokenizer.json clipworks reads the SentencePiece models of "
            f"{', '.join(CONVERTED)} and SiglipTokenizer, not {cls or 'an unnamed tokenizer_class'}; write one with "
            "transformers: AutoTokenizer.from_pretrained(d).save_pretrained(d)")
    model = read_model(path)
    if model.model_type != 1:
        raise TokenizerError(f"{path}: {cls} expects a unigram SentencePiece model, this one is of type {model.model_type}")
    pieces = [(p, s) for p, s, _ in model.pieces]
    if cls == "T5Tokenizer":
        extra_ids = int(files.settings.get("extra_ids", 100))
        vocab, unk_id = pieces + [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)], 2
    else:  # fairseq's layout: four specials, the model's pieces after its own first three, <mask> last
        names = [files.token(n) or d for n, d in (("bos_token", "<s>"), ("pad_token", "<pad>"), ("eos_token", "</s>"),
                                                   ("unk_token", "<unk>"))]
        vocab, unk_id = [(t, 0.0) for t in names] + pieces[3:] + [(files.token("mask_token") or "<mask>", 0.0)], 3
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    if model.charsmap:
        tok.normalizer = normalizers.Precompiled(model.charsmap)
    # the model's control and user-defined pieces are matched in raw text, as transformers registers them
    extra = [p for p, _, kind in model.pieces if kind in (CONTROL, USER_DEFINED)]
    extra += [t for t, _ in vocab if t.startswith("<extra_id_")]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    return tok
