"""Approximate vs exact search for the index: recall@10 against exact, p50/p99 single-query latency, build time.

    python bench/search_ann.py                      # 100k random unit 512-d vectors: flat vs HNSW (the index's
                                                    # vector layer, its default M=32, ef_construction=200)
    python bench/search_ann.py --data clustered     # the same on clustered vectors (like real embeddings)
    python bench/search_ann.py --million            # 1M × 512: flat vs IVF-Flat and IVF-PQ (the index's ivfpq
                                                    # m, re-ranked as the index does), nprobe sweep; with --hnsw-million also
                                                    # HNSW (a long build on few cores)

Recall@10 is |approx top-10 ∩ exact top-10| / 10, averaged over the queries. Latency is per single-query call
(what ``clipworks search`` does), measured after a warm-up. ``--data random`` draws every vector and query
uniformly on the sphere: in 512-d all points are nearly equidistant (the 10th neighbour of a query sits at cosine
≈ 0.18 while the bulk sits at 0 ± 0.044), which is the worst case for any graph or cluster index. ``clustered``
draws points around ``n/100`` random centres (cosine to the centre ≈ 0.7, like related photos under CLIP) and
queries from the same mixture. Memory: 1M × 512 float32 is 2 GB per copy; the script holds at most two (three
with IVF-PQ's re-ranking copy).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


QUERY_THREADS = 1


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, dim: int, queries: int, kind: str, seed: int, chunk: int = 100_000):
    """``(base [n, dim], queries [queries, dim])`` float32 unit vectors, generated in chunks (bounded memory)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        base = np.empty((n, dim), np.float32)
        for s in range(0, n, chunk):
            base[s : s + chunk] = unit(rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32))
        return base, unit(rng.standard_normal((queries, dim), dtype=np.float32))
    centres = unit(rng.standard_normal((max(1, n // 100), dim), dtype=np.float32))

    def draw(m: int) -> np.ndarray:
        noise = rng.standard_normal((m, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        return unit(centres[rng.integers(len(centres), size=m)] + noise)

    base = np.empty((n, dim), np.float32)
    for s in range(0, n, chunk):
        base[s : s + chunk] = draw(min(chunk, n - s))
    return base, draw(queries)


def timed_queries(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids ``[Q, k]`` and per-query seconds, one call per query (with the query thread count)."""
    import faiss

    build_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(QUERY_THREADS)
    for q in queries[:5]:
        search(q[None], k)  # warm-up
    ids, seconds = [], []
    for q in queries:
        t = time.perf_counter()
        _, found = search(q[None], k)
        seconds.append(time.perf_counter() - t)
        ids.append(np.asarray(found).reshape(-1)[:k])
    faiss.omp_set_num_threads(build_threads)
    return np.stack(ids), np.asarray(seconds)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, exact)]))


def row(name: str, rec: float, sec: np.ndarray, build: float | None = None) -> str:
    b = f"{build:8.1f} s" if build is not None else " " * 10
    return (f"{name:<34} recall@10 {rec:6.3f}   p50 {np.percentile(sec, 50) * 1e3:8.2f} ms   "
            f"p99 {np.percentile(sec, 99) * 1e3:8.2f} ms   build {b}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="vectors (default 100000; 1000000 with --million)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--data", choices=("random", "clustered"), default="random")
    p.add_argument("--million", action="store_true", help="1M vectors: flat vs IVF-Flat/IVF-PQ (and HNSW with --hnsw-million)")
    p.add_argument("--hnsw-million", action="store_true", help="also build HNSW on 1M vectors (slow on 2 cores)")
    p.add_argument("--no-ivf", action="store_true", help="skip the IVF part of the --million run")
    p.add_argument("--M", type=int, default=32, help="HNSW links per node (the index's default)")
    p.add_argument("--ef-construction", type=int, default=200, help="the index's default")
    p.add_argument("--ef", default="64,128,256,512,1024", help="HNSW efSearch values to sweep")
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default √n: k-means on 2 cores stays short)")
    p.add_argument("--nprobe", default="8,16,32,64,128,256", help="IVF nprobe values to sweep")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="threads to build with")
    p.add_argument("--query-threads", type=int, default=1,
                   help="threads for the single-query calls (1: OpenMP barriers cost more than one query's work)")
    p.add_argument("--rerank", type=int, default=10, help="IVF-PQ candidates re-scored exactly, × k (the index's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    n = args.n or (1_000_000 if args.million else 100_000)

    import faiss

    from clipworks.search.vectors import VectorIndex

    global QUERY_THREADS
    QUERY_THREADS = args.query_threads
    faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, {args.threads} build / {args.query_threads} query threads, {n} × {args.dim} {args.data} vectors, "
          f"{args.queries} queries, k={args.k}", flush=True)
    t = time.perf_counter()
    base, queries = make_data(n, args.dim, args.queries, args.data, args.seed)
    print(f"data: {time.perf_counter() - t:.1f} s", flush=True)
    ids = np.arange(n, dtype=np.int64)
    lines: list[str] = []

    t = time.perf_counter()
    flat = VectorIndex("flat", args.dim)
    flat.add(ids, base)
    flat_build = time.perf_counter() - t
    exact, sec = timed_queries(flat.search, queries, args.k)
    lines.append(row("flat (exact)", 1.0, sec, flat_build))
    flat_p50 = float(np.percentile(sec, 50))
    print(lines[-1], flush=True)
    del flat

    best: list[tuple[str, float, float]] = []  # (setting, recall, p50) reaching recall ≥ 0.95
    if not args.million or args.hnsw_million:
        t = time.perf_counter()
        hnsw = VectorIndex("hnsw", args.dim, {"M": args.M, "ef_construction": args.ef_construction})
        hnsw.add(ids, base)
        build = time.perf_counter() - t
        print(f"HNSW M={args.M} ef_construction={args.ef_construction}: built in {build:.1f} s", flush=True)
        for ef in (int(e) for e in args.ef.split(",")):
            hnsw.options["ef_search"] = ef
            found, sec = timed_queries(hnsw.search, queries, args.k)
            rec = recall(found, exact)
            lines.append(row(f"HNSW M={args.M} efC={args.ef_construction} ef={ef}", rec, sec, build))
            print(lines[-1], flush=True)
            if rec >= 0.95:
                best.append((f"HNSW M={args.M} ef={ef}", rec, float(np.percentile(sec, 50))))
        del hnsw

    if args.million and not args.no_ivf:
        nlist = args.nlist or int(np.sqrt(n))
        sample = base[np.random.default_rng(1).choice(n, size=min(n, 39 * nlist), replace=False)]
        m = max(d for d in range(1, args.dim // 8 + 1) if args.dim % d == 0)  # the index's ivfpq default
        for name, make in ((f"IVF-Flat nlist={nlist}", lambda: faiss.IndexIVFFlat(
                                faiss.IndexFlatIP(args.dim), args.dim, nlist, faiss.METRIC_INNER_PRODUCT)),
                           (f"IVF-PQ nlist={nlist} m={m}", lambda: faiss.IndexIVFPQ(
                                faiss.IndexFlatIP(args.dim), args.dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT))):
            t = time.perf_counter()
            ivf = make()
            ivf.cp.niter = 10
            if hasattr(ivf, "pq"):
                ivf.pq.cp.niter = 10
            ivf.train(sample)
            # IVF-PQ as the index searches it: rerank·k candidates re-scored exactly (IndexRefineFlat's k-factor)
            searched = faiss.IndexRefineFlat(ivf) if hasattr(ivf, "pq") else ivf
            if hasattr(ivf, "pq"):
                searched.k_factor = args.rerank
                name += f" rerank={args.rerank}"
            searched.add(base)
            build = time.perf_counter() - t
            print(f"{name}: trained and filled in {build:.1f} s", flush=True)
            for nprobe in (int(v) for v in args.nprobe.split(",")):
                ivf.nprobe = nprobe
                found, sec = timed_queries(searched.search, queries, args.k)
                rec = recall(found, exact)
                lines.append(row(f"{name} nprobe={nprobe}", rec, sec, build))
                print(lines[-1], flush=True)
                if rec >= 0.95:
                    best.append((f"{name} nprobe={nprobe}", rec, float(np.percentile(sec, 50))))
            del ivf, searched

    print(f"\n== {n} × {args.dim} {args.data} vectors, {args.queries} queries, top-{args.k}, "
          f"{args.threads} build / {args.query_threads} query threads ==")
    for line in lines:
        print(line)
    if best:
        name, rec, p50 = min(best, key=lambda b: b[2])
        print(f"fastest setting with recall@10 ≥ 0.95: {name}: recall {rec:.3f}, p50 {p50 * 1e3:.2f} ms "
              f"({flat_p50 / p50:.1f}× faster than exact at p50)")
    else:
        print("no swept setting reached recall@10 ≥ 0.95")


if __name__ == "__main__":
    main()
