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
    _, shown, caret = message.split("\n")
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
                      max_size="2MiB", tags=["cat"], where=["tag=pet"])
    assert f.folder == "2024/trips" and f.tags == ("cat", "pet")
    assert f.after == datetime(2024, 5, 1).timestamp() and f.before == datetime(2024, 5, 2).timestamp()
    assert (f.min_size, f.max_size) == (1500, 2 * 1024**2)
    assert Filters.parse(where=["max-size=10", "folder=a", "tag=x"]) == Filters(folder="a", max_size=10, tags=("x",))
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


# -- searching a real index --------------------------------------------------------------------------------------
LAYOUT = {  # relative path → (photo, caption or None, tags)
    "trips/2023/astronaut.jpg": ("astronaut", None, []),
    "trips/2024/coffee.jpg": ("coffee", "a cup of coffee", ["drink"]),
    "trips/2024x/camera.jpg": ("camera", None, ["bw"]),  # a folder that shares a prefix with trips/2024
    "pets/chelsea.jpg": ("chelsea", "a cat on a rug", ["cat", "pet"]),
    "pets/horse.png": ("horse", "a horse", ["pet"]),
    "space/rocket.jpg": ("rocket", "a rocket launch", []),
    "space/hubble.png": ("hubble_deep_field", None, ["space"]),
    "misc/page.png": ("page", "a page of text", ["bw"]),
    "misc/a&b <c>.jpg": ("immunohistochemistry", None, []),  # a name the HTML sheet must escape
}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    import os

    from conftest import photo

    root = tmp_path_factory.mktemp("library") / "photos"
    for i, (rel, (name, caption, tags)) in enumerate(LAYOUT.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(name).resize((96 + 8 * i, 64)).save(path)
        if caption:
            path.with_suffix(".txt").write_text(caption)
        if tags:
            path.with_suffix(".json").write_text(json.dumps({"tags": tags}))
        stamp = datetime(2023, 1, 1 + 3 * i, 12).timestamp()
        os.utime(path, (stamp, stamp))
    return root


@pytest.fixture(scope="module")
def index(library, tiny_checkpoint, tiny_encoder, one_thread):
    from clipworks.search.index import Index

    with Index.create(library.parent / "idx", library, tiny_encoder) as built:
        report = built.add()
    assert report.added == len(LAYOUT) and not report.failures
    opened = Index.open(library.parent / "idx", encoder=tiny_encoder)
    yield opened
    opened.close()


def _brute(index, vector, ids=None):
    """Ids ranked by exact inner product with the stored vectors (ties by id), and their scores."""
    ids = np.asarray(index.all_ids() if ids is None else ids)
    scores = index.vectors(ids) @ vector
    order = np.lexsort((ids, -scores))
    return ids[order].tolist(), scores[order]


def test_an_indexed_image_finds_itself_first(index, library):
    from clipworks.search import search

    for rel in LAYOUT:
        page = search(index, Path(library / rel), k=2)
        assert page.hits[0].path == rel and page.hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert page.hits[0].file == library / rel and page.total == len(LAYOUT)


def test_text_search_equals_brute_force(index, tiny_encoder):
    from clipworks.search import search

    for text in ("a cat", "a rocket in space", "black-and-white page"):
        q = tiny_encoder.encode_text([text])[0]
        page = search(index, text, k=5)
        want, scores = _brute(index, q)
        assert [h.id for h in page.hits] == want[:5]
        assert np.allclose([h.score for h in page.hits], scores[:5], atol=1e-5)
        assert [h.rank for h in page.hits] == [1, 2, 3, 4, 5] and page.note is None


def test_combined_query_equals_brute_force_with_the_hand_vector(index, tiny_encoder, library):
    from clipworks.search import search

    image = library / "pets/chelsea.jpg"
    page = search(index, f'"a beach" + 0.5*{image} - "people"', k=len(LAYOUT))
    t = tiny_encoder.encode_text(["a beach", "people"])
    v = t[0] + 0.5 * tiny_encoder.encode_images([Image.open(image)])[0] - t[1]
    want, _ = _brute(index, v / np.linalg.norm(v))
    assert [h.id for h in page.hits] == want
    assert page.query == f'"a beach" + 0.5*{image} - "people"'


def _keeps(item, f: Filters) -> bool:
    return ((f.folder is None or item.path.startswith(f.folder + "/"))
            and (f.after is None or item.mtime >= f.after) and (f.before is None or item.mtime < f.before)
            and (f.min_size is None or item.size >= f.min_size) and (f.max_size is None or item.size <= f.max_size)
            and set(f.tags) <= set(item.tags))


def test_filtered_search_equals_brute_force_over_metadata(index, tiny_encoder):
    from clipworks.search import search

    items = index.items(index.all_ids())
    sizes = sorted(it.size for it in items)
    q = tiny_encoder.encode_text(["a photo"])[0]
    cases = [Filters.parse(folder="trips/2024"), Filters.parse(folder="trips"), Filters.parse(tags=["pet"]),
             Filters.parse(tags=["pet", "cat"]), Filters.parse(after="2023-01-10", before="2023-01-20T00:00"),
             Filters.parse(min_size=sizes[2], max_size=sizes[-3]), Filters.parse(where=["tag=bw", "folder=misc"]),
             Filters.parse(folder=str(index.root / "space"), root=index.root)]
    for f in cases:
        kept = [it.id for it in items if _keeps(it, f)]
        assert 0 < len(kept) < len(items), f
        page = search(index, "a photo", k=3, filters=f)
        want, _ = _brute(index, q, kept)
        assert [h.id for h in page.hits] == want[:3] and page.total == len(kept), f
    # a mapping works too, and a filter nothing passes gives an empty page that says so
    page = search(index, "a photo", filters={"folder": "nowhere"})
    assert page.hits == [] and page.total == 0 and "no hits" in page.note


def test_paging_concatenates_to_one_big_page(index):
    from clipworks.search import search

    whole = search(index, "a dog", k=len(LAYOUT))
    pages = [search(index, "a dog", k=2, offset=o) for o in range(0, len(LAYOUT), 2)]
    assert [h.id for p in pages for h in p.hits] == [h.id for h in whole.hits]
    assert [h.rank for p in pages for h in p.hits] == list(range(1, len(LAYOUT) + 1))
    last = pages[-1]
    assert len(last.hits) == 1 and not last.has_more and "only 1 of the 2" in last.note
    beyond = search(index, "a dog", k=5, offset=len(LAYOUT) - 2)  # no silent cap: the remaining two, said so
    assert [h.id for h in beyond.hits] == [h.id for h in whole.hits[-2:]] and "only 2 of the 5" in beyond.note
    past = search(index, "a dog", k=5, offset=100)
    assert past.hits == [] and "offset 100 is at or past the end (9 items)" in past.note
    for bad in ({"k": 0}, {"offset": -1}, {"target": "videos"}):
        with pytest.raises(UsageError):
            search(index, "a dog", **bad)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_pages_fit_together_when_many_items_tie(tmp_path, tiny_encoder, kind):
    """Copies of a file share one vector, so scores tie exactly; pages must still be slices of one ranking."""
    from clipworks.search import Index, search

    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(3, 64)).astype(np.float32))
    vectors = base[rng.integers(0, 3, 60)]
    (tmp_path / "img").mkdir()
    names = [f"{i:02d}.jpg" for i in range(60)]
    for name in names:
        (tmp_path / "img" / name).write_bytes(name.encode())
    with Index.create(tmp_path / "idx", tmp_path / "img", tiny_encoder, kind=kind) as index:
        index.add_embeddings(names, vectors)
        whole = [h.id for h in search(index, base[0], k=60).hits]
        assert whole == _brute(index, base[0])[0]
        for k in (1, 7, 10):
            pages = [h.id for o in range(0, 60, k) for h in search(index, base[0], k=k, offset=o).hits]
            assert pages == whole, k


def test_image_to_text_over_captions(index, library):
    from clipworks.search import search

    ids, vectors = index.caption_vectors()
    captioned = {rel for rel, (_, caption, _) in LAYOUT.items() if caption}
    assert len(ids) == len(captioned)
    image = library / "space/rocket.jpg"
    page = search(index, image, k=10, target="captions")
    v = index.vectors([index.select_ids("path = ?", ["space/rocket.jpg"])[0]])[0]
    scores = vectors @ v
    order = np.lexsort((ids, -scores))
    assert [h.id for h in page.hits] == ids[order].tolist() and page.total == len(captioned)
    assert {h.path for h in page.hits} == captioned and all(h.item.caption for h in page.hits)
    only_pets = search(index, image, target="captions", filters={"tag": "pet"})
    assert {h.path for h in only_pets.hits} == {"pets/chelsea.jpg", "pets/horse.png"}


def test_search_errors_name_the_problem(index, tmp_path):
    from clipworks.search import search

    with pytest.raises(UsageError) as e:
        search(index, "a cat", filters={"colour": "red"})
    assert "unknown filter field 'colour'" in str(e.value) and "min_size" in str(e.value)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(ImageError, match="query image") as e:
        search(index, f'"a cat" + {bad}')
    assert str(bad) in str(e.value)
    with pytest.raises(ImageError, match="no such file"):
        search(index, tmp_path / "missing.png")
    with pytest.raises(QuerySyntaxError, match="position 9"):
        search(index, '"a cat" "a dog"')
    with pytest.raises(UsageError, match="dimensions"):
        search(index, np.ones(3, np.float32))


# -- near-duplicate groups ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def copies(tmp_path_factory, tiny_encoder, one_thread):
    """Six distinct photos, an exact copy of one, two resized re-encoded copies of another."""
    from conftest import photo

    from clipworks.search.index import Index

    root = tmp_path_factory.mktemp("dups") / "photos"
    (root / "sub").mkdir(parents=True)
    for name in ("astronaut", "coffee", "rocket", "camera", "page", "horse"):
        photo(name).resize((120, 90)).save(root / f"{name}.jpg", quality=90)
    (root / "sub" / "astronaut copy.jpg").write_bytes((root / "astronaut.jpg").read_bytes())
    photo("rocket").resize((60, 45)).save(root / "sub" / "rocket-small.png")
    photo("rocket").resize((200, 150)).save(root / "rocket-big.jpg", quality=70)
    with Index.create(root.parent / "idx", root, tiny_encoder) as built:
        built.add()
    opened = Index.open(root.parent / "idx", encoder=tiny_encoder)
    yield opened
    opened.close()


def test_duplicates_groups_exact_and_resized_copies(copies):
    from clipworks.search.duplicates import duplicates

    ids = copies.all_ids()
    x = copies.vectors(ids)
    sims = x @ x.T
    groups = duplicates(copies, threshold=0.995)
    assert [[it.path for it in g] for g in groups] == [
        ["rocket-big.jpg", "rocket.jpg", "sub/rocket-small.png"], ["astronaut.jpg", "sub/astronaut copy.jpg"]]
    # the random-weight tiny model puts distinct photos close too: the threshold separates them here …
    distinct = [i for i, it in enumerate(copies.items(ids)) if "/" not in it.path and "big" not in it.path]
    assert sims[np.ix_(distinct, distinct)][~np.eye(len(distinct), dtype=bool)].max() < 0.995
    # … and at any threshold the groups are those of all pairs compared exactly
    for threshold in (0.9, 0.95, 0.97, 0.99):
        got = [sorted(it.id for it in g) for g in duplicates(copies, threshold=threshold, k=2)]
        assert sorted(got) == sorted(duplicate_groups(x, threshold, ids=ids)), threshold
    with pytest.raises(UsageError, match="threshold"):
        duplicates(copies, threshold=1.5)


# -- the commands ------------------------------------------------------------------------------------------------
def _run(*args: str):
    from typer.testing import CliRunner

    from clipworks.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_paths_json_and_table(index, library):
    from clipworks.search import search

    idx = index.path
    r = _run("search", idx, "a cat", "-k", "3", "--paths")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines == [str(h.file) for h in search(index, "a cat", k=3).hits]
    assert all(Path(line).is_absolute() and Path(line).is_file() for line in lines)
    r = _run("search", idx, '"a cat" - "a dog"', "--json", "--folder", "pets", "--tag", "cat", "-k", "4")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["total"] == 1 and data["filters"] == "folder=pets tags=cat" and data["query"] == '"a cat" - "a dog"'
    assert [h["path"] for h in data["hits"]] == ["pets/chelsea.jpg"]
    assert data["hits"][0]["caption"] == "a cat on a rug" and data["hits"][0]["tags"] == ["cat", "pet"]
    assert "only 1 of the 4" in r.stderr and "only 1" in data["note"]
    assert _run("search", idx, "a cat", "--top-k", "3", "--paths").stdout.splitlines() == lines  # as classify's
    r = _run("search", idx, "a cat", "--where", "min_size=1", "--after", "2023-01-05", "--offset", "1", "-k", "2")
    assert r.exit_code == 0, r.stderr
    assert "rank" in r.stdout and "score" in r.stdout and "ranks 2–3 of 7" in r.stdout


def test_cli_image_and_captions(index, library):
    image = library / "space/rocket.jpg"
    r = _run("search", index.path, "--image", image, "-k", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["hits"][0]["path"] == "space/rocket.jpg"
    r = _run("search", index.path, "--image", image, "--captions", "--json", "-k", "2")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["target"] == "captions" and data["total"] == sum(1 for _, c, _ in LAYOUT.values() if c) and all(h["caption"] for h in data["hits"])


def test_cli_html_contact_sheet_is_valid_escaped_and_self_contained(index, tmp_path):
    import base64
    import io
    from html.parser import HTMLParser

    sheet = tmp_path / "sheet.html"
    r = _run("search", index.path, "a <b>photo</b> & more", "-k", "20", "--html", sheet)
    assert r.exit_code == 0, r.stderr
    text = sheet.read_text(encoding="utf-8")

    class Check(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.sources, self.errors = [], [], []

        def handle_starttag(self, tag, attrs):
            if tag not in ("meta", "img", "br"):
                self.stack.append(tag)
            self.sources += [v for k, v in attrs if k in ("src", "href")]

        def handle_endtag(self, tag):
            if not self.stack or self.stack.pop() != tag:
                self.errors.append(tag)

    check = Check()
    check.feed(text)
    check.close()
    assert text.startswith("<!DOCTYPE html>") and not check.errors and not check.stack
    assert len(check.sources) == len(LAYOUT)  # one embedded thumbnail per hit, nothing else fetched
    for src in check.sources:
        assert src.startswith("data:image/jpeg;base64,")
        thumb = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert thumb.format == "JPEG" and max(thumb.size) <= 160
    assert "a&amp;b &lt;c&gt;.jpg" in text and "a&b <c>" not in text
    assert "&lt;b&gt;photo&lt;/b&gt; &amp; more" in text and "<b>photo" not in text
    assert "only 9 of the 20" in r.stderr


def test_cli_refuses_another_model_and_bad_input(index, tiny_checkpoint, tiny_sigmoid_checkpoint, tmp_path):
    r = _run("search", index.path, "a cat", "--model", tiny_sigmoid_checkpoint, "--paths")
    assert r.exit_code == 1
    message = " ".join(r.stderr.split())
    assert index.ref.describe() in message and "tiny-vit-sigmoid" in message
    r = _run("search", index.path, "a cat", "--model", tiny_checkpoint, "--paths", "-k", "1")
    assert r.exit_code == 0, r.stderr
    # a registry name is refused from its identity alone: nothing is downloaded (the test runs offline)
    r = _run("search", index.path, "a cat", "--model", "ViT-B-32", "--pretrained", "openai")
    assert r.exit_code == 1 and "ViT-B-32 --pretrained openai, 512-d" in " ".join(r.stderr.split())
    assert "cannot be downloaded" not in r.stderr
    for args, message in [
        (["a cat", "--where", "colour=red"], "unknown filter field 'colour'; the fields are: folder, after"),
        (["a cat", "--before", "soon"], "not an ISO date"),
        ([f'"a cat" + {tmp_path / "gone.jpg"}'], f"query image {tmp_path / 'gone.jpg'}: no such file"),
        (['"a cat" "b"'], "query syntax error at position 9"),
        ([], "give a QUERY, --image FILE, or both"),
        (["a cat", "--paths", "--json"], "choose one output"),
        (["a cat", "--pretrained", "x"], "--pretrained needs --model"),
        (["a cat", "--html", tmp_path], f"{tmp_path} is a folder; give a file name"),
    ]:
        r = _run("search", index.path, *args)
        assert r.exit_code == 1 and message in " ".join(r.stderr.split()), (args, r.stderr)
    r = _run("search", tmp_path / "no-index", "a cat")
    assert r.exit_code == 1 and "no-index" in r.stderr


def test_cli_real_command_pipes_paths(index):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    r = subprocess.run([sys.executable, "-m", "clipworks", "search", str(index.path), "a rocket", "-k", "2",
                        "--paths"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all(Path(p).is_file() for p in lines)


def test_cli_duplicates(copies, tmp_path):
    r = _run("index", "duplicates", copies.path, "--threshold", "0.995", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert [[m["path"] for m in g] for g in data["groups"]] == [
        ["rocket-big.jpg", "rocket.jpg", "sub/rocket-small.png"], ["astronaut.jpg", "sub/astronaut copy.jpg"]]
    assert all(Path(m["file"]).is_file() for g in data["groups"] for m in g)
    r = _run("index", "duplicates", copies.path, "--threshold", "0.995")
    assert r.exit_code == 0 and "2 near-duplicate groups" in r.stdout and "astronaut copy.jpg" in r.stdout
    sheet = tmp_path / "dups.html"
    r = _run("index", "duplicates", copies.path, "--threshold", "0.995", "--html", sheet)
    assert r.exit_code == 0 and sheet.read_text().count("data:image/jpeg;base64,") == 5
    r = _run("index", "duplicates", copies.path, "--threshold", "2")
    assert r.exit_code != 0


def test_hnsw_index_gives_the_same_pages_and_groups(index, library, tiny_encoder, tmp_path):
    """Through an HNSW index (exact at this size) search, filters, captions and duplicates agree with flat."""
    from clipworks.search import Index, duplicates, search

    with Index.create(tmp_path / "hnsw", library, tiny_encoder, kind="hnsw") as hnsw:
        hnsw.add()
        for kwargs in ({"k": 4}, {"k": 3, "offset": 2}, {"filters": {"tag": "pet"}}, {"target": "captions"}):
            want = search(index, "a cat", **kwargs)
            got = search(hnsw, "a cat", **kwargs)
            assert [h.path for h in got.hits] == [h.path for h in want.hits] and got.total == want.total, kwargs
        by_path = [[it.path for it in g] for g in duplicates(hnsw, 0.97)]
        assert by_path and by_path == [[it.path for it in g] for g in duplicates(index, 0.97)]
