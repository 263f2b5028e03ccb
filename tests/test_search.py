"""The query side of the search index: query syntax, combined query vectors, filters, paging, output formats,
near-duplicate groups and the ``clipworks search`` / ``clipworks index duplicates`` commands."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipworks.errors import UsageError
from clipworks.image.decode import ImageError
from clipworks.search.duplicates import duplicate_groups, group_pairs, knn_pairs
from clipworks.search.filters import FIELDS, Filters, parse_size, parse_time
from clipworks.search.query import (
    QuerySyntaxError,
    QueryTerm,
    combine,
    describe_query,
    embed_terms,
    parse_query,
    query_terms,
    query_vector,
)


# -- query syntax ------------------------------------------------------------------------------------------------
def test_parse_combined_query_weights_and_negatives():
    terms = parse_query('"beach" + 0.5*photo.jpg - "people"')
    assert terms == [QueryTerm(1.0, "beach"), QueryTerm(0.5, Path("photo.jpg")), QueryTerm(-1.0, "people")]
    assert [t.kind for t in terms] == ["text", "image", "text"]
    assert parse_query(describe_query(terms)) == terms  # the description is itself a query


@pytest.mark.parametrize("query, expected", [
    ("a dog on the beach", [(1.0, "a dog on the beach")]),  # the shell strips the quotes of a plain query
    ("black-and-white photo", [(1.0, "black-and-white photo")]),  # '-' inside a word is no operator
    ("a dog's toy - cats", [(1.0, "a dog's toy"), (-1.0, "cats")]),
    ('-"x" + 2*\'red car\'', [(-1.0, "x"), (2.0, "red car")]),
    ('"a"-"b"', [(1.0, "a"), (-1.0, "b")]),  # operators right after a closing quote
    ('"say \\"hi\\""', [(1.0, 'say "hi"')]),  # backslash escapes the quote
    ("'+ and -'", [(1.0, "+ and -")]),  # operators inside quotes are text
    ("3 dogs", [(1.0, "3 dogs")]),  # a number without '*' is no weight
    (".25 * 'x' +1.5*y", [(0.25, "x"), (1.5, "y")]),
])
def test_parse_text_forms(query, expected):
    assert [(t.weight, t.value) for t in parse_query(query)] == expected


def test_unquoted_term_is_an_image_by_suffix_or_existing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan").write_bytes(b"x")
    terms = parse_query("2020.JPG + scan + scanner - my-photo.webp")
    assert [t.kind for t in terms] == ["image", "image", "text", "image"]
    assert terms[3] == QueryTerm(-1.0, Path("my-photo.webp"))


@pytest.mark.parametrize("query, position, what", [
    ('"beach" +', 10, "expected a term after '+'"),
    ('"beach', 1, "unterminated quote"),
    ('"beach" photo.jpg', 9, "expected '+' or '-' between terms"),
    ('a "b"', 3, "expected '+' or '-' between terms"),
    ("0.5*", 5, "expected a term after the weight"),
    ('"a" + * b', 7, "expected a term, found '*'"),
    ('"a" + ""', 7, "empty text term"),
    ("   ", 1, "the query is empty"),
    ("-", 2, "expected a term after '-'"),
])
def test_syntax_errors_point_at_the_position(query, position, what):
    with pytest.raises(QuerySyntaxError) as e:
        parse_query(query)
    assert e.value.position + 1 == position and isinstance(e.value, UsageError)
    message = str(e.value)
    assert f"at position {position}: {what}" in message
    first, shown, caret = message.split("\n")
    assert shown == "  " + query and caret == "  " + " " * (position - 1) + "^"


def test_python_query_forms(photos):
    image = photos["coffee"]
    assert query_terms(image) == [QueryTerm(1.0, image)]
    assert query_terms(Path("a.png")) == [QueryTerm(1.0, Path("a.png"))]
    # in the list form a str is always text, never parsed
    assert query_terms([(1, "x + y"), (-0.5, image)]) == [QueryTerm(1.0, "x + y"), QueryTerm(-0.5, image)]
    for bad in ([], [("x", 1.0)], [(1.0, 3)], 42):
        with pytest.raises((UsageError, TypeError)):
            query_terms(bad)


def test_combined_query_vector_is_the_renormalised_weighted_sum(tiny_encoder, photos, tmp_path, one_thread):
    photos["chelsea"].save(tmp_path / "cat.png")
    q = f'"a beach" + 0.5*{tmp_path / "cat.png"} - 0.25*"people"'
    got = query_vector(tiny_encoder, q)
    t = tiny_encoder.encode_text(["a beach", "people"])
    i = tiny_encoder.encode_images([photos["chelsea"]])[0]
    by_hand = t[0] + 0.5 * i - 0.25 * t[1]
    assert np.allclose(got, by_hand / np.linalg.norm(by_hand), atol=1e-5)
    assert abs(np.linalg.norm(got) - 1) < 1e-5
    # the list form and a PIL image give the same vector
    same = query_vector(tiny_encoder, [(1, "a beach"), (0.5, photos["chelsea"]), (-0.25, "people")])
    assert np.allclose(got, same, atol=1e-5)
    # one term: its own normalised embedding
    assert np.allclose(query_vector(tiny_encoder, "a beach"), t[0], atol=1e-6)
    with pytest.raises(UsageError, match="cancel out"):
        query_vector(tiny_encoder, '"a beach" - "a beach"')


def test_unreadable_query_image_names_it(tiny_encoder, tmp_path, image_dir):
    for bad in (image_dir / "truncated.jpg", image_dir / "notes.png", tmp_path / "missing.jpg"):
        with pytest.raises(ImageError, match="query image") as e:
            embed_terms(tiny_encoder, parse_query(f'"x" + {bad}'))
        assert str(bad) in str(e.value)


def test_combine_refuses_zero_and_normalises():
    e = np.eye(3, dtype=np.float32)
    assert np.allclose(combine(e[:2], [3, -4]), [0.6, -0.8, 0])
    with pytest.raises(UsageError):
        combine(e[:1], [0.0])


# -- filters -----------------------------------------------------------------------------------------------------
def test_filter_parsing():
    f = Filters.parse(folder="./2024/trips/", after="2024-05-01", before="2024-05-02T00:00:00", min_size="1.5k",
                      max_size="2MiB", tags=["cat"], where=["tag=pet", "min-size=2"][:1])
    assert f.folder == "2024/trips" and f.tags == ("cat", "pet")
    assert f.after == datetime(2024, 5, 1).timestamp() and f.before == datetime(2024, 5, 2).timestamp()
    assert (f.min_size, f.max_size) == (1500, 2 * 1024**2)
    assert Filters.parse(where=["max_size=10", "folder=a"]) == Filters(folder="a", max_size=10)
    assert Filters.parse(folder=".").is_empty() and Filters().sql() == ("1", [])
    assert [parse_size(s) for s in ("0", "12", "1k", "1KB", "1KiB", "2.5M", "1g")] == [0, 12, 1000, 1000, 1024,
                                                                                     2_500_000, 10**9]
    assert parse_time("2024-01-01T00:00:00+00:00") == 1704067200.0


@pytest.mark.parametrize("where, message", [
    (["colour=red"], "unknown filter field 'colour'; the fields are: " + ", ".join(FIELDS)),
    (["folder"], "expected FIELD=VALUE"),
    (["after=yesterday"], "not an ISO date"),
    (["min_size=big"], "is not a size"),
    (["after=2024-02-01", "before=2024-01-01"], "nothing can match"),
    (["min_size=2k", "max_size=1k"], "above max_size"),
    (["folder=../x"], "'..' is not allowed"),
    (["folder=a", "folder=b"], "given twice"),
])
def test_filter_errors(where, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Filters.parse(where=where)


def test_unknown_filter_field_in_a_mapping_lists_the_fields():
    with pytest.raises(UsageError) as e:
        Filters.from_mapping({"folder": "a", "camera": "x"})
    assert "'camera'" in str(e.value) and all(f in str(e.value) for f in FIELDS)


def test_filter_sql_against_a_brute_force(tmp_path):
    """The SQL condition keeps exactly the rows a plain Python check keeps (same table shape as the index)."""
    rng = np.random.default_rng(0)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT, size INTEGER, mtime REAL)")
    db.execute("CREATE TABLE tags (item_id INTEGER, tag TEXT)")
    folders = ["a", "a/b", "ab", "c", "a_b", "a%"]
    rows = []
    for i in range(300):
        path = f"{folders[rng.integers(len(folders))]}/f{i}.jpg"
        size, mtime = int(rng.integers(0, 5000)), float(rng.uniform(1.6e9, 1.8e9))
        tags = {t for t in ("cat", "dog", "x y") if rng.random() < 0.4}
        rows.append((i, path, size, mtime, tags))
        db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (i, path, size, mtime))
        db.executemany("INSERT INTO tags VALUES (?, ?)", [(i, t) for t in tags])
    cases = [Filters(folder="a"), Filters(folder="a/b"), Filters(folder="a_b"), Filters(folder="a%"),
             Filters(min_size=1000, max_size=3000), Filters(after=1.7e9), Filters(before=1.65e9, tags=("cat",)),
             Filters(tags=("cat", "x y")), Filters(folder="a", after=1.62e9, before=1.75e9, min_size=10, tags=("dog",))]
    for f in cases:
        where, params = f.sql()
        got = [r[0] for r in db.execute(f"SELECT id FROM items WHERE {where} ORDER BY id", params)]
        want = [i for i, path, size, mtime, tags in rows
                if (f.folder is None or path.startswith(f.folder + "/"))
                and (f.after is None or mtime >= f.after) and (f.before is None or mtime < f.before)
                and (f.min_size is None or size >= f.min_size) and (f.max_size is None or size <= f.max_size)
                and set(f.tags) <= tags]
        assert got == want and 0 < len(want) < len(rows), f


# -- duplicate grouping on plain arrays --------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_group_pairs_is_transitive_and_ordered():
    assert group_pairs([(5, 1), (7, 8), (1, 9), (3, 3)]) == [[1, 5, 9], [7, 8]]
    assert group_pairs([]) == []


def test_knn_pairs_widen_k_and_match_all_pairs():
    """A cluster larger than the first k still comes out whole, identical to the all-pairs reference."""
    rng = np.random.default_rng(1)
    centres = _unit(rng.normal(size=(30, 32)))
    x = [centres]  # 30 loners …
    x.append(_unit(centres[0] + 0.01 * rng.normal(size=(40, 32))))  # … a cluster of 41 around the first …
    x.append(_unit(centres[1] + 0.01 * rng.normal(size=(3, 32))))  # … and one of 4 around the second
    x = np.concatenate(x)
    ids = np.arange(100, 100 + len(x))

    def knn(q, k):
        s = q @ x.T
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, top, 1), ids[top]

    pairs = knn_pairs(knn, x, ids, 0.95, k=4)
    groups = group_pairs(pairs)
    assert groups == duplicate_groups(x, 0.95, ids=ids, chunk=7)
    assert [len(g) for g in groups] == [41, 4]
