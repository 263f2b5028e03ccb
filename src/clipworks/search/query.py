"""What to search for: text, an image, or a weighted mix of both, parsed from one string and turned into one vector.

A query is a list of ``QueryTerm`` (weight, text or image). From one string::

    "beach" + 0.5*photo.jpg - "people"
    a dog on the beach                      (no operators: one text term)
    2*'red car' - 0.5*~/Pictures/blue.png

- a term is a quoted string (``"…"`` or ``'…'``, backslash escapes the quote) — always text — or an unquoted run
  of characters up to the next operator or double quote (an apostrophe inside a word is kept), which is an image when it ends with an image suffix (``.jpg``, ``.png``…)
  or names an existing file, and text otherwise;
- ``+`` and ``-`` between terms add or subtract; they are operators only at the start of a term or after
  whitespace or a closing quote, so ``black-and-white`` and ``my-photo.jpg`` stay whole;
- an optional weight ``w*`` (a plain decimal number) before a term scales it; a leading ``-`` negates the first.

The query vector is the weighted sum of the L2-normalised term embeddings, renormalised to unit length (rclip's
combination, renormalised so that scores stay cosine similarities): ``q = Σ wᵢ eᵢ / ‖Σ wᵢ eᵢ‖``. Negative terms
push results away from a concept. Python callers may skip the string form and pass ``[(1.0, "beach"),
(0.5, Path("photo.jpg")), (-1.0, "people")]``: there a ``str`` is always text and a ``Path`` or PIL image an image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
from PIL import Image

from ..errors import InputTypeError, UsageError
from ..image.decode import IMAGE_SUFFIXES, ImageError, load_image

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

TermValue = str | Path | Image.Image
QueryLike = Union[str, Path, Image.Image, Sequence[Union["QueryTerm", tuple[float, TermValue]]]]  # noqa: UP007

_WEIGHT = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*\*\s*")
_QUOTES = "\"'"


class QuerySyntaxError(UsageError):
    """A query string that does not parse; ``position`` is the 0-based offset the message points at."""

    def __init__(self, query: str, position: int, what: str) -> None:
        self.query, self.position = query, position
        one_line = query.replace("\n", " ").replace("\t", " ")
        super().__init__(f"query syntax error at position {position + 1}: {what}\n  {one_line}\n  {' ' * position}^")


@dataclass(frozen=True)
class QueryTerm:
    """One weighted part of a query: text (``str``) or an image (a path or a decoded PIL image)."""

    weight: float
    value: TermValue

    @property
    def kind(self) -> str:
        return "text" if isinstance(self.value, str) else "image"

    def describe(self) -> str:
        if isinstance(self.value, str):
            what = '"' + self.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif isinstance(self.value, Path):
            what = str(self.value)
        else:
            what = f"<image {self.value.width}x{self.value.height}>"
        return what if self.weight == 1 else f"{self.weight:g}*{what}"


def describe_query(terms: Sequence[QueryTerm]) -> str:
    """The terms written back in the query syntax (for output headers and JSON)."""
    out = ""
    for i, t in enumerate(terms):
        sign = "-" if t.weight < 0 else "+"
        body = QueryTerm(abs(t.weight), t.value).describe()
        out += (("- " if sign == "-" else "") + body) if i == 0 else f" {sign} {body}"
    return out


def _looks_like_image(value: str) -> bool:
    return Path(value).suffix.lower() in IMAGE_SUFFIXES or Path(value).expanduser().is_file()


def parse_query(query: str) -> list[QueryTerm]:
    """Terms of a query string (syntax in the module docstring); errors point at the offending position."""
    if not isinstance(query, str):
        raise InputTypeError(f"parse_query takes a string, got {type(query).__name__}")
    n, pos = len(query), 0
    terms: list[QueryTerm] = []

    def skip() -> None:
        nonlocal pos
        while pos < n and query[pos].isspace():
            pos += 1

    def operator(op: str) -> float:
        nonlocal pos
        pos += 1
        skip()
        if pos == n:
            raise QuerySyntaxError(query, pos, f"expected a term after '{op}'")
        return -1.0 if op == "-" else 1.0

    skip()
    if pos == n:
        raise QuerySyntaxError(query, 0, "the query is empty")
    sign = 1.0
    if query[pos] in "+-":
        sign = operator(query[pos])
    while True:
        weight = 1.0
        m = _WEIGHT.match(query, pos)
        if m:
            weight = float(m.group(1))
            pos = m.end()
            if pos == n:
                raise QuerySyntaxError(query, pos, "expected a term after the weight")
        c = query[pos]
        if c in _QUOTES:
            start, pos, chars = pos, pos + 1, []
            while pos < n and query[pos] != c:
                if query[pos] == "\\" and pos + 1 < n and query[pos + 1] in _QUOTES + "\\":
                    pos += 1
                chars.append(query[pos])
                pos += 1
            if pos == n:
                raise QuerySyntaxError(query, start, f"unterminated quote {c}")
            pos += 1
            text = "".join(chars)
            if not text.strip():
                raise QuerySyntaxError(query, start, "empty text term")
            terms.append(QueryTerm(sign * weight, text))
        elif c in "+-*":
            raise QuerySyntaxError(query, pos, f"expected a term, found '{c}'")
        else:
            start = pos
            while pos < n and query[pos] != '"' and not (
                    query[pos] in "+-" and query[pos - 1].isspace()):
                pos += 1
            value = query[start:pos].rstrip()
            terms.append(QueryTerm(sign * weight, Path(value).expanduser() if _looks_like_image(value) else value))
        skip()
        if pos == n:
            return terms
        if query[pos] not in "+-":
            raise QuerySyntaxError(query, pos, "expected '+' or '-' between terms")
        sign = operator(query[pos])


def query_terms(query: QueryLike) -> list[QueryTerm]:
    """Any accepted query form as terms: a string (parsed), a ``Path`` or PIL image, or a list of
    ``(weight, text-or-image)`` pairs / ``QueryTerm``s (no parsing: a ``str`` there is text)."""
    if isinstance(query, str):
        return parse_query(query)
    if isinstance(query, (Path, Image.Image)):
        return [QueryTerm(1.0, query)]
    if not isinstance(query, Sequence) or not query:
        raise InputTypeError("a query is a string, an image path, a PIL image, or a non-empty list of "
                             f"(weight, text-or-image) pairs; got {query!r:.80}")
    terms = []
    for item in query:
        if isinstance(item, QueryTerm):
            terms.append(item)
            continue
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (int, float))
                and isinstance(item[1], (str, Path, Image.Image))):
            raise InputTypeError(f"query term {item!r:.80}: expected (weight, text or Path or PIL image)")
        if isinstance(item[1], str) and not item[1].strip():
            raise UsageError("query term: empty text")
        terms.append(QueryTerm(float(item[0]), item[1]))
    return terms


def _read(term: QueryTerm) -> Image.Image:
    if isinstance(term.value, Image.Image):
        return term.value
    try:
        return load_image(term.value)
    except ImageError as e:
        raise ImageError(f"query image {e}") from None


def embed_terms(encoder: Encoder, terms: Sequence[QueryTerm]) -> np.ndarray:
    """``float32 [len(terms), D]``: each term's L2-normalised embedding (texts and images batched)."""
    out = np.zeros((len(terms), encoder.embed_dim), dtype=np.float32)
    text_rows = [i for i, t in enumerate(terms) if t.kind == "text"]
    image_rows = [i for i, t in enumerate(terms) if t.kind == "image"]
    images = [_read(terms[i]) for i in image_rows]  # read them all first: a bad file fails before any model call
    if text_rows:
        out[text_rows] = encoder.encode_text([str(terms[i].value) for i in text_rows])
    if image_rows:
        out[image_rows] = encoder.encode_images(images)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def combine(embeddings: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """``Σ wᵢ eᵢ`` renormalised; refuses a combination that cancels out (nothing to rank by)."""
    v = (np.asarray(weights, dtype=np.float64)[:, None] * np.asarray(embeddings, dtype=np.float64)).sum(0)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm < 1e-6:
        raise UsageError("the query's terms cancel out (their weighted sum is the zero vector): nothing to rank by")
    return (v / norm).astype(np.float32)


def query_vector(encoder: Encoder, query: QueryLike) -> np.ndarray:
    """The unit ``float32 [D]`` vector of a query in any accepted form (see ``query_terms``)."""
    terms = query_terms(query)
    return combine(embed_terms(encoder, terms), [t.weight for t in terms])
