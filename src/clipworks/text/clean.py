"""Text cleaning done in Python before a tokenizer sees the text, as the reference implementations do it.

Two kinds, and they compose (open_clip's wrapper cleans, then the Hugging Face class may clean again):

- open_clip's ``clean`` modes (``HFTokenizer(clean=…)``): ``whitespace`` (ftfy, html-unescape twice, collapse
  whitespace), ``lower`` (the same, lowercased), ``canonicalize`` (the same, then big_vision's canonicalisation:
  ``_`` → space, ASCII punctuation dropped, lowercased); ``none`` passes text through.
- What a Hugging Face tokenizer class does in code that its files do not record (``normalize``): ``siglip`` is
  ``SiglipTokenizer.canonicalize_text`` (lowercase when the files say ``do_lower_case``, ASCII punctuation — ``_``
  included — dropped, whitespace collapsed; no ftfy, no html); ``lower`` is ``Siglip2Tokenizer``'s Lowercase
  normalizer, which the Rust pipeline applies (``text/hf.py``), not this module.

Printable ASCII without ``&`` is left alone by ftfy and html unescaping (``tests/test_tokenizers.py`` checks it
against ftfy), so the fast path skips both; every mode collapses whitespace, so ftfy's line-break fixing
(``\\r`` → ``\\n``) changes nothing it would keep.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Callable

import ftfy

from ..errors import TokenizerError
from ..model.config import CLEAN_MODES

# Text that ftfy and html unescaping leave alone: printable ASCII, tab/newline/CR, and no '&'.
PLAIN_ASCII = re.compile(r"[\t\n\r\x20-\x25\x27-\x7e]*")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def basic_clean(text: str) -> str:
    """open_clip's ``basic_clean``: ftfy, html unescape twice, strip."""
    if not PLAIN_ASCII.fullmatch(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return text.strip()


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def clean_whitespace(text: str) -> str:
    return collapse_whitespace(basic_clean(text))


def clean_lower(text: str) -> str:
    return collapse_whitespace(basic_clean(text)).lower()


def clean_canonicalize(text: str) -> str:
    """open_clip's ``canonicalize_text(basic_clean(text))`` (big_vision's prompt canonicalisation)."""
    text = basic_clean(text).replace("_", " ").translate(_NO_PUNCTUATION).lower()
    return collapse_whitespace(text)


def clean_none(text: str) -> str:
    return text


_CLEAN: dict[str, Callable[[str], str]] = {
    "whitespace": clean_whitespace, "lower": clean_lower, "canonicalize": clean_canonicalize, "none": clean_none,
}


def clean_fn(mode: str) -> Callable[[str], str]:
    """The open_clip clean mode ``mode`` as a function (modes: ``CLEAN_MODES``)."""
    if mode not in _CLEAN:
        raise TokenizerError(f"unknown clean mode {mode!r}; known: {', '.join(CLEAN_MODES)}")
    return _CLEAN[mode]


def siglip_canonicalize(text: str, lower: bool = True) -> str:
    """``SiglipTokenizer.canonicalize_text``: lowercase (``do_lower_case``), drop ASCII punctuation, collapse
    whitespace. Unlike open_clip's ``canonicalize``, ``_`` is dropped rather than spaced, and no ftfy/html."""
    if lower:
        text = text.lower()
    return collapse_whitespace(text.translate(_NO_PUNCTUATION))
