"""Indexing throughput beside plain embedding, and the cost of adding one file to a 10k-item index.

1. Writes N JPEGs (random crops of the scikit-image photos, resized to realistic 640×480-ish sizes), then times
   ``embed_images`` (what ``clipworks embed`` runs) and ``Index.create`` + ``add`` (scan, hash, embed, SQLite
   commits, FAISS write) on that folder with the same model — ViT-B-32 with random weights saved to a
   checkpoint (an index refuses unsaved random weights). Runs alternate; the best of each is kept.
2. Builds a 10k-item index (real small files, synthetic vectors through ``Index.add_embeddings``), puts one
   new photo in the folder and times what ``clipworks index add IDX`` does: open (load + check the FAISS
   cache) and ``add`` (stat 10k files, hash and embed the new one, commit, rewrite the cache).

    python bench/index_throughput.py [--images 300] [--threads 1] [--items 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "immunohistochemistry", "hubble_deep_field"]


def write_photos(folder: Path, n: int, seed: int = 0) -> None:
    import skimage.data

    rng = np.random.default_rng(seed)
    bases = []
    for name in PHOTOS:
        a = getattr(skimage.data, name)()
        bases.append(Image.fromarray(a if a.dtype == np.uint8 else (a * 255).astype(np.uint8)).convert("RGB"))
    folder.mkdir(parents=True)
    sizes = [(640, 480), (480, 640), (800, 600), (640, 427), (1024, 768)]
    for i in range(n):
        im = bases[i % len(bases)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = im.crop((x, y, x + cw, y + ch)).resize(sizes[i % len(sizes)], Image.Resampling.BICUBIC)
        sub = folder / f"set{i % 5}"
        sub.mkdir(exist_ok=True)
        out.save(sub / f"photo_{i:04d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--items", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import clipworks
    from clipworks.embed import embed_images
    from clipworks.encoder import Encoder
    from clipworks.image.decode import expand_image_paths
    from clipworks.search import Index

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        torch.manual_seed(0)
        clipworks.save_pretrained(clipworks.create_model("ViT-B-32"), tmp / "vit-b-32")
        encoder = Encoder.load(str(tmp / "vit-b-32"), batch_size=args.batch)
        write_photos(tmp / "photos", args.images)
        paths = expand_image_paths([tmp / "photos"])
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{len(paths)} JPEGs ({mb:.1f} MB), ViT-B-32 fp32 CPU, {args.threads} torch thread(s), "
              f"{args.workers} decode workers, batch {args.batch}")
        embed_images(encoder.model, encoder.preprocess, paths[:16], args.batch, workers=args.workers)  # warm-up

        times: dict[str, list[float]] = {"embed": [], "index": []}
        for r in range(args.rounds):
            t0 = time.perf_counter()
            embedded = embed_images(encoder.model, encoder.preprocess, paths, args.batch, workers=args.workers)
            times["embed"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with Index.create(tmp / f"idx{r}", tmp / "photos", encoder) as index:
                report = index.add(workers=args.workers)
            times["index"].append(time.perf_counter() - t0)
            assert report.added == len(paths) == len(embedded.paths), report
        best = {k: min(v) for k, v in times.items()}
        for k, v in times.items():
            print(f"{k:>6}: {len(paths) / best[k]:.2f} images/s (best of {args.rounds}: "
                  f"{', '.join(f'{t:.1f}s' for t in v)})")

        # -- one new file into a 10k-item index --------------------------------------------------------------
        big = tmp / "big"
        for i in range(args.items):
            folder = big / f"d{i // 1000:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"img_{i:05d}.png").write_bytes(i.to_bytes(4, "little") + b"synthetic")
        files = sorted(big.rglob("*.png"))
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((len(files), encoder.embed_dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        t0 = time.perf_counter()
        with Index.create(tmp / "big-idx", big, encoder) as index:
            index.add_embeddings(files, vectors)
        fill = time.perf_counter() - t0
        Image.open(paths[0]).save(big / "d00" / "new_photo.jpg")
        t0 = time.perf_counter()
        with Index.open(tmp / "big-idx", encoder=encoder, writable=True) as index:
            opened = time.perf_counter() - t0
            report = index.add(workers=args.workers)
            total = time.perf_counter() - t0
            assert (report.added, report.unchanged, report.embedded) == (1, args.items, 1), report
            count = len(index)
        print(f"{args.items}-item index (filled with synthetic vectors in {fill:.1f}s): adding one new photo took "
              f"{total:.2f}s (open {opened:.2f}s, add {report.seconds:.2f}s) → {count} items")
        overhead = 100 * (best["index"] / best["embed"] - 1)
        print(f"indexing overhead vs embed_images: {overhead:+.1f}% "
              f"(ratio index/embed time {best['index'] / best['embed']:.3f}x)")


if __name__ == "__main__":
    main()
