"""Text → image search on Fashion-MNIST: mean precision@10 of each class prompt over the indexed test images.

    python bench/fmnist_search.py --checkpoint runs/demo/checkpoints/step-XXXXXXXX/model [--out runs/fmnist-search]

Writes the 10k test images as PNG files into one folder per class, indexes them with the checkpoint (the same
``Index.add`` as ``clipworks index build``), searches each class prompt ("a photo of a {class}.") and prints the
precision@10 per class and its mean (the fraction of the top 10 files that lie in the prompt's class folder).
For comparison it prints the zero-shot accuracy of the same single prompt over the same stored vectors
(argmax over the ten prompts), which the precision should be near. Re-running reuses the PNGs and the index.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def folder_name(class_name: str) -> str:
    return class_name.replace("/", "_").replace(" ", "_")


def write_pngs(out: Path, limit: int | None) -> int:
    from PIL import Image

    from clipworks.data import FASHION_MNIST_CLASSES, FashionMNIST

    data = FashionMNIST(split="test")
    n = len(data) if limit is None else min(limit, len(data))
    written = 0
    for i in range(n):
        name = FASHION_MNIST_CLASSES[int(data.labels[i])]
        path = out / folder_name(name) / f"{i:05d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data.images[i].numpy()).save(path)
            written += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="model directory or checkpoint (e.g. the demo's model)")
    p.add_argument("--out", type=Path, default=Path("runs/fmnist-search"), help="where the PNGs and index go")
    p.add_argument("--template", default="a photo of a {}.")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="index only the first N test images")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from clipworks.data import FASHION_MNIST_CLASSES
    from clipworks.encoder import Encoder
    from clipworks.search import Index, search
    from clipworks.search.store import DB_NAME

    torch.set_num_threads(args.threads)
    images, index_dir = args.out / "images", args.out / "index"
    t = time.perf_counter()
    n = write_pngs(images, args.limit)
    print(f"{n} test images as PNG under {images} ({time.perf_counter() - t:.1f} s)", flush=True)
    encoder = Encoder.load(args.checkpoint)
    if (index_dir / DB_NAME).exists():
        index = Index.open(index_dir, encoder=encoder, writable=True)
    else:
        index = Index.create(index_dir, images, encoder)
    with index:
        report = index.add()
        print(f"index: {report}" + (f" ({report.embedded / report.seconds:.0f} images/s)" if report.embedded else ""),
              flush=True)
        prompts = [args.template.format(c) for c in FASHION_MNIST_CLASSES]
        precision = []
        for name, prompt in zip(FASHION_MNIST_CLASSES, prompts):
            page = search(index, [(1.0, prompt)], k=args.k)
            precision.append(np.mean([h.path.split("/")[0] == folder_name(name) for h in page.hits]))
        ids = index.all_ids()
        vectors = index.vectors(ids)
        truth = np.array([FASHION_MNIST_CLASSES.index(next(c for c in FASHION_MNIST_CLASSES
                                                           if folder_name(c) == it.path.split("/")[0]))
                          for it in index.items(ids)])
        accuracy = float(np.mean((vectors @ encoder.encode_text(prompts).T).argmax(1) == truth))

    print(f"\n== Fashion-MNIST test, {len(ids)} indexed images, {args.checkpoint}, prompt {args.template!r} ==")
    for name, prec in zip(FASHION_MNIST_CLASSES, precision):
        print(f"  {name:<12} precision@{args.k} {prec:.2f}")
    print(f"zero-shot accuracy of the same prompt on the same vectors: {accuracy:.4f}")
    print(f"mean precision@{args.k}: {np.mean(precision):.3f}")


if __name__ == "__main__":
    main()
