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
from fastapi.testclient import TestClient
from PIL import Image

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

    def encode_pixels(self, pixels):
        self.calls.append(("image", len(pixels)))
        return self._encoder.encode_pixels(pixels)


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


# -- updating the index while it answers ---------------------------------------------------------------------------
class SlowEncoder(SpyEncoder):
    """Embeds files slowly, so that an add spans many searches."""

    def encode_files(self, paths, **kw):
        import time

        time.sleep(0.05)
        return self._encoder.encode_files(paths, **kw)


def test_index_add_while_searching_shows_only_whole_states(tmp_path, image_dir, tiny_encoder, photos, one_thread):
    import functools
    import time

    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as built:
        built.add()
    before = 4
    new = 10
    (image_dir / "new").mkdir()
    for i in range(new):
        name = list(photos)[i % len(photos)]
        photos[name].resize((40 + 4 * i, 36)).convert("RGB").save(image_dir / "new" / f"{i}.jpg")
    writer = Index.open(tmp_path / "idx", encoder=SlowEncoder(tiny_encoder), writable=True)  # type: ignore[arg-type]
    writer.add = functools.partial(Index.add, writer, commit_every=2)  # five commits, each visible to a naive reader
    app = create_app(writer, tiny_encoder, settings=ServeSettings(api_key=KEY))
    seen: list[tuple[int, int, float]] = []
    errors: list[str] = []
    stop = threading.Event()

    with TestClient(app) as client:
        want_before = client.get("/search", params={"q": "a photo", "k": 50}).json()

        def searcher():
            while not stop.is_set():
                r = client.get("/search", params={"q": "a photo", "k": 50})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                page = r.json()
                seen.append((page["total"], len(page["hits"]), time.perf_counter()))
                if page["total"] == before and page["hits"] != want_before["hits"]:
                    errors.append("a search before the add finished saw part of it")

        threads = [threading.Thread(target=searcher) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        start = time.perf_counter()
        r = client.post("/index/add", headers={"Authorization": f"Bearer {KEY}"}, json={"folder": "new"})
        end = time.perf_counter()
        time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
        assert r.status_code == 200, r.text
        assert r.json()["added"] == new and r.json()["items"] == before + new
        assert not errors, errors[:3]
        assert {total for total, _, _ in seen} == {before, before + new}  # never a half-written state
        assert all(hits == total for total, hits, _ in seen)
        assert sum(start < t < end for _, _, t in seen) >= 3  # searches kept being answered during the add
        paths = {h["path"] for h in client.get("/search", params={"q": "x", "k": 50}).json()["hits"]}
        assert paths == {"0_astronaut.jpg", "1_coffee.jpg", "2_chelsea.jpg", "sub/rocket.png",
                         *(f"new/{i}.jpg" for i in range(new))}
        # the served index equals the library's answer on a fresh read of the same database
        with Index.open(tmp_path / "idx", encoder=tiny_encoder) as fresh:
            want = search(fresh, "a photo", k=5)
        got = client.get("/search", params={"q": "a photo", "k": 5}).json()
        assert [h["id"] for h in got["hits"]] == [h.id for h in want.hits]

        # delete by id: gone from items and search, and a later add does not bring it back
        victim = next(h for h in got["hits"] if h["path"].startswith("new/"))
        r = client.delete(f"/index/items/{victim['id']}", headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["removed"] == 1 and r.json()["items"] == before + new - 1
        assert client.get(f"/items/{victim['id']}").status_code == 404
        assert client.get(f"/thumb/{victim['id']}").status_code == 404
        assert client.delete(f"/index/items/{victim['id']}", headers={"X-API-Key": KEY}).status_code == 404
        r = client.post("/index/add", headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["items"] == before + new - 1
        r = client.post("/index/add", headers={"X-API-Key": KEY}, json={"folder": "../outside"})
        assert r.status_code == 422 and "folder" in r.json()["detail"]
        r = client.post("/index/add", headers={"X-API-Key": KEY}, json={"folder": "nope"})
        assert r.status_code == 404 and str(image_dir) not in r.text
    writer.close()


# -- the command ---------------------------------------------------------------------------------------------------
@pytest.fixture()
def built_index(tmp_path, image_dir, tiny_encoder, one_thread) -> Path:
    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as built:
        built.add()
    return tmp_path / "idx"


def test_cli_serve_binds_loopback_and_checks_its_arguments(built_index, tiny_checkpoint, tiny_sigmoid_checkpoint,
                                                           monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from clipworks.cli import app

    calls = []

    def fake_run(served_app, **kw):
        calls.append(kw)
        with TestClient(served_app) as client:
            assert client.get("/healthz").json()["items"] == 4
            r = client.post("/index/add", headers={"Authorization": "Bearer k2"})
            calls[-1]["add_status"] = r.status_code

    monkeypatch.setattr(uvicorn, "run", fake_run)
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--index", str(built_index)], env={"CLIPWORKS_API_KEY": "k2"})
    assert r.exit_code == 0, r.output
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8000 and calls[-1]["add_status"] == 200
    r = runner.invoke(app, ["serve", "--index", str(built_index), "--host", "0.0.0.0", "--port", "9001"], env={})
    assert r.exit_code == 0 and calls[-1]["host"] == "0.0.0.0" and calls[-1]["add_status"] == 403
    assert "warning" in r.output and "network" in r.output
    r = runner.invoke(app, ["serve"])
    assert r.exit_code == 1 and "--index" in r.output
    r = runner.invoke(app, ["serve", "--index", str(built_index), "--model", str(tiny_sigmoid_checkpoint)])
    assert r.exit_code == 1 and "built with" in r.output
    r = runner.invoke(app, ["serve", "--model", str(tiny_checkpoint), "--max-batch", "0"])
    assert r.exit_code != 0


def test_cli_serve_runs_a_real_server(built_index):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "clipworks", "serve", "--index", str(built_index), "--port",
                             str(port), "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/search?q=astronaut&k=2", timeout=5) as r:
                    page = json.load(r)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()  # type: ignore[union-attr]
                time.sleep(0.2)
        assert page["total"] == 4 and len(page["hits"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_malformed_requests_all_get_4xx_and_change_nothing(served, image_dir, tmp_path):
    """A burst of malformed requests (random bodies, truncated multipart, wrong types, huge fields, traversal ids,
    wrong keys): every answer is a clean 4xx, and a search afterwards answers exactly as before."""
    client, _ = served
    before = client.get("/search", params={"q": "a cat", "k": 4}).json()
    rng = np.random.default_rng(1)
    good = (image_dir / "0_astronaut.jpg").read_bytes()
    multipart = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
                 b"Content-Type: image/jpeg\r\n\r\n" + good + b"\r\n--XyZ--\r\n")
    requests = []
    for i in range(120):
        kind = i % 12
        junk = rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes()
        if kind == 0:
            requests.append(("POST", "/embed/text", {"content": junk, "headers": {"content-type": "application/json"}}))
        elif kind == 1:
            cut = int(rng.integers(1, len(multipart) - 1))
            requests.append(("POST", ["/search", "/embed/image", "/classify"][i % 3],
                             {"content": multipart[:cut], "headers": {"content-type": "multipart/form-data; boundary=XyZ"}}))
        elif kind == 2:
            requests.append(("POST", "/search", {"content": junk, "headers": {"content-type": "multipart/form-data"}}))
        elif kind == 3:
            requests.append(("POST", "/search", {"json": {"q": ["a"] * int(rng.integers(1, 5)), "k": {"x": 1}}}))
        elif kind == 4:
            requests.append(("GET", f"/search?q=cat&k={rng.integers(-10**6, 10**6) * 7919}&offset=x", {}))
        elif kind == 5:
            requests.append(("POST", "/embed/text", {"json": {"texts": ["y" * int(rng.integers(1001, 50_000))]}}))
        elif kind == 6:
            bad = ["..%2F..%2Fetc%2Fpasswd", "-5", "1e3", "%00", "0x10", "9" * 40, "..%5C..%5Cwin.ini", "%2e%2e%2f"][i % 8]
            requests.append(("GET", f"/{['items', 'thumb', 'image'][i % 3]}/{bad}", {}))
        elif kind == 7:
            requests.append(("POST", "/index/add", {"headers": {"Authorization": f"Bearer {junk[:8].hex()}"},
                                                    "json": {"folder": "/etc"}}))
        elif kind == 8:
            requests.append(("DELETE", "/index/items/1", {"headers": {"X-API-Key": "wrong"}}))
        elif kind == 9:
            requests.append(("POST", "/classify", {"files": {"file": ("a.jpg", junk)}, "data": {"labels": "a,b"}}))
        elif kind == 10:
            requests.append(("POST", "/search", {"files": {"file": ("a.jpg", good)},
                                                 "data": {"k": "many", "filters": "{oops"}}))
        else:
            requests.append(("POST", "/search", {"json": {"q": "cat", "filters": {"after": junk[:10].hex()}}}))
    for method, url, kw in requests:
        r = client.request(method, url, **kw)
        _assert_clean(r, str(tmp_path), str(image_dir))
    assert client.get("/search", params={"q": "a cat", "k": 4}).json() == before
    assert client.get("/healthz").json()["items"] == 4


def test_multipart_search_takes_filters_as_form_fields(served, image_dir):
    client, _ = served
    data = (image_dir / "sub" / "rocket.png").read_bytes()
    r = client.post("/search", files={"file": ("q.png", data, "image/png")}, data={"folder": "sub", "k": "3"})
    assert r.status_code == 200, r.text
    assert [h["path"] for h in r.json()["hits"]] == ["sub/rocket.png"] and r.json()["total"] == 1
    r = client.post("/search", files={"file": ("q.png", data, "image/png")},
                    data={"filters": json.dumps({"folder": "sub"})})
    assert r.json()["total"] == 1


def test_a_write_by_another_process_is_followed(tmp_path, image_dir, tiny_encoder, photos, one_thread):
    with Index.create(tmp_path / "idx", image_dir, tiny_encoder) as built:
        built.add()
    with Index.open(tmp_path / "idx", encoder=tiny_encoder) as served_index:
        app = create_app(served_index, tiny_encoder, settings=ServeSettings())
        app.state.service.live.check_every = 0.0
        with TestClient(app) as client:
            assert client.get("/healthz").json()["items"] == 4
            photos["horse"].resize((50, 40)).save(image_dir / "horse.jpg")
            with Index.open(tmp_path / "idx", encoder=tiny_encoder, writable=True) as other:  # `clipworks index add`
                other.add()
            assert client.get("/healthz").json()["items"] == 5
            hits = client.get("/search", params={"q": "a horse", "k": 5}).json()["hits"]
            assert "horse.jpg" in {h["path"] for h in hits}


def test_a_write_while_another_process_writes_is_409_and_retry_works(served, tmp_path, tiny_encoder, image_dir,
                                                                     photos):
    client, index = served
    photos["horse"].resize((50, 40)).save(image_dir / "horse.jpg")
    with Index.open(index.path, encoder=tiny_encoder, writable=True):  # `clipworks index add` holds the write lock
        r = client.post("/index/add", headers={"X-API-Key": KEY})
        assert r.status_code == 409, r.text
        assert r.json()["detail"].startswith("another process is writing to the index")
        _assert_clean(r, str(tmp_path))
        assert client.get("/healthz").json()["items"] == 4
    r = client.post("/index/add", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["added"] == 1, r.text


def test_openapi_lists_the_contract_routes(served):
    client, _ = served
    spec = client.get("/openapi.json").json()
    for path, method in [("/healthz", "get"), ("/embed/text", "post"), ("/embed/image", "post"), ("/classify", "post"),
                         ("/search", "get"), ("/search", "post"), ("/items/{item_id}", "get"),
                         ("/thumb/{item_id}", "get"), ("/image/{item_id}", "get"), ("/index/add", "post"),
                         ("/index/items/{item_id}", "delete"), ("/metrics", "get")]:
        assert method in spec["paths"][path], (path, method)
    assert client.get("/docs").status_code == 200
    r = client.get("/search", params={"q": "   "})
    assert r.status_code == 422 and r.json()["detail"] == "q: empty text"


def test_settings_are_validated():
    from clipworks.errors import UsageError

    assert ServeSettings(cors_origins="https://a.example").cors_origins == ("https://a.example",)
    for bad in ({"max_k": 0}, {"max_batch": -1}, {"api_key": "  "}, {"max_upload_bytes": "big"}, {"thumb_size": True}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            ServeSettings(**bad)


def test_classify_with_a_sigmoid_model_says_so(tiny_sigmoid_checkpoint, photos, one_thread):
    from clipworks.encoder import Encoder
    from clipworks.zeroshot import ZeroShotClassifier

    encoder = Encoder.load(str(tiny_sigmoid_checkpoint))
    client = TestClient(create_app(None, encoder, settings=ServeSettings()))
    data = jpeg(photos["chelsea"].resize((64, 64)))
    r = client.post("/classify", files={"file": ("c.jpg", data, "image/jpeg")},
                    data={"labels": '["cat", "dog", "car"]', "templates": "a photo of a {}.", "k": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["sigmoid"] is True
    clf = ZeroShotClassifier.build(encoder, ["cat", "dog", "car"], ["a photo of a {}."])
    probs = clf.predict(encoder.encode_images([Image.open(io.BytesIO(data))]))[0]
    got = {p["label"]: p["probability"] for p in r.json()["predictions"]}
    np.testing.assert_allclose([got[n] for n in ("cat", "dog", "car")], probs, atol=1e-5)
    assert client.get("/search", params={"q": "x"}).status_code == 404  # no index served
