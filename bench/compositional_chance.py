"""Compositional probes on a model that knows nothing, beside the chance levels the report prints.

    PYTHONPATH=src python bench/compositional_chance.py [--model ViT-B-32] [--n 200] [--device cpu]

Three rows of evidence: i.i.d. random similarity scores (what "chance" means: 0.5 / 0.25 / 0.25 / 1/6),
an image-blind model (exactly 0.5 accuracy by construction: both directions of every pair are counted), and
the random-weight model, which is a fixed function and so has consistent biases rather than i.i.d. noise.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clipworks.encoder import Encoder
from clipworks.evaluate.compositional import CHANCE, evaluate_compositional, markdown_table, summarise


class _Blind:
    """Captions through the real text tower, every image the same vector: a text-only 'model'."""

    def __init__(self, encoder: Encoder):
        self.encoder = encoder

    def encode_text(self, texts):
        return self.encoder.encode_text(texts)

    def encode_images(self, images):
        return np.ones((len(images), self.encoder.embed_dim), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    iid = summarise(np.random.default_rng(0).standard_normal((100_000, 2, 2)))
    print("i.i.d. random scores, 100k probes:",
          ", ".join(f"{k} {100 * iid[k]:.1f} (chance {100 * v:.1f})" for k, v in CHANCE.items()))

    torch.manual_seed(0)
    encoder = Encoder.load(args.model, args.pretrained, device=args.device)
    blind = evaluate_compositional(_Blind(encoder), n_per_category=args.n)
    print(f"\nimage-blind (text tower of {encoder.ref.describe()}, constant image):")
    print(markdown_table(blind))

    start = time.perf_counter()
    result = evaluate_compositional(encoder, n_per_category=args.n)
    seconds = time.perf_counter() - start
    print(f"{encoder.ref.describe()}: {2 * result['overall']['n']} images in {seconds:.0f} s on {args.device}")
    print(markdown_table(result))
    for name, s in result["categories"].items():
        print(f"  {name:9s} by kind: " + ", ".join(f"{k} {100 * v['accuracy']:.1f}" for k, v in s["by_kind"].items()))
    overall = result["overall"]
    print("\nratio to chance (overall): " + ", ".join(f"{k} {overall[k] / v:.2f}" for k, v in CHANCE.items()))


if __name__ == "__main__":
    main()
