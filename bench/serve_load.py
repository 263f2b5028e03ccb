"""Load, batching and abuse figures of ``clipworks serve`` on loopback (issue 10), bounded in time and requests.

    python bench/serve_load.py [--model M --pretrained P] [--seconds 60] [--batch-seconds 15] [--images 200]

Starts the real server (``python -m clipworks serve`` on 127.0.0.1, a free port) over an index of generated
photos, and drives it with asyncio httpx clients from this process:

1. 50 concurrent clients for ``--seconds`` of mixed text search and image embedding: errors, requests/s, p50/p99;
2. dynamic batching: 16 clients embedding images, ``--max-batch 32`` against ``--max-batch 1`` (a fresh server
   each), the ratio of requests/s;
3. 1,000 malformed requests (bad JSON, wrong types, truncated multipart, huge fields, traversal ids, wrong key):
   every answer a 4xx, the server still up, a correct search afterwards identical to before;
4. ``POST /index/add`` of ``--images`` new images while 8 clients search: failed searches, and whether the index
   ends with exactly the added items.

Without ``--model`` a tiny random-weight model (saved to a checkpoint, so the index can record it) keeps the run
fast on a CPU; per-call overhead then dominates, which is what micro-batching amortises.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))
KEY = "bench-key"


def photos(n: int, seed: int, size: int = 96) -> list:
    """``n`` distinct images: crops of scikit-image's photos, jittered in colour."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    bases = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "horse", "immunohistochemistry"):
        a = getattr(skimage.data, name)()
        bases.append(np.asarray(Image.fromarray(a).convert("RGB")))
    out = []
    for i in range(n):
        a = bases[i % len(bases)]
        h, w = a.shape[:2]
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        crop = a[y : y + h // 2, x : x + w // 2].astype(np.float32) * rng.uniform(0.7, 1.3, 3)
        out.append(Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize((size, size)))
    return out


def jpeg(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, index: Path, model: list[str], max_batch: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(SRC), "CLIPWORKS_API_KEY": KEY}
        self.proc = subprocess.Popen([sys.executable, "-m", "clipworks", "serve", "--index", str(index), *model,
                                      "--port", str(self.port), "--max-batch", str(max_batch), "--log-level",
                                      "warning"], env=env)

    async def wait(self, client) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if (await client.get(f"{self.url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise SystemExit("server did not start in 120 s")

    def up(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def drive(clients: int, seconds: float, make_request, max_requests: int) -> dict:
    """``clients`` loops issuing ``make_request(client, i)`` until ``seconds`` pass or ``max_requests`` are sent."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    end = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def loop(c: int) -> None:
            nonlocal sent
            while time.monotonic() < end and sent < max_requests:
                sent += 1
                start = time.perf_counter()
                try:
                    r = await make_request(client, sent)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:100]}")
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
                latencies.append(time.perf_counter() - start)

        t0 = time.perf_counter()
        await asyncio.gather(*(loop(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3], "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan")}


def malformed(url: str, good: bytes, rng: np.random.Generator, n: int) -> list[tuple[str, str, dict]]:
    multipart = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg'
                 b"\r\n\r\n" + good + b"\r\n--B--\r\n")
    out = []
    for i in range(n):
        junk = rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
        kind = i % 10
        if kind == 0:
            out.append(("POST", f"{url}/embed/text", {"content": junk, "headers": {"content-type": "application/json"}}))
        elif kind == 1:
            out.append(("POST", f"{url}/embed/text", {"json": {"texts": [1, {"a": 2}]}}))
        elif kind == 2:
            cut = int(rng.integers(1, len(multipart) - 1))
            out.append(("POST", f"{url}{['/search', '/embed/image', '/classify'][i % 3]}",
                        {"content": multipart[:cut], "headers": {"content-type": "multipart/form-data; boundary=B"}}))
        elif kind == 3:
            out.append(("POST", f"{url}/embed/text", {"json": {"texts": ["z" * 200_000]}}))
        elif kind == 4:
            out.append(("GET", f"{url}/search?q=x&k={10**9}&offset=-3", {}))
        elif kind == 5:
            bad = ["..%2F..%2Fetc%2Fpasswd", "-1", "abc", "9" * 30, "%00"][i % 5]
            out.append(("GET", f"{url}/{['items', 'thumb', 'image'][i % 3]}/{bad}", {}))
        elif kind == 6:
            out.append(("POST", f"{url}/index/add", {"headers": {"Authorization": "Bearer wrong"}}))
        elif kind == 7:
            out.append(("DELETE", f"{url}/index/items/1", {"headers": {"X-API-Key": junk[:6].hex()}}))
        elif kind == 8:
            out.append(("POST", f"{url}/embed/image", {"files": {"file": ("a.png", junk)}}))
        else:
            out.append(("POST", f"{url}/search", {"json": {"q": "x", "filters": {"folder": "../../etc"}}}))
    return out


async def run(args: argparse.Namespace, work: Path) -> None:
    import httpx
    import torch

    torch.set_num_threads(1)
    from clipworks.encoder import Encoder
    from clipworks.search.index import Index

    if args.model:
        model_args = ["--model", args.model] + (["--pretrained", args.pretrained] if args.pretrained else [])
        encoder = Encoder.load(args.model, args.pretrained)
    else:
        import clipworks
        from clipworks.factory import model_config

        torch.manual_seed(0)
        saved = work / args.config
        clipworks.save_pretrained(clipworks.Clip(model_config(args.config)).eval(), saved)
        encoder = Encoder.load(str(saved))
        model_args = []
    root = work / "photos"
    root.mkdir()
    for i, im in enumerate(photos(args.indexed, seed=0)):
        im.save(root / f"{i:04d}.jpg", quality=90)
    with Index.create(work / "idx", root, encoder) as index:
        index.add()
    queries = [jpeg(im) for im in photos(32, seed=1)]
    words = ["a cat", "a cup of coffee", "an astronaut", "a rocket launch", "a horse in a field", "cells"]
    results: dict[str, dict] = {}

    def mixed_of(server):
        async def mixed(client, i):
            if i % 2:
                return await client.get(f"{server.url}/search", params={"q": words[i % len(words)], "k": 10})
            return await client.post(f"{server.url}/embed/image", files={"file": ("q.jpg", queries[i % len(queries)])})
        return mixed

    def embed_of(server):
        async def embed(client, i):
            return await client.post(f"{server.url}/embed/image", files={"file": ("q.jpg", queries[i % len(queries)])})
        return embed

    phases = set(args.phases.split(","))
    async with httpx.AsyncClient(timeout=60) as probe:
        if phases & {"load", "abuse", "add"}:
            await serving_phases(args, work, model_args, probe, root, queries, words, results, mixed_of, phases)
        if "batch" in phases:  # 2. batching: the same load with max batch 32 and 1
            for max_batch in (32, 1):
                server = Server(work / "idx", model_args, max_batch)
                await server.wait(probe)
                embed = embed_of(server)
                await drive(16, 2, embed, 10**9)
                results[f"batch{max_batch}"] = await drive(16, args.batch_seconds, embed, args.max_requests)
                server.stop()
    report(args, encoder, results)


async def serving_phases(args, work, model_args, probe, root, queries, words, results, mixed_of, phases) -> None:
    # 1. load
    server = Server(work / "idx", model_args, 32)
    await server.wait(probe)
    mixed = mixed_of(server)
    await drive(8, 2, mixed, 10**9)  # warm-up
    if "load" in phases:
        results["load"] = await drive(50, args.seconds, mixed, args.max_requests)
        results["load"]["server_up"] = server.up()

    if "abuse" in phases:  # 3. (on the same server)
        await abuse(server, probe, queries[0], results)
    if "add" in phases:  # 4.
        await add_while_searching(args, server, probe, root, words, results)
    server.stop()


async def abuse(server, probe, good: bytes, results) -> None:
    before = (await probe.get(f"{server.url}/search", params={"q": "a cat", "k": 10})).json()["hits"]
    statuses = []
    rng = np.random.default_rng(0)
    for method, url, kw in malformed(server.url, good, rng, 1000):
        try:
            statuses.append((await probe.request(method, url, **kw)).status_code)
        except Exception:  # noqa: BLE001 (a refused connection counts as not a 4xx)
            statuses.append(0)
    after = (await probe.get(f"{server.url}/search", params={"q": "a cat", "k": 10})).json()["hits"]
    results["abuse"] = {"requests": len(statuses), "non_4xx": sum(not 400 <= s < 500 for s in statuses),
                        "server_up": server.up(), "same_results": before == after}


async def add_while_searching(args, server, probe, root, words, results) -> None:
    new = root / "new"
    new.mkdir()
    for i, im in enumerate(photos(args.images, seed=2)):
        im.save(new / f"{i:04d}.jpg", quality=90)
    n_before = (await probe.get(f"{server.url}/healthz")).json()["items"]

    async def search(client, i):
        return await client.get(f"{server.url}/search", params={"q": words[i % len(words)], "k": 20})

    async def add():
        t0 = time.perf_counter()
        r = await probe.post(f"{server.url}/index/add", json={"folder": "new"},
                             headers={"Authorization": f"Bearer {KEY}"}, timeout=600)
        return r, time.perf_counter() - t0

    (r, add_seconds), searched = await asyncio.gather(add(), drive(8, args.add_seconds, search, 10**9))
    items = (await probe.get(f"{server.url}/healthz")).json()["items"]
    results["add"] = {"status": r.status_code, "added": r.json().get("added"), "add_seconds": add_seconds,
                      "searches": searched["requests"], "failed_searches": searched["errors"],
                      "items_before": n_before, "items_after": items,
                      "exact": r.status_code == 200 and items == n_before + args.images == n_before + r.json()["added"]}


def report(args, encoder, results) -> None:
    print(f"model: {args.model or args.config + ' (random weights)'}, {encoder.embed_dim}-d, index of {args.indexed} "
          f"images, {os.cpu_count()} CPUs, server and clients on one machine")
    if "load" in results:
        r = results["load"]
        print(f"1. 50 clients × {args.seconds:g}s mixed search + image embedding: {r['requests']} requests, "
              f"{r['errors']} errors {r['first_errors'] or ''}, {r['rps']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, server up: {r['server_up']}")
    if "abuse" in results:
        r = results["abuse"]
        print(f"3. {r['requests']} malformed requests: {r['non_4xx']} answers not 4xx, server up: {r['server_up']}, "
              f"search afterwards identical: {r['same_results']}")
    if "add" in results:
        r = results["add"]
        print(f"4. add of {args.images} images while 8 clients search: add {r['status']} in {r['add_seconds']:.1f}s, "
              f"{r['searches']} searches, {r['failed_searches']} failed; items {r['items_before']} → "
              f"{r['items_after']} (exactly the added ones: {r['exact']})")
    if "batch32" in results:
        b32, b1 = results["batch32"], results["batch1"]
        print(f"2. 16 clients embedding images: max-batch 32 {b32['rps']:.1f} req/s (p50 {b32['p50_ms']:.1f} ms, "
              f"{b32['errors']} errors), max-batch 1 {b1['rps']:.1f} req/s (p50 {b1['p50_ms']:.1f} ms, "
              f"{b1['errors']} errors)")
        print(f"batching ratio (max-batch 32 / max-batch 1 req/s at 16 clients): {b32['rps'] / b1['rps']:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model")
    p.add_argument("--pretrained")
    p.add_argument("--config", default="tiny-vit", help="without --model: this config with random weights (saved)")
    p.add_argument("--phases", default="load,abuse,add,batch", help="which figures: load,abuse,add,batch")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the 50-client load")
    p.add_argument("--batch-seconds", type=float, default=15.0, help="length of each batching run")
    p.add_argument("--add-seconds", type=float, default=10.0, help="how long the 8 clients search during the add")
    p.add_argument("--max-requests", type=int, default=200_000, help="a bound on each load's requests")
    p.add_argument("--images", type=int, default=200, help="images added while searching")
    p.add_argument("--indexed", type=int, default=300, help="images indexed before the run")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clipworks-serve-bench-"))
    try:
        asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
