"""The HTTP service in-process: every route against the Python API's own answers, micro-batching, hardening,
and index updates while searching."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastapi.testclient import TestClient

from clipworks.search.index import Index
from clipworks.search.retrieve import search
from clipworks.serve import ServeSettings, create_app

KEY = "s3cret-key"


def jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture()
def served(tmp_path, image_dir, tiny_encoder, one_thread):
    """A tiny index of ``image_dir`` (4 good images) and a client of the app serving it."""
    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as built:
        built.add()
    index = Index.open(tmp_path / "idx", encoder=tiny_encoder)
    app = create_app(index, tiny_encoder, settings=ServeSettings(api_key=KEY, max_upload_bytes=200_000))
    with TestClient(app) as client:
        yield client, index
    index.close()


def test_healthz_and_items(served, tiny_encoder):
    client, index = served
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["items"] == len(index) == 4 and body["dim"] == 64
    assert "/" not in body["model"].split(",")[0]  # the checkpoint's name, not its server path
    for item in index.items(index.all_ids()):
        got = client.get(f"/items/{item.id}").json()
        assert (got["id"], got["path"], got["size"], got["tags"]) == (item.id, item.path, item.size, item.tags)
        assert got["mtime"] == pytest.approx(item.mtime)


def test_embed_text_and_image_equal_the_encoder(served, tiny_encoder, photos):
    client, _ = served
    texts = ["a photo of an astronaut", "a cup of coffee", "ünïcode ✓"]
    r = client.post("/embed/text", json={"texts": texts})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["embeddings"], dtype=np.float32)
    assert r.json()["dim"] == 64 and got.shape == (3, 64)
    np.testing.assert_allclose(got, tiny_encoder.encode_text(texts), atol=1e-6)

    data = jpeg(photos["coffee"].resize((80, 60)))
    r = client.post("/embed/image", files={"file": ("coffee.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    want = tiny_encoder.encode_images([Image.open(io.BytesIO(data))])[0]
    np.testing.assert_allclose(np.array(r.json()["embedding"], dtype=np.float32), want, atol=1e-6)


def test_search_get_post_image_and_more_like_this_equal_search(served, image_dir):
    client, index = served
    for k, offset in [(2, 0), (2, 2), (10, 0), (3, 3)]:
        want = search(index, "an astronaut", k=k, offset=offset)
        for r in (client.get("/search", params={"q": "an astronaut", "k": k, "offset": offset}),
                  client.post("/search", json={"q": "an astronaut", "k": k, "offset": offset})):
            assert r.status_code == 200, r.text
            page = r.json()
            assert [h["id"] for h in page["hits"]] == [h.id for h in want.hits]
            assert [h["rank"] for h in page["hits"]] == [h.rank for h in want.hits]
            np.testing.assert_allclose([h["score"] for h in page["hits"]], [h.score for h in want.hits], atol=1e-5)
            assert (page["total"], page["offset"], page["k"], page["has_more"]) == (want.total, offset, k, want.has_more)
            assert all(not h["path"].startswith("/") for h in page["hits"])
    # a query image: an indexed image finds itself first
    data = (image_dir / "1_coffee.jpg").read_bytes()
    r = client.post("/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "2"})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["path"] == "1_coffee.jpg" and len(r.json()["hits"]) == 2
    want = search(index, image_dir / "1_coffee.jpg", k=2)
    assert [h["id"] for h in r.json()["hits"]] == [h.id for h in want.hits]
    # more like this: ranked by the item's stored vector
    first = index.items(index.all_ids())[2]
    r = client.post("/search", json={"id": first.id, "k": 4})
    want = search(index, index.vectors([first.id])[0], k=4)
    assert [h["id"] for h in r.json()["hits"]] == [h.id for h in want.hits]
    assert r.json()["hits"][0]["id"] == first.id
    assert client.get("/search", params={"id": first.id, "k": 4}).json()["hits"] == r.json()["hits"]
    # filters: a folder
    r = client.get("/search", params={"q": "rocket", "folder": "sub"})
    assert [h["path"] for h in r.json()["hits"]] == ["sub/rocket.png"] and r.json()["total"] == 1
    r = client.post("/search", json={"q": "rocket", "filters": {"folder": "sub"}})
    assert [h["path"] for h in r.json()["hits"]] == ["sub/rocket.png"]


def test_thumb_and_image_serve_indexed_files_only(served, image_dir):
    client, index = served
    item = next(i for i in index.items(index.all_ids()) if i.path == "0_astronaut.jpg")
    r = client.get(f"/thumb/{item.id}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and max(thumb.size) <= 256 and thumb.size == (96, 64)
    r = client.get(f"/image/{item.id}")
    assert r.status_code == 200 and r.content == (image_dir / "0_astronaut.jpg").read_bytes()
    for bad in ["/thumb/..%2F..%2Fetc%2Fpasswd", "/thumb/../../etc/passwd", "/image/%2Fetc%2Fpasswd",
                "/items/-1", "/items/abc", "/thumb/999999", "/image/99999999999999999999999999", "/items/1.5"]:
        r = client.get(bad)
        assert 400 <= r.status_code < 500, (bad, r.status_code)
        assert "root:" not in r.text


def test_classify(served, tiny_encoder, photos):
    from clipworks.zeroshot import ZeroShotClassifier

    client, _ = served
    data = jpeg(photos["astronaut"].resize((64, 64)))
    labels = ["astronaut", "coffee", "cat"]
    r = client.post("/classify", files={"file": ("a.jpg", data, "image/jpeg")},
                    data={"labels": "astronaut, coffee,cat", "k": "2"})
    assert r.status_code == 200, r.text
    clf = ZeroShotClassifier.build(tiny_encoder, labels, "simple")
    probs = clf.predict(tiny_encoder.encode_images([Image.open(io.BytesIO(data))]))[0]
    order = np.argsort(-probs)[:2]
    got = r.json()["predictions"]
    assert [p["label"] for p in got] == [labels[i] for i in order]
    np.testing.assert_allclose([p["probability"] for p in got], probs[order], atol=1e-5)
    assert r.json()["sigmoid"] is False
    r = client.post("/classify", files={"file": ("a.jpg", data, "image/jpeg")},
                    data={"labels": json.dumps(labels), "templates": json.dumps(["a {} photo", "the {}"])})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3
    r = client.post("/classify", files={"file": ("a.jpg", data, "image/jpeg")},
                    data={"labels": "a,b", "templates": "/etc/passwd"})
    assert r.status_code == 422 and "templates" in r.json()["detail"]
