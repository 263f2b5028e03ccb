"""Load, batching, hardening and live-add figures of ``clipworks serve`` (issue 10), on loopback only.

Builds a ViT-B-32 checkpoint with random weights (``--model`` for another config) and an index of ``--photos``
JPEGs cut from the scikit-image photos at realistic sizes (640×480 … 1024×768), then starts the real server —
``python -m clipworks serve`` on 127.0.0.1 and a free port, in its own process so the load generator does not share
its GIL — and drives it with asyncio + httpx:

1. ``--clients`` (50) concurrent clients for ``--seconds`` (60) of mixed ``GET /search?q=…`` and
   ``POST /embed/image``: errors (must be 0), requests/s, p50/p99 latency per kind.
2. Dynamic batching: ``--batch-clients`` (16) clients of ``POST /embed/image`` for ``--batch-seconds`` (20) against
   the normal server and the same server started with ``--max-batch 1``; the ratio of requests/s (target ≥ 2×) and
   the batch-size histogram from ``/metrics``.
3. ``--malformed`` (1000) malformed requests (bad JSON, wrong types, truncated multipart, huge fields, path
   traversal, wrong API key, oversize uploads, non-images, decompression bombs): every answer a 4xx, no 5xx, no
   dropped connection, ``/healthz`` still up, and a search afterwards returns what it returned before.
4. ``POST /index/add`` of ``--add`` (200) new photos copied into the indexed folder while ``--search-clients`` (8)
   search: no failed search, and the index ends with exactly the added items.

    PYTHONPATH=src python bench/serve_load.py [--seconds 60] [--parts 1,2,3,4] [--model ViT-B-32]

Prints each figure as it goes and all of them again at the end; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from index_throughput import write_photos

KEY = "bench-key-" + os.urandom(6).hex()
QUERIES = ["an astronaut", "a cup of coffee", "a cat", "a rocket on the launch pad", "a man with a camera",
           "a horse", "stars in deep space", "cells under a microscope", "a red shirt", "a photo of a dog",
           "a city at night", "a landscape with mountains", "a close-up of a face", "a black and white photo"]
SUMMARY: list[str] = []
FAILED: list[str] = []


def figure(line: str) -> None:
    print(line, flush=True)
    SUMMARY.append(line)


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
    if not ok:
        FAILED.append(what)


# -- the server ------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m clipworks serve`` in a subprocess on 127.0.0.1; ``url`` once ``/healthz`` answers."""

    def __init__(self, index: Path, log: Path, threads: int, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        src = str(Path(__file__).resolve().parents[1] / "src")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
               "CLIPWORKS_API_KEY": KEY, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 (open for the server's lifetime; closed in stop())
        self.proc = subprocess.Popen([sys.executable, "-m", "clipworks", "serve", "--index", str(index), "--host",
                                      "127.0.0.1", "--port", str(self.port), "--log-level", "warning", *extra],
                                     env=env, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


# -- load generation ---------------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = {}
        self.errors: Counter[str] = Counter()

    def add(self, kind: str, seconds: float, error: str | None) -> None:
        if error is None:
            self.lat.setdefault(kind, []).append(seconds)
        else:
            self.errors[f"{kind}: {error}"] += 1

    def report(self, elapsed: float, label: str) -> float:
        total = sum(len(v) for v in self.lat.values())
        nerr = sum(self.errors.values())
        figure(f"{label}: {total} ok, {nerr} errors in {elapsed:.1f} s = {total / elapsed:.1f} req/s")
        for kind, lat in sorted(self.lat.items()):
            a = np.asarray(lat) * 1000
            figure(f"{label}:   {kind:<13} {len(a):6d} req  {len(a) / elapsed:6.1f} req/s  p50 {np.percentile(a, 50):7.1f} ms"
                   f"  p99 {np.percentile(a, 99):7.1f} ms")
        for what, n in self.errors.most_common(8):
            print(f"    error x{n}: {what}")
        return total / elapsed


async def timed(rec: Recorder, kind: str, coro) -> httpx.Response | None:
    t = time.perf_counter()
    try:
        r = await coro
    except httpx.HTTPError as e:
        rec.add(kind, 0, f"{type(e).__name__} {e}"[:120])
        return None
    if r.status_code != 200:
        rec.add(kind, 0, f"HTTP {r.status_code} {r.text[:100]}")
        return None
    rec.add(kind, time.perf_counter() - t, None)
    return r


async def load(url: str, clients: int, seconds: float, kinds: list[str], images: list[bytes], seed: int = 0
               ) -> tuple[Recorder, float]:
    """``clients`` closed-loop clients, each sending its next request as soon as the last one answers."""
    rec = Recorder()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = time.perf_counter()
        stop = start + seconds

        async def one(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.perf_counter() < stop:
                kind = rng.choice(kinds)
                if kind == "search":
                    await timed(rec, kind, client.get("/search", params={"q": rng.choice(QUERIES), "k": 20}))
                else:
                    data = rng.choice(images)
                    await timed(rec, kind, client.post("/embed/image", files={"file": ("q.jpg", data, "image/jpeg")}))

        await asyncio.gather(*(one(i) for i in range(clients)))
        return rec, time.perf_counter() - start


def batch_histogram(url: str, kind: str = "image") -> dict[str, int]:
    text = httpx.get(url + "/metrics", timeout=30).text
    out = {}
    for m in re.finditer(rf'clipworks_batch_size_bucket\{{kind="{kind}",le="([^"]+)"\}} (\d+)', text):
        out[m.group(1)] = int(m.group(2))
    return out


def histogram_line(before: dict[str, int], after: dict[str, int]) -> str:
    """Calls per batch-size bucket (non-cumulative) between two scrapes, and the mean-ish bucket."""
    prev, parts = 0, []
    for le, count in after.items():
        cum = count - before.get(le, 0)
        n, prev = cum - prev, cum
        if n:
            parts.append(f"≤{le.removesuffix('.0')}: {n}")
    return ", ".join(parts) + f" (model calls {prev})"


# -- part 1 and 2 ------------------------------------------------------------------------------------------------------
def part1(server: Server, args, images: list[bytes]) -> None:
    print(f"\n== 1. {args.clients} clients, {args.seconds:.0f} s of mixed text search and image embedding", flush=True)
    asyncio.run(load(server.url, 4, 3, ["search", "embed/image"], images, seed=99))  # warm-up
    rec, elapsed = asyncio.run(load(server.url, args.clients, args.seconds, ["search", "embed/image"], images))
    rec.report(elapsed, "1 mixed")
    check(sum(rec.errors.values()) == 0, "mixed load: 0 errors")


def model_ceiling(encoder, images: list[bytes], batch: int, rounds: int = 2) -> float:
    """Images/s of the model call the server's batcher makes (``encode_pixels``; the server preprocesses in its
    request threads) at batch 1 vs ``batch``, in this process with the server's thread count: the most
    micro-batching can gain on this CPU."""
    pixels = [encoder.pixels(Image.open(io.BytesIO(b))) for b in images[:batch]]
    encoder.encode_pixels(pixels[:2])  # warm-up
    one = many = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for p in pixels:
            encoder.encode_pixels([p])
        one = min(one, time.perf_counter() - t)
        t = time.perf_counter()
        encoder.encode_pixels(pixels)
        many = min(many, time.perf_counter() - t)
    figure(f"2 model alone ({torch.get_num_threads()} thread): {len(pixels) / one:.1f} img/s at batch 1, "
           f"{len(pixels) / many:.1f} img/s at batch {len(pixels)} = {one / many:.2f}x (the ceiling of batching here)")
    return one / many


def part2(server: Server, index: Path, tmp: Path, args, images: list[bytes], ceiling: float | None = None) -> None:
    print(f"\n== 2. dynamic batching: {args.batch_clients} clients of POST /embed/image, {args.batch_seconds:.0f} s "
          "each", flush=True)
    rates = {}
    for label, extra in (("max-batch 32", ()), ("max-batch 1", ("--max-batch", "1"))):
        other = None if not extra else Server(index, tmp / "server-b.log", args.server_threads, *extra)
        s = other or server
        try:
            asyncio.run(load(s.url, args.batch_clients, 3, ["embed/image"], images, seed=98))  # warm-up
            before = batch_histogram(s.url)
            rec, elapsed = asyncio.run(load(s.url, args.batch_clients, args.batch_seconds, ["embed/image"], images,
                                            seed=1))
            rates[label] = rec.report(elapsed, f"2 {label}")
            figure(f"2 {label}: batch sizes {histogram_line(before, batch_histogram(s.url))}")
            check(sum(rec.errors.values()) == 0, f"batching {label}: 0 errors")
        finally:
            if other is not None:
                other.stop()
    ratio = rates["max-batch 32"] / max(rates["max-batch 1"], 1e-9)
    figure(f"2 batching: {rates['max-batch 32']:.1f} vs {rates['max-batch 1']:.1f} img/s = {ratio:.2f}x "
           f"(target >= 2x{'' if ratio >= 2 else ', NOT met'})"
           + (f"; {ratio / ceiling:.0%} of the model's own batching ceiling {ceiling:.2f}x" if ceiling else ""))


# -- part 3: malformed requests ------------------------------------------------------------------------------------------
def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width``×``height`` pixels with no pixel data (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def real_bomb() -> bytes:
    """A real 1-bit PNG of 12000×12000 = 144 Mpx of zeros: ~20 KB on the wire."""
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def multipart(field: str, name: str, data: bytes, ctype: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = "benchboundary" + os.urandom(4).hex()
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def malformed_cases(jpeg: bytes, upload_limit: int) -> list[tuple[str, int, dict]]:
    """(name, weight, request kwargs) — each case is sent ``weight`` times per round."""
    J = {"content-type": "application/json"}
    trunc_body, trunc_type = multipart("file", "a.jpg", jpeg)
    bomb_hdr, bomb = png_header_only(100_000, 100_000), real_bomb()
    big = b"\xff\xd8\xff" + b"\0" * (upload_limit + 1024)
    key = {"Authorization": "Bearer wrong-" + KEY}
    cases = [
        ("bad JSON /embed/text", 3, {"method": "POST", "url": "/embed/text", "content": b'{"texts": ["a", ', "headers": J}),
        ("texts not a list", 2, {"method": "POST", "url": "/embed/text", "json": {"texts": "a cat"}}),
        ("texts of ints", 2, {"method": "POST", "url": "/embed/text", "json": {"texts": [1, 2, 3]}}),
        ("body a list", 2, {"method": "POST", "url": "/embed/text", "json": ["a cat"]}),
        ("huge text", 2, {"method": "POST", "url": "/embed/text", "json": {"texts": ["x" * 200_000]}}),
        ("too many texts", 1, {"method": "POST", "url": "/embed/text", "json": {"texts": ["a"] * 5000}}),
        ("empty text", 2, {"method": "POST", "url": "/embed/text", "json": {"texts": ["  "]}}),
        ("bad JSON /search", 2, {"method": "POST", "url": "/search", "content": b"{q: cat}", "headers": J}),
        ("q an int", 2, {"method": "POST", "url": "/search", "json": {"q": 5}}),
        ("k a string", 2, {"method": "POST", "url": "/search", "json": {"q": "cat", "k": "ten"}}),
        ("k negative", 2, {"method": "POST", "url": "/search", "json": {"q": "cat", "k": -1}}),
        ("k huge", 2, {"method": "POST", "url": "/search", "json": {"q": "cat", "k": 10**30}}),
        ("unknown field", 2, {"method": "POST", "url": "/search", "json": {"q": "cat", "sql": "drop table"}}),
        ("bad filters", 2, {"method": "POST", "url": "/search", "json": {"q": "cat", "filters": {"after": "yesterday-ish"}}}),
        ("filters folder ..", 2, {"method": "POST", "url": "/search", "json": {"q": "cat", "filters": {"folder": "../.."}}}),
        ("text/plain /search", 2, {"method": "POST", "url": "/search", "content": b"cat", "headers": {"content-type": "text/plain"}}),
        ("GET /search no q", 2, {"method": "GET", "url": "/search"}),
        ("GET /search k=abc", 2, {"method": "GET", "url": "/search?q=cat&k=abc"}),
        ("GET /search k=0", 2, {"method": "GET", "url": "/search?q=cat&k=0"}),
        ("GET /search q huge", 2, {"method": "GET", "url": "/search?q=" + "y" * 5000}),
        ("GET /search after bad", 2, {"method": "GET", "url": "/search?q=cat&after=not-a-date"}),
        ("GET /search folder abs", 2, {"method": "GET", "url": "/search?q=cat&folder=/etc"}),
        ("GET /search q and id", 2, {"method": "GET", "url": "/search?q=cat&id=1"}),
        ("/items/-1", 2, {"method": "GET", "url": "/items/-1"}),
        ("/items/abc", 2, {"method": "GET", "url": "/items/abc"}),
        ("/items/huge", 2, {"method": "GET", "url": "/items/99999999999999999999999999"}),
        ("/items/unknown", 2, {"method": "GET", "url": "/items/987654321"}),
        ("/thumb traversal", 3, {"method": "GET", "url": "/thumb/..%2F..%2Fetc%2Fpasswd"}),
        ("/image traversal", 3, {"method": "GET", "url": "/image/..%2F..%2F..%2Fetc%2Fpasswd"}),
        ("/image dot-dot", 2, {"method": "GET", "url": "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd"}),
        ("/thumb NUL", 2, {"method": "GET", "url": "/thumb/0%00"}),
        ("unknown path", 2, {"method": "GET", "url": "/etc/passwd"}),
        ("wrong method", 2, {"method": "PUT", "url": "/search", "json": {"q": "cat"}}),
        ("add wrong key", 3, {"method": "POST", "url": "/index/add", "headers": key}),
        ("add no key", 2, {"method": "POST", "url": "/index/add"}),
        ("add X-API-Key wrong", 2, {"method": "POST", "url": "/index/add", "headers": {"X-API-Key": "nope"}}),
        ("add folder ..", 2, {"method": "POST", "url": "/index/add", "json": {"folder": "../../etc"},
                                  "headers": {"Authorization": f"Bearer {KEY}"}}),
        ("add folder abs", 2, {"method": "POST", "url": "/index/add", "json": {"folder": "/etc"},
                                   "headers": {"Authorization": f"Bearer {KEY}"}}),
        ("add missing folder", 1, {"method": "POST", "url": "/index/add", "json": {"folder": "no/such/folder"},
                                       "headers": {"X-API-Key": KEY}}),
        ("add bad JSON", 2, {"method": "POST", "url": "/index/add", "content": b"{folder", "headers": {
            "Authorization": f"Bearer {KEY}", **J}}),
        ("delete wrong key", 2, {"method": "DELETE", "url": "/index/items/0", "headers": key}),
        ("truncated multipart", 3, {"method": "POST", "url": "/embed/image", "content": trunc_body[: len(trunc_body) // 2],
                                        "headers": {"content-type": trunc_type}}),
        ("multipart no boundary", 2, {"method": "POST", "url": "/embed/image", "content": b"--x\r\n\r\n",
                                          "headers": {"content-type": "multipart/form-data"}}),
        ("file as a text field", 2, {"method": "POST", "url": "/embed/image", "data": {"file": "not a file"}}),
        ("JSON to /embed/image", 2, {"method": "POST", "url": "/embed/image", "json": {"file": "x"}}),
        ("non-image", 3, {"method": "POST", "url": "/embed/image", "files": {"file": ("a.jpg", b"hello, not a JPEG" * 50)}}),
        ("truncated JPEG", 3, {"method": "POST", "url": "/embed/image", "files": {"file": ("a.jpg", jpeg[: len(jpeg) // 3])}}),
        ("empty file", 2, {"method": "POST", "url": "/embed/image", "files": {"file": ("a.jpg", b"")}}),
        ("SVG", 2, {"method": "POST", "url": "/embed/image", "files": {"file": ("a.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")}}),
        ("bomb header 10 Gpx", 3, {"method": "POST", "url": "/embed/image", "files": {"file": ("b.png", bomb_hdr)}}),
        ("bomb 144 Mpx PNG", 2, {"method": "POST", "url": "/embed/image", "files": {"file": ("b.png", bomb)}}),
        ("bomb as search query", 1, {"method": "POST", "url": "/search", "files": {"file": ("b.png", bomb)}}),
        ("oversize upload", 1, {"method": "POST", "url": "/embed/image", "files": {"file": ("big.jpg", big)}}),
        ("classify no labels", 2, {"method": "POST", "url": "/classify", "files": {"file": ("a.jpg", jpeg)}}),
        ("classify empty labels", 2, {"method": "POST", "url": "/classify", "files": {"file": ("a.jpg", jpeg)},
                                          "data": {"labels": ",,,"}}),
        ("classify template file", 2, {"method": "POST", "url": "/classify", "files": {"file": ("a.jpg", jpeg)},
                                           "data": {"labels": "cat,dog", "templates": "../../etc/passwd"}}),
        ("classify k=0", 2, {"method": "POST", "url": "/classify", "files": {"file": ("a.jpg", jpeg)},
                                 "data": {"labels": "cat,dog", "k": "0"}}),
    ]
    return cases


async def barrage(url: str, n: int, jpeg: bytes, upload_limit: int, concurrency: int = 16
                  ) -> tuple[Counter, Counter, list[str]]:
    cases = malformed_cases(jpeg, upload_limit)
    plan = [c for c in cases for _ in range(c[1])]
    plan = [plan[i % len(plan)] for i in range(n)]
    statuses: Counter[str] = Counter()
    by_case: Counter[tuple[str, str]] = Counter()
    bad: list[str] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def send(name: str, kw: dict) -> None:
            async with sem:
                try:
                    r = await client.request(**kw)
                    status = str(r.status_code)
                    if not 400 <= r.status_code < 500:
                        bad.append(f"{name}: HTTP {r.status_code} {r.text[:160]}")
                    elif "Traceback" in r.text or "/tmp/" in r.text:
                        bad.append(f"{name}: HTTP {r.status_code} leaks {r.text[:160]}")
                except httpx.HTTPError as e:
                    status = f"dropped ({type(e).__name__})"
                    bad.append(f"{name}: {type(e).__name__} {e}"[:200])
                statuses[status] += 1
                by_case[(name, status)] += 1

        await asyncio.gather(*(send(name, kw) for name, _, kw in plan))
    return statuses, by_case, bad


def search_snapshot(url: str) -> list:
    out = []
    for q in QUERIES[:6]:
        r = httpx.get(url + "/search", params={"q": q, "k": 20}, timeout=60)
        r.raise_for_status()
        out.append([(h["id"], h["path"], round(h["score"], 5)) for h in r.json()["hits"]])
    return out


def part3(server: Server, args, jpeg: bytes) -> None:
    print(f"\n== 3. {args.malformed} malformed requests", flush=True)
    before = search_snapshot(server.url)
    start = time.perf_counter()
    statuses, by_case, bad = asyncio.run(barrage(server.url, args.malformed, jpeg, args.upload_limit))
    elapsed = time.perf_counter() - start
    for (name, status), n in sorted(by_case.items()):
        print(f"    {name:<24} {status}: {n}")
    figure(f"3 malformed: {sum(statuses.values())} requests in {elapsed:.1f} s, by status: "
           + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    for line in bad[:10]:
        print("    BAD", line)
    check(not bad, f"malformed: every answer a 4xx, none a 5xx or dropped ({len(bad)} not)")
    up = server.alive() and httpx.get(server.url + "/healthz", timeout=30).json().get("status") == "ok"
    check(up, "malformed: the server is still up (/healthz ok)")
    same = search_snapshot(server.url) == before
    check(same, "malformed: searches after the barrage return the same hits as before")
    figure(f"3 malformed: 5xx {sum(n for s, n in statuses.items() if s.startswith('5'))}, dropped "
           f"{sum(n for s, n in statuses.items() if s.startswith('dropped'))}, server up {up}, same results {same}")


# -- part 4: index add while searching ----------------------------------------------------------------------------------
async def add_while_searching(url: str, clients: int) -> tuple[Recorder, dict, float, Counter]:
    rec = Recorder()
    totals: Counter[int] = Counter()
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def searcher(i: int) -> None:
            rng = random.Random(i)
            while not done.is_set():
                r = await timed(rec, "search", client.get("/search", params={"q": rng.choice(QUERIES), "k": 10}))
                if r is not None:
                    totals[r.json()["total"]] += 1

        async def adder() -> dict:
            await asyncio.sleep(0.5)
            try:
                r = await client.post("/index/add", headers={"Authorization": f"Bearer {KEY}"})
                return {"status": r.status_code, **(r.json() if r.headers.get("content-type", "").startswith(
                    "application/json") else {"body": r.text[:300]})}
            finally:
                await asyncio.sleep(0.5)
                done.set()

        start = time.perf_counter()
        results = await asyncio.gather(adder(), *(searcher(i) for i in range(clients)))
        return rec, results[0], time.perf_counter() - start, totals


def part4(server: Server, root: Path, tmp: Path, args) -> None:
    print(f"\n== 4. POST /index/add of {args.add} new photos while {args.search_clients} clients search", flush=True)
    items_before = httpx.get(server.url + "/healthz", timeout=30).json()["items"]
    staging = tmp / "staging"
    write_photos(staging, args.add, seed=7)
    new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*.jpg"))
    shutil.copytree(staging, root / "new")
    expected = {f"new/{p}" for p in new}
    rec, report, elapsed, totals = asyncio.run(add_while_searching(server.url, args.search_clients))
    print(f"    add: HTTP {report.get('status')} added {report.get('added')} embedded {report.get('embedded')} "
          f"failed {report.get('failed')} in {report.get('seconds', 0):.1f} s, items {report.get('items')}")
    rec.report(elapsed, "4 search during add")
    print(f"    totals seen by the searches: {dict(sorted(totals.items()))}")
    check(report.get("status") == 200 and report.get("added") == args.add, f"add: HTTP 200, added {args.add}")
    check(sum(rec.errors.values()) == 0, "add: no failed search while adding")
    check(all(t in (items_before, items_before + args.add) or items_before < t < items_before + args.add
              for t in totals), "add: every search saw between the old and the new item count")
    items_after = httpx.get(server.url + "/healthz", timeout=30).json()["items"]
    r = httpx.get(server.url + "/search", params={"q": "a photo", "k": 1000, "folder": "new"}, timeout=60)
    found = {h["path"]: h["id"] for h in r.json()["hits"]}
    check(items_after == items_before + args.add, f"add: /healthz items {items_before} -> {items_after} "
          f"(+{items_after - items_before}, expected +{args.add})")
    check(set(found) == expected, f"add: search in folder new finds exactly the {len(expected)} added files "
          f"({len(set(found) & expected)} found, {len(set(found) - expected)} unexpected)")
    ok_items = sum(httpx.get(f"{server.url}/items/{i}", timeout=30).json().get("path") == p for p, i in found.items())
    check(ok_items == len(expected), f"add: GET /items/{{id}} names each added file ({ok_items}/{len(expected)})")
    figure(f"4 add: {report.get('added')} added in {report.get('seconds', 0):.1f} s while "
           f"{sum(len(v) for v in rec.lat.values())} searches ran, {sum(rec.errors.values())} failed; items "
           f"{items_before} -> {items_after}; {len(set(found) & expected)}/{len(expected)} new files found")


# -- main ---------------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ViT-B-32", help="model config, saved with random weights")
    ap.add_argument("--photos", type=int, default=200, help="photos in the index")
    ap.add_argument("--parts", default="1,2,3,4")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--batch-clients", type=int, default=16)
    ap.add_argument("--batch-seconds", type=float, default=20)
    ap.add_argument("--malformed", type=int, default=1000)
    ap.add_argument("--add", type=int, default=200)
    ap.add_argument("--search-clients", type=int, default=8)
    ap.add_argument("--server-threads", type=int, default=1, help="torch threads of the server (OMP_NUM_THREADS)")
    ap.add_argument("--upload-limit", type=int, default=20_000_000, help="the server's --max-upload-mb, in bytes")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",") if p}
    torch.set_num_threads(1)

    import clipworks
    from clipworks.encoder import Encoder
    from clipworks.search import Index

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as d:
        tmp = Path(d)
        torch.manual_seed(0)
        ckpt = tmp / args.model.replace("/", "_")
        clipworks.save_pretrained(clipworks.create_model(args.model), ckpt)
        root = tmp / "photos"
        write_photos(root, args.photos)
        jpegs = sorted(root.rglob("*.jpg"))
        images = [p.read_bytes() for p in jpegs[:24]]
        encoder = Encoder.load(str(ckpt))
        t = time.perf_counter()
        with Index.create(tmp / "idx", root, encoder) as built:
            built.add()
        print(f"{args.model} (random weights, fp32 CPU), index of {len(jpegs)} JPEGs "
              f"({sum(p.stat().st_size for p in jpegs) / 1e6:.1f} MB, 640x427..1024x768) built in "
              f"{time.perf_counter() - t:.1f} s; uploads {np.mean([len(b) for b in images]) / 1e3:.0f} KB on average; "
              f"server torch threads {args.server_threads}, {os.cpu_count()} CPUs", flush=True)
        ceiling = None
        if 2 in parts:
            print(f"\n== 2a. the model alone, batch 1 vs {args.batch_clients}", flush=True)
            torch.set_num_threads(args.server_threads)
            ceiling = model_ceiling(encoder, images, args.batch_clients)
            torch.set_num_threads(1)
        del encoder
        server = Server(tmp / "idx", tmp / "server.log", args.server_threads,
                        "--max-upload-mb", str(args.upload_limit / 1e6))
        try:
            if 1 in parts:
                part1(server, args, images)
            if 2 in parts:
                part2(server, tmp / "idx", tmp, args, images, ceiling)
            if 3 in parts:
                part3(server, args, images[0])
            if 4 in parts:
                part4(server, root, tmp, args)
        finally:
            alive = server.alive()
            tail = server.log_tail()
            server.stop()
        check(alive, "the server stayed up through the whole run")
        if "Traceback" in tail or not alive:
            print("server log tail:\n" + tail)
    print(f"\n== figures ({time.perf_counter() - t0:.0f} s in all)")
    for line in SUMMARY:
        print(line)
    print(f"checks failed: {len(FAILED)}" + "".join(f"\n  FAIL {f}" for f in FAILED))
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
