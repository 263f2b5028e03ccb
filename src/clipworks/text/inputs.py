"""What every tokenizer accepts: a str or a sequence of str, a context length of at least 2, valid Unicode.

Errors name the offending item by index, so a bad caption in a batch of thousands is found at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputTypeError, TokenizerError


def check_texts(texts: object) -> list[str]:
    """``texts`` as a list of str, or InputTypeError naming the first item of another type."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
        raise InputTypeError(f"tokenizer expects a str or a sequence of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputTypeError(f"tokenizer input {i} is {type(text).__name__}, expected str")
    return list(texts)


def check_length(length: object) -> int:
    if not isinstance(length, int) or isinstance(length, bool) or length < 2:
        raise TokenizerError(f"context_length must be an int of at least 2 (start and end tokens), got {length!r}")
    return length


def prepare(texts: object, context_length: object, clean) -> tuple[list[str], int]:
    """What every tokenizer call starts with: the checked texts, cleaned (``clean`` None: as given), and the checked
    context length."""
    checked = check_texts(texts)
    return ([clean(t) for t in checked] if clean is not None else checked), check_length(context_length)


def not_unicode(texts: list[str]) -> TokenizerError:
    """The error for a text the Rust and SentencePiece tokenizers cannot take: a lone surrogate has no UTF-8 form
    (transformers fails on it too, with a TypeError that names neither the text nor the character)."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return TokenizerError(f"tokenizer input {i} is not valid Unicode: {text[e.start]!r} at position {e.start} "
                                  "is a lone surrogate, which has no UTF-8 form")
    return TokenizerError("the tokenizer rejected its input")
