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


# -- micro-batching ------------------------------------------------------------------------------------------------
class SpyEncoder:
    """The tiny encoder, counting its model calls and their sizes."""

    def __init__(self, encoder) -> None:
        self._encoder = encoder
        self.calls: list[tuple[str, int]] = []
        self.fail_on: str | None = None

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode_text(self, texts):
        self.calls.append(("text", len(texts)))
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError("model exploded at /secret/server/path.py line 3")
        return self._encoder.encode_text(texts)

    def encode_images(self, images):
        self.calls.append(("image", len(images)))
        return self._encoder.encode_images(images)


async def _concurrently(app, requests):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await asyncio.gather(*(client.request(method, url, **kw) for method, url, kw in requests))


def test_concurrent_requests_share_model_calls(tiny_encoder, photos, one_thread):
    spy = SpyEncoder(tiny_encoder)
    app = create_app(None, spy, settings=ServeSettings(max_batch=8, max_wait_ms=100))  # type: ignore[arg-type]
    texts = [f"a photo of thing number {i}" for i in range(16)]
    replies = asyncio.run(_concurrently(app, [("POST", "/embed/text", {"json": {"texts": [t]}}) for t in texts]))
    assert all(r.status_code == 200 for r in replies)
    text_calls = [n for kind, n in spy.calls if kind == "text"]
    assert sum(text_calls) == 16 and len(text_calls) < 16 and max(text_calls) <= 8  # gathered, within max_batch
    got = np.array([r.json()["embeddings"][0] for r in replies], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_encoder.encode_text(texts), atol=1e-6)  # each request got its own rows

    images = [jpeg(photos[n].resize((48 + 8 * i, 40))) for i, n in enumerate(["astronaut", "coffee", "chelsea", "rocket",
                                                                               "camera", "horse"])]
    spy.calls.clear()
    replies = asyncio.run(_concurrently(app, [("POST", "/embed/image", {"files": {"file": ("x.jpg", d, "image/jpeg")}})
                                              for d in images]))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    image_calls = [n for kind, n in spy.calls if kind == "image"]
    assert sum(image_calls) == 6 and len(image_calls) < 6
    want = tiny_encoder.encode_images([Image.open(io.BytesIO(d)) for d in images])
    np.testing.assert_allclose(np.array([r.json()["embedding"] for r in replies], dtype=np.float32), want, atol=1e-6)
    metrics = TestClient(app).get("/metrics").text
    assert 'clipworks_batch_size_count{kind="text"} ' + str(len(text_calls)) in metrics


def test_a_model_error_fails_only_its_batch():
    from clipworks.serve.batcher import MicroBatcher

    def fn(items):
        if "boom" in items:
            raise RuntimeError("boom")
        return np.array([[len(x)] for x in items], dtype=np.float32)

    batcher = MicroBatcher(fn, max_batch=2, max_wait_ms=50)

    async def run():
        return await asyncio.gather(*(batcher.submit([x]) for x in ["a", "boom", "ccc", "dddd"]),
                                    return_exceptions=True)

    out = asyncio.run(run())
    assert isinstance(out[0], RuntimeError) and isinstance(out[1], RuntimeError)  # one batch: ["a", "boom"]
    assert out[2].tolist() == [[3.0]] and out[3].tolist() == [[4.0]]  # the next batch is unharmed
    assert batcher.calls == 2


def test_a_model_error_is_a_500_without_details(tiny_encoder):
    spy = SpyEncoder(tiny_encoder)
    spy.fail_on = "explode"
    client = TestClient(create_app(None, spy, settings=ServeSettings()), raise_server_exceptions=False)  # type: ignore[arg-type]
    r = client.post("/embed/text", json={"texts": ["explode"]})
    assert r.status_code == 500 and r.json() == {"detail": "internal error (the server log has the details)"}
    assert client.post("/embed/text", json={"texts": ["fine"]}).status_code == 200


# -- hardening -----------------------------------------------------------------------------------------------------
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` pixels (a decompression bomb's header) with no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _assert_clean(r, *secrets: str) -> None:
    """A 4xx JSON error whose detail is one string with no traceback and no server path."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Traceback" not in r.text and 'File "' not in r.text
    for s in secrets:
        assert s not in r.text, (s, r.text)


def test_uploads_are_bounded_and_checked(served, image_dir, tmp_path):
    client, _ = served
    secrets = (str(tmp_path), str(image_dir), str(Path.home()))

    def post(data: bytes, name="x.jpg", route="/embed/image"):
        return client.post(route, files={"file": (name, data, "application/octet-stream")})

    big = np.random.default_rng(0).integers(0, 255, 250_000, dtype=np.uint8).tobytes()  # over the 200 kB file limit
    r = post(big)
    assert r.status_code == 413 and "file" in r.json()["detail"]
    r = post(big * 3)  # over the whole-body limit: refused from its Content-Length, before reading
    assert r.status_code == 413
    r = post(_png_header_only(30_000, 30_000))
    assert r.status_code == 413 and "pixels" in r.json()["detail"]
    _assert_clean(r, *secrets)
    r = post(b"this is not an image at all", "notes.png")
    assert r.status_code == 415 and r.json()["detail"].startswith("file:")
    r = post((image_dir / "notes.png").read_bytes())
    assert r.status_code == 415
    r = post((image_dir / "truncated.jpg").read_bytes())
    assert r.status_code == 422 and r.json()["detail"].startswith("file:")
    _assert_clean(r, *secrets)
    r = post(b"")
    assert r.status_code == 422
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert post(eps).status_code == 415  # formats that run other programs are never opened
    r = client.post("/embed/image", data={"file": "just a string"})
    assert r.status_code == 422 and "file" in r.json()["detail"]
    r = client.post("/search", files={"file": ("x", b"junk", "image/png")}, data={"k": "2"})
    assert r.status_code == 415
    r = client.post("/search", files={"file": ("x", _png_header_only(30_000, 30_000), "image/png")})
    assert r.status_code == 413


def test_pixel_limit_is_a_setting(tiny_encoder, image_dir):
    client = TestClient(create_app(None, tiny_encoder, settings=ServeSettings(max_pixels=1000)))
    r = client.post("/embed/image", files={"file": ("a.jpg", (image_dir / "0_astronaut.jpg").read_bytes())})
    assert r.status_code == 413 and "96×64" in r.json()["detail"]


def test_streamed_body_is_cut_off_at_the_limit(tiny_encoder):
    app = create_app(None, tiny_encoder, settings=ServeSettings(max_upload_bytes=10_000))

    async def chunks():
        for _ in range(100):
            yield b"x" * 10_000

    import httpx

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post("/embed/text", content=chunks(), headers={"content-type": "application/json"})

    r = asyncio.run(run())
    assert r.status_code == 413


def test_bad_requests_are_422_naming_the_field(served, tmp_path, image_dir):
    client, _ = served
    secrets = (str(tmp_path), str(image_dir), "/etc", str(Path.home()))
    cases = [
        ("POST", "/embed/text", {"content": b"{not json", "headers": {"content-type": "application/json"}}, None),
        ("POST", "/embed/text", {"json": {"texts": "one string"}}, "texts"),
        ("POST", "/embed/text", {"json": {"texts": [1, 2]}}, "texts"),
        ("POST", "/embed/text", {"json": {"text": ["typo"]}}, "text"),
        ("POST", "/embed/text", {"json": {"texts": []}}, "texts"),
        ("POST", "/embed/text", {"json": {"texts": ["x" * 1001]}}, "texts.0"),
        ("POST", "/embed/text", {"json": {"texts": ["ok"] * 257}}, "texts"),
        ("POST", "/embed/text", {"json": [1, 2]}, None),
        ("GET", "/search?q=cat&k=1001", {}, "k"),
        ("GET", "/search?q=cat&k=0", {}, "k"),
        ("GET", "/search?q=cat&k=ten", {}, "k"),
        ("GET", "/search?q=cat&offset=-1", {}, "offset"),
        ("GET", "/search?k=3", {}, "q"),
        ("GET", "/search?q=" + "x" * 1001, {}, "q"),
        ("GET", "/search?q=cat&folder=/etc", {}, "folder"),
        ("GET", "/search?q=cat&folder=../..", {}, "folder"),
        ("GET", "/search?q=cat&after=yesterday", {}, "after"),
        ("POST", "/search", {"json": {"q": "cat", "k": 100000}}, "k"),
        ("POST", "/search", {"json": {"q": 5}}, "q"),
        ("POST", "/search", {"json": {"q": "cat", "k": "3"}}, "k"),
        ("POST", "/search", {"json": {"q": "cat", "id": 1}}, "q"),
        ("POST", "/search", {"json": {"q": "cat", "filters": {"colour": "red"}}}, "colour"),
        ("POST", "/search", {"json": {"q": "cat", "filters": {"folder": "/etc/ssh"}}}, "folder"),
        ("POST", "/search", {"json": {"id": 987654}}, "id"),
        ("POST", "/search", {"json": {"id": 2**70}}, "id"),
        ("POST", "/search", {"content": b"q=cat", "headers": {"content-type": "text/plain"}}, "content-type"),
        ("POST", "/classify", {"data": {"labels": "a,b"}}, "file"),
        ("POST", "/classify", {"files": {"file": ("a.jpg", (image_dir / "0_astronaut.jpg").read_bytes())},
                               "data": {"labels": "a,,b"}}, "labels"),
        ("POST", "/classify", {"files": {"file": ("a.jpg", (image_dir / "0_astronaut.jpg").read_bytes())},
                               "data": {"labels": "a,b", "templates": "no placeholder"}}, "templates"),
    ]
    for method, url, kw, field in cases:
        r = client.request(method, url, **kw)
        _assert_clean(r, *secrets)
        if field is not None:
            assert field in r.json()["detail"], (url, kw, r.json())
    # the server is still right after all that
    assert client.get("/search", params={"q": "cat", "k": 2}).status_code == 200


def test_the_api_key_guards_writes(served, tiny_encoder):
    client, index = served
    some_id = int(index.all_ids()[0])
    for headers, status in [({}, 401), ({"Authorization": "Bearer nope"}, 403), ({"X-API-Key": "s3cret-ke"}, 403),
                            ({"Authorization": "Basic czNjcmV0LWtleQ=="}, 401), ({"X-API-Key": "s3cret-key\u00e9".encode("latin-1")}, 403)]:
        r = client.post("/index/add", headers=headers)
        assert r.status_code == status, (headers, r.text)
        assert client.delete(f"/index/items/{some_id}", headers=headers).status_code == status
    assert client.post("/index/add", headers={"X-API-Key": KEY}).status_code == 200
    assert client.post("/index/add", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    # without a configured key, writes are off altogether
    plain = TestClient(create_app(index, tiny_encoder, settings=ServeSettings()))
    r = plain.post("/index/add", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and "api-key" in r.json()["detail"]


def test_cors_is_off_unless_configured(tiny_encoder):
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    off = TestClient(create_app(None, tiny_encoder, settings=ServeSettings()))
    assert "access-control-allow-origin" not in off.options("/embed/text", headers=headers).headers
    assert "access-control-allow-origin" not in off.get("/healthz", headers=headers).headers
    on = TestClient(create_app(None, tiny_encoder, settings=ServeSettings(cors_origins=("https://app.example",))))
    r = on.get("/healthz", headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in on.get("/healthz", headers=headers).headers


def test_metrics_count_requests_by_route(served):
    client, index = served
    client.get("/healthz")
    client.get("/items/abc")
    client.get("/no/such/route/..%2F..%2Fetc")
    text = client.get("/metrics").text
    assert 'clipworks_requests_total{route="/healthz",method="GET",status="200"} 1' in text
    assert 'clipworks_requests_total{route="/items/{item_id}",method="GET",status="422"} 1' in text
    assert 'clipworks_requests_total{route="unmatched",method="GET",status="404"} 1' in text
    assert f"clipworks_index_items {len(index)}" in text
    assert 'clipworks_request_seconds_bucket{route="/healthz",le="+Inf"} 1' in text
    from prometheus_client.parser import text_string_to_metric_families

    names = {f.name for f in text_string_to_metric_families(text)}  # a real Prometheus parser reads it
    assert {"clipworks_requests", "clipworks_request_seconds", "clipworks_index_items"} <= names
