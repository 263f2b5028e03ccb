"""The persistent search index: exact search against numpy, incremental add, removal, refusals, portability, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import photo
from typer.testing import CliRunner

import clipworks
from clipworks.cli import app
from clipworks.encoder import Encoder
from clipworks.errors import MissingFileError, UsageError
from clipworks.search import Index, IndexFormatError, VectorIndex
from clipworks.search.index import CACHE_NAME

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
GOOD = ["0_astronaut.jpg", "1_coffee.jpg", "2_chelsea.jpg", "sub/rocket.png"]
BAD = ["empty.png", "notes.png", "truncated.jpg"]


class Spy:
    """Records which files went through the model."""

    def __init__(self, encoder: Encoder, monkeypatch) -> None:
        self.paths: list[str] = []
        real = encoder.encode_files

        def encode_files(paths, **kw):
            self.paths += [Path(p).name for p in paths]
            return real(paths, **kw)

        monkeypatch.setattr(encoder, "encode_files", encode_files)


def brute_force(index: Index, queries: np.ndarray, k: int, ids: np.ndarray | None = None):
    ids = index.all_ids() if ids is None else np.asarray(ids)
    scores = queries @ index.vectors(ids).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def rows_and_vectors(index: Index) -> dict[str, np.ndarray]:
    ids = index.all_ids()
    return {item.path: v for item, v in zip(index.items(ids), index.vectors(ids))}


@pytest.fixture()
def built(tmp_path, image_dir, tiny_encoder) -> Index:
    index = Index.create(tmp_path / "idx", image_dir, tiny_encoder)
    index.add()
    yield index
    index.close()


def test_build_embeds_good_files_lists_bad_ones_and_search_is_exact(tmp_path, image_dir, tiny_encoder):
    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as index:
        report = index.add()
        assert (report.added, report.failed, report.embedded) == (4, 3, 4)
        assert sorted(p.name for p, _ in report.failures) == BAD
        assert all(str(p) in reason for p, reason in report.failures)
        ids = index.all_ids()
        items = index.items(ids)
        assert sorted(i.path for i in items) == GOOD and len(index) == 4
        # the stored vectors are the encoder's, and metadata is the file's
        direct = tiny_encoder.encode_files([image_dir / i.path for i in items]).features
        assert np.allclose(index.vectors(ids), direct, atol=1e-6)
        for item in items:
            f = image_dir / item.path
            assert item.size == f.stat().st_size and item.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
        queries = direct + 0.05 * np.random.default_rng(0).standard_normal(direct.shape).astype(np.float32)
        for k in (1, 3):
            scores, found = index.search_vectors(queries, k)
            ref_scores, ref_ids = brute_force(index, queries, k)
            assert (found == ref_ids).all() and np.allclose(scores, ref_scores, atol=1e-5)
        scores, found = index.search_vectors(direct[0], 100)  # no silent cap, and no padding
        assert found.shape == (4,) and found[0] == ids[0] and sorted(found) == sorted(ids)
        subset = ids[[1, 3]]
        _, found = index.search_vectors(queries, 10, ids=np.append(subset, 999))
        assert (found == brute_force(index, queries, 10, subset)[1]).all() and found.shape == (4, 2)


def test_exact_top10_identical_to_brute_force_on_10k():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(5, 10_005, dtype=np.int64)
    vi = VectorIndex("flat", 64)
    vi.add(ids, x)
    q = x[rng.choice(10_000, 50)] + 0.1 * rng.standard_normal((50, 64)).astype(np.float32)
    _, found = vi.search(q, 10)
    assert (found == ids[np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]]).all()


def test_hnsw_and_ivfpq_vector_indexes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 2
    q = x[:40] + 0.2 * rng.standard_normal((40, 32)).astype(np.float32)
    exact = ids[np.argsort(-(q @ x.T), axis=1)[:, :10]]

    hnsw = VectorIndex("hnsw", 32, {"M": 16})
    hnsw.add(ids, x)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hnsw.search(q, 10)[1], exact)])
    assert recall >= 0.95
    hnsw.remove(ids[:100])  # HNSW cannot delete: tombstones, filtered out of every search
    assert hnsw.size == 2900 and len(hnsw.tombstones) == 100 and not np.isin(hnsw.search(q, 50)[1], ids[:100]).any()
    hnsw.remove(ids[100:700])  # past REBUILD_FRACTION: the graph is rebuilt without them
    assert hnsw.tombstones == set() and hnsw.index.ntotal == 2300 and (hnsw.ids() == ids[700:]).all()

    ivf = VectorIndex("ivfpq", 32, {"nlist": 8, "m": 8, "train_min": 2000})
    ivf.add(ids[:1500], x[:1500])
    assert not ivf.maybe_train() and not ivf.trained  # too few vectors: exact until train_min
    assert (ivf.search(q, 10)[1] == ids[np.argsort(-(q @ x[:1500].T), axis=1)[:, :10]]).all()
    ivf.add(ids[1500:], x[1500:])
    assert ivf.maybe_train() and ivf.trained and ivf.size == 3000 and (ivf.ids() == ids).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ivf.search(q, 10)[1], exact)])
    assert recall >= 0.5  # 8 bytes a vector: approximate, but finds the neighbourhood
    ivf.remove(ids[:10])
    assert ivf.size == 2990 and not np.isin(ids[:10], ivf.ids()).any()


def test_index_kinds_through_index(tmp_path, image_dir, tiny_encoder):
    for kind, options in (("hnsw", {"M": 8}), ("ivfpq", {"nlist": 2, "m": 8, "nbits": 2, "train_min": 3})):
        with Index.create(tmp_path / kind, image_dir, tiny_encoder, kind=kind, **options) as index:
            index.add()
            ids = index.all_ids()
            q = index.vectors(ids)
            assert (index.search_vectors(q, 2, ids=ids[:3])[1] == brute_force(index, q, 2, ids[:3])[1]).all()
            assert index.remove("sub/rocket.png") == 1
            assert ids[-1] not in index.search_vectors(q, 10)[1]
            info = index.info()
            assert info["kind"] == kind and info["count"] == 3
            index.tune(**({"ef_search": 4} if kind == "hnsw" else {"nprobe": 1}))
            assert index.search_vectors(q, 3)[1].shape == (4, 3)
            with pytest.raises(UsageError, match="tunes a"):
                index.tune(**({"nprobe": 4} if kind == "hnsw" else {"ef_search": 1}))
        with Index.open(tmp_path / kind) as index:  # the saved cache agrees with the database
            assert index._vectors.size == len(index) == 3 and set(index.search_vectors(q[0], 10)[1]) == set(ids[:3])
    with pytest.raises(UsageError, match="unknown option 'efsearch' for a hnsw index"):
        Index.create(tmp_path / "bad", image_dir, tiny_encoder, kind="hnsw", efsearch=3)
    with pytest.raises(UsageError, match="unknown index kind 'lsh'"):
        Index.create(tmp_path / "bad", image_dir, tiny_encoder, kind="lsh")
    with pytest.raises(UsageError, match="m=7 must divide the embedding dimension 64"):  # not 10k items later
        Index.create(tmp_path / "bad", image_dir, tiny_encoder, kind="ivfpq", m=7)
    assert not (tmp_path / "bad").exists()


def test_incremental_add(built, image_dir, tiny_encoder, monkeypatch):
    spy = Spy(tiny_encoder, monkeypatch)
    before = rows_and_vectors(built)
    ids_before = {i.path: i.id for i in built.items(built.all_ids())}

    report = built.add()  # nothing changed: nothing embedded (the bad files are retried and fail again)
    assert (report.unchanged, report.added, report.updated, report.removed) == (4, 0, 0, 0)
    assert sorted(spy.paths) == BAD
    spy.paths.clear()

    os.utime(image_dir / "1_coffee.jpg", ns=(1, 10**18))  # touched, same bytes: re-hashed, not re-embedded
    photo("horse").resize((80, 80)).save(image_dir / "2_chelsea.jpg")  # changed bytes: re-embedded
    (image_dir / "deep").mkdir()
    shutil.move(image_dir / "0_astronaut.jpg", image_dir / "deep" / "moved.jpg")  # moved: vector reused
    shutil.copy(image_dir / "1_coffee.jpg", image_dir / "copy.jpg")  # a copy: vector reused
    (image_dir / "sub" / "rocket.png").unlink()  # gone
    for bad in BAD:
        (image_dir / bad).unlink()
    report = built.add()
    assert (report.added, report.updated, report.moved, report.unchanged, report.removed, report.failed) == \
           (1, 1, 1, 1, 1, 0)
    assert spy.paths == ["2_chelsea.jpg"] and report.embedded == 1 and report.reused == 2
    after = rows_and_vectors(built)
    assert sorted(after) == ["1_coffee.jpg", "2_chelsea.jpg", "copy.jpg", "deep/moved.jpg"]
    assert np.array_equal(after["deep/moved.jpg"], before["0_astronaut.jpg"])
    assert np.array_equal(after["copy.jpg"], before["1_coffee.jpg"])
    assert np.array_equal(after["1_coffee.jpg"], before["1_coffee.jpg"])
    assert np.allclose(after["2_chelsea.jpg"], tiny_encoder.encode_files([image_dir / "2_chelsea.jpg"]).features[0],
                       atol=1e-6)
    ids_after = {i.path: i.id for i in built.items(built.all_ids())}
    assert ids_after["deep/moved.jpg"] == ids_before["0_astronaut.jpg"]  # a move keeps the id
    assert ids_after["2_chelsea.jpg"] != ids_before["2_chelsea.jpg"]  # new content, new id
    assert built.items([ids_after["1_coffee.jpg"]])[0].mtime == pytest.approx(1e9)
    # the FAISS side holds exactly the database's vectors
    assert (built._vectors.ids() == built.all_ids()).all()
    q = built.vectors(built.all_ids())
    scores, found = built.search_vectors(q, 4)  # copy.jpg ties with 1_coffee.jpg: compare scores, then each id's
    assert np.allclose(scores, brute_force(built, q, 4)[0], atol=1e-5)
    assert np.allclose(scores, np.einsum("md,mkd->mk", q, built.vectors(found.ravel()).reshape(*found.shape, -1)),
                       atol=1e-5)
    # and the result equals a clean build of the folder as it is now
    spy.paths.clear()
    with Index.create(image_dir.parent / "clean", image_dir, tiny_encoder) as clean:
        clean.add()
        fresh = rows_and_vectors(clean)
    assert sorted(fresh) == sorted(after) and all(np.allclose(fresh[p], after[p], atol=1e-6) for p in fresh)


def test_two_files_swapping_contents_reuse_each_others_vectors(built, image_dir, tiny_encoder, monkeypatch):
    before = rows_and_vectors(built)
    a, b = image_dir / "0_astronaut.jpg", image_dir / "1_coffee.jpg"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)  # each new content is the other row's, which this same add replaces
    spy = Spy(tiny_encoder, monkeypatch)
    report = built.add()
    assert (report.updated, report.reused, report.embedded) == (2, 2, 0) and sorted(spy.paths) == BAD
    after = rows_and_vectors(built)
    assert np.array_equal(after[a.name], before[b.name]) and np.array_equal(after[b.name], before[a.name])
    assert (built._vectors.ids() == built.all_ids()).all()


def test_a_symlink_loop_indexes_each_file_once(tmp_path, image_dir, tiny_encoder):
    (image_dir / "sub" / "loop").symlink_to(image_dir, target_is_directory=True)
    (image_dir / "again").symlink_to(image_dir / "sub", target_is_directory=True)
    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as index:
        index.add()
        assert sorted(i.path for i in index.items(index.all_ids())) == GOOD


def test_add_a_subfolder_only(built, image_dir):
    (image_dir / "0_astronaut.jpg").unlink()
    photo("camera").resize((64, 64)).save(image_dir / "sub" / "camera.png")
    report = built.add(image_dir / "sub")  # only sub/ is looked at: the root's deletion is not seen yet
    assert (report.added, report.unchanged, report.removed) == (1, 1, 0) and len(built) == 5
    with pytest.raises(UsageError, match="not inside the indexed folder"):
        built.add(image_dir.parent)


def test_sidecar_captions_tags_and_api(tmp_path, image_dir, tiny_encoder):
    (image_dir / "1_coffee.txt").write_text("a cup of coffee\n")
    (image_dir / "2_chelsea.json").write_text(json.dumps({"caption": "a cat", "tags": ["cat", "pet", " "],
                                                          "url": "x"}))
    (image_dir / "sub" / "rocket.json").write_text("{not json")
    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as index:
        report = index.add()
        assert any("rocket.json" in w and "not valid JSON" in w for w in report.warnings)
        by_path = {i.path: i for i in index.items(index.all_ids())}
        assert by_path["1_coffee.jpg"].caption == "a cup of coffee" and by_path["1_coffee.jpg"].tags == []
        assert (by_path["2_chelsea.jpg"].caption, by_path["2_chelsea.jpg"].tags) == ("a cat", ["cat", "pet"])
        ids, vecs = index.caption_vectors()
        assert sorted(ids) == sorted([by_path["1_coffee.jpg"].id, by_path["2_chelsea.jpg"].id])
        expected = tiny_encoder.encode_text([index.items([i])[0].caption for i in ids])
        assert np.allclose(vecs, expected, atol=1e-6)
        tagged = index.select_ids("id IN (SELECT item_id FROM tags WHERE tag = ?)", ["pet"])
        assert list(tagged) == [by_path["2_chelsea.jpg"].id]
        assert list(index.select_ids("path GLOB ? AND size > ?", ["sub/*", 0])) == [by_path["sub/rocket.png"].id]

        index.set_caption("0_astronaut.jpg", "an astronaut")
        index.set_tags(image_dir / "0_astronaut.jpg", ["space", "nasa", "space"])
        astronaut = index.items([by_path["0_astronaut.jpg"].id])[0]
        assert (astronaut.caption, astronaut.tags) == ("an astronaut", ["nasa", "space"])
        ids, vecs = index.caption_vectors()
        assert np.allclose(vecs[list(ids).index(astronaut.id)], tiny_encoder.encode_text(["an astronaut"])[0],
                           atol=1e-6)
        with pytest.raises(MissingFileError, match="nope.jpg is not in the index"):
            index.set_caption("nope.jpg", "x")

        (image_dir / "1_coffee.txt").write_text("black coffee")
        os.utime(image_dir / "1_coffee.txt", ns=(1, 2 * 10**18))
        report = index.add()  # a changed sidecar is re-read without re-embedding the image; API values stay
        assert report.embedded == 0
        by_path = {i.path: i for i in index.items(index.all_ids())}
        assert by_path["1_coffee.jpg"].caption == "black coffee" and by_path["0_astronaut.jpg"].caption == "an astronaut"


def test_remove_by_path_folder_and_glob(built, image_dir):
    assert built.remove("nothing/here.jpg") == 0
    assert built.remove(image_dir / "1_coffee.jpg") == 1
    assert built.remove("sub") == 1
    assert built.remove("*_*.jpg") == 2 and len(built) == 0 and built._vectors.size == 0
    with pytest.raises(UsageError, match="not inside the indexed folder"):
        built.remove(image_dir.parent / "x.jpg")
    built.close()
    with Index.open(built.path, writable=True) as reopened:
        assert len(reopened) == 0 and reopened._vectors.size == 0
        assert reopened.excluded == ["1_coffee.jpg", "sub", "*_*.jpg"]
        report = reopened.add()  # removed files still in the folder stay out ...
        assert report.excluded == 4 and report.added == 0 and len(reopened) == 0
        assert reopened.include("sub") and not reopened.include("sub")
        assert reopened.add().added == 1  # ... until their pattern is included again
        assert reopened.remove("sub/rocket.png", exclude=False) == 1 and reopened.add().added == 1


def test_one_index_one_model(tmp_path, built, tiny_sigmoid_checkpoint, tiny_checkpoint):
    other = Encoder.load(str(tiny_sigmoid_checkpoint))
    built.close()
    with pytest.raises(UsageError) as e:
        Index.open(built.path, encoder=other)
    assert built.ref.describe() in str(e.value) and other.ref.describe() in str(e.value)
    random = Encoder.load("tiny-vit")
    with pytest.raises(UsageError, match="random weights.*--pretrained"):
        Index.create(tmp_path / "rnd", built.root, random)
    assert not (tmp_path / "rnd").exists()
    with Index.open(built.path) as index:  # no encoder given: the recorded checkpoint is loaded when needed
        assert index._encoder is None and index.encoder.ref.same_weights(index.ref)
        with pytest.raises(UsageError, match="do not fit this index of 64-d vectors"):
            index.search_vectors(np.zeros(32, np.float32), 3)


def test_refuses_what_is_not_an_index_and_overwrites_nothing(tmp_path, built, image_dir, tiny_encoder):
    with pytest.raises(UsageError, match="already a clipworks index"):
        Index.create(built.path, image_dir, tiny_encoder)
    with pytest.raises(UsageError, match="not an empty folder or an index"):
        Index.create(image_dir, image_dir, tiny_encoder)
    assert not (image_dir / "index.sqlite").exists()
    listing = sorted(p.name for p in image_dir.iterdir())
    for writable in (False, True):
        with pytest.raises(IndexFormatError, match="is not a clipworks index"):
            Index.open(image_dir, writable=writable)
    assert sorted(p.name for p in image_dir.iterdir()) == listing  # not even a lock file left in the photos
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexFormatError, match="not a clipworks index"):
        Index.open(junk, writable=True)
    assert (junk / "index.sqlite").read_bytes() == b"this is not a database" * 100
    assert [p.name for p in junk.iterdir()] == ["index.sqlite"]
    built.close()
    db = built.path / "index.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'format_version'")
    conn.close()
    files = {p.name: p.read_bytes() for p in built.path.iterdir()}
    with pytest.raises(IndexFormatError, match="newer clipworks.*format 2"):
        Index.open(built.path, writable=True)
    assert {p.name: p.read_bytes() for p in built.path.iterdir()} == files
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'format_version'")
    conn.close()
    with pytest.raises(IndexFormatError, match="format version 0 is not a valid version"):
        Index.open(built.path)
    with pytest.raises(MissingFileError):
        Index.open(tmp_path / "nowhere")


def test_one_writer_and_read_only(built):
    with pytest.raises(UsageError, match="another process is writing"):
        Index.open(built.path, writable=True)
    with Index.open(built.path) as reader:
        assert len(reader) == 4
        with pytest.raises(UsageError, match="read-only"):
            reader.add()


def test_moving_root_and_index_together(tmp_path, built, image_dir, tiny_encoder, monkeypatch):
    q = built.vectors(built.all_ids())
    expected = built.search_vectors(q, 3)
    built.close()
    new = tmp_path / "elsewhere" / "deeper"
    new.mkdir(parents=True)
    shutil.move(image_dir, new / "images")
    shutil.move(built.path, new / "idx")
    spy = Spy(tiny_encoder, monkeypatch)
    with Index.open(new / "idx", encoder=tiny_encoder, writable=True) as index:
        assert index.root == new / "images"
        got = index.search_vectors(q, 3)
        assert (got[1] == expected[1]).all()
        report = index.add()
        assert report.unchanged == 4 and report.removed == 0 and sorted(spy.paths) == BAD
    shutil.move(new / "idx", tmp_path / "idx-alone")  # the index alone: the root is found where it was
    with Index.open(tmp_path / "idx-alone") as index:
        assert index.root == new / "images"


def test_stale_or_broken_faiss_cache_is_rebuilt_from_the_database(built, image_dir):
    cache = built.path / CACHE_NAME
    stale = cache.read_bytes()
    built.remove("sub")
    photo("camera").resize((64, 64)).save(image_dir / "camera.png")
    built.add()
    ids = built.all_ids()
    built.close()
    cache.write_bytes(stale)  # as if killed before the cache was written: one id too many, one missing
    with Index.open(built.path) as index:
        assert (index._vectors.ids() == ids).all()
        q = index.vectors(ids)
        assert (index.search_vectors(q, 5)[1] == brute_force(index, q, 5)[1]).all()
    cache.write_bytes(b"garbage")
    with Index.open(built.path, writable=True) as index:
        assert (index._vectors.ids() == ids).all()
    assert VectorIndex.load(cache, "flat", 64, {}).size == len(ids)  # rewritten


def test_cli_build_add_remove_info(tmp_path, image_dir, tiny_checkpoint):
    idx = tmp_path / "idx"
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_checkpoint), str(image_dir), "--index", str(idx),
                            "--batch-size", "2"])
    assert r.exit_code == 0, r.stderr
    assert "4 added" in r.stdout and "skipped 3" in r.stderr and "truncated.jpg" in r.stderr
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_checkpoint), str(image_dir), "--index", str(idx)])
    assert r.exit_code == 1 and "already a clipworks index" in r.stderr
    photo("camera").resize((64, 64)).save(image_dir / "camera.png")
    r = runner.invoke(app, ["index", "add", str(idx)])
    assert r.exit_code == 0, r.stderr
    assert "1 added" in r.stdout and "4 unchanged" in r.stdout
    r = runner.invoke(app, ["index", "remove", str(idx), "*.png"])
    assert r.exit_code == 0 and "removed 2" in r.stdout
    r = runner.invoke(app, ["index", "add", str(idx)])
    assert "0 added" in r.stdout and "4 excluded" in r.stdout  # the two unreadable .png too
    r = runner.invoke(app, ["index", "add", str(idx), "--include", "*.gif"])
    assert r.exit_code == 1 and "excluded: *.png" in r.stderr
    r = runner.invoke(app, ["index", "remove", str(idx), "*.gif"])
    assert r.exit_code == 1 and "nothing" in r.stderr
    r = runner.invoke(app, ["index", "info", str(idx), "--json"])
    info = json.loads(r.stdout)
    assert info["count"] == 3 and info["dim"] == 64 and info["kind"] == "flat" and info["format_version"] == 1
    assert Path(info["root"]) == image_dir and str(tiny_checkpoint) in info["model"]
    r = runner.invoke(app, ["index", "info", str(image_dir)])
    assert r.exit_code == 1 and "not a clipworks index" in r.stderr
    r = runner.invoke(app, ["index", "build", "--model", "tiny-vit", str(image_dir), "--index", str(tmp_path / "r")])
    assert r.exit_code == 1 and "random weights" in r.stderr
    r = runner.invoke(app, ["index", "build", "--model", str(tiny_checkpoint), str(image_dir), "--index",
                            str(tmp_path / "h"), "--kind", "hnsw", "-o", "M=8", "-o", "ef_search=oops"])
    assert r.exit_code == 1 and "KEY=INTEGER" in r.stderr
    src = str(Path(clipworks.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "clipworks", "index", "info", str(idx)], capture_output=True,
                          text=True, env=env, check=False)
    assert done.returncode == 0 and "flat" in done.stdout and "3" in done.stdout


def test_add_embeddings_indexes_precomputed_vectors(tmp_path, image_dir, tiny_encoder, monkeypatch):
    files = [image_dir / p for p in GOOD[:2]]
    vectors = tiny_encoder.encode_files(files).features
    spy = Spy(tiny_encoder, monkeypatch)
    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as index:
        ids = index.add_embeddings([files[0], GOOD[1]], vectors)
        assert [i.path for i in index.items(ids)] == GOOD[:2] and np.array_equal(index.vectors(ids), vectors)
        with pytest.raises(UsageError, match="holds 64-d vectors"):
            index.add_embeddings(files, vectors[:, :8])
        outside = tmp_path / "outside.jpg"
        shutil.copy(files[0], outside)
        for escape in ("../outside.jpg", image_dir / ".." / "outside.jpg"):  # an item's path never leaves the root
            with pytest.raises(UsageError, match="not a file inside the indexed folder"):
                index.add_embeddings([escape], vectors[:1])
        assert sorted(i.path for i in index.items(index.all_ids())) == GOOD[:2]
        report = index.add()  # the two files count as indexed: only the other two good ones are embedded
        assert (report.unchanged, report.added) == (2, 2) and sorted(spy.paths) == sorted(BAD + ["2_chelsea.jpg",
                                                                                               "rocket.png"])


def test_ivfpq_search_reranks_with_stored_vectors(tmp_path, tiny_encoder):
    """Quantised scores alone miss neighbours; re-scoring rerank·k candidates from the store finds them."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((40, 64)).astype(np.float32)
    x = centres[rng.integers(0, 40, 2400)] + 0.6 * rng.standard_normal((2400, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    root = tmp_path / "files"
    root.mkdir()
    for i in range(len(x)):
        (root / f"{i:05d}.bin").write_bytes(i.to_bytes(4, "little"))
    q = x[:30] + 0.3 * rng.standard_normal((30, 64)).astype(np.float32)
    recalls = {}
    for rerank in (1, 10):
        with Index.create(tmp_path / f"ivf{rerank}", root, tiny_encoder, kind="ivfpq", nlist=16, m=4, nbits=6,
                          train_min=2000, rerank=rerank) as index:
            ids = np.array(index.add_embeddings([f"{i:05d}.bin" for i in range(len(x))], x))
            assert index._vectors.trained
            scores, found = index.search_vectors(q, 10)
            exact = ids[np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]]
            recalls[rerank] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
            if rerank > 1:  # re-ranked scores are the exact inner products of the stored vectors
                np.testing.assert_allclose(scores, np.einsum("md,mkd->mk", q, index.vectors(found.ravel()).reshape(
                    30, 10, 64)), rtol=1e-5, atol=1e-6)
    assert recalls[10] >= 0.85 and recalls[10] > recalls[1] + 0.2, recalls
