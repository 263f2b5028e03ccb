"""ViT-B/32 text tower on short real captions, fp32 CPU: clipworks vs open_clip on the same weights.

``encode_text(tokenizer(captions))`` as a user writes it, on batches of 3–30-word captions from the bench corpus.
clipworks drops the padding columns a causal tower cannot see before its pure forward (``TextTower.trim``), so
a batch of short captions does not pay for 77 positions; open_clip runs all 77. Runs alternate between the two;
the last line is the texts/s ratio.
    python bench/text_speed.py [--threads 2] [--batch 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="ViT-B-32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip
    from caption_corpus import corpus

    import clipworks

    captions = [c for c in corpus() if 3 <= len(c.split()) <= 30][: args.batch]
    torch.manual_seed(0)
    ref = open_clip.create_model(args.model).eval()
    ref_tok = open_clip.get_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as d:
        torch.save(ref.state_dict(), Path(d) / "w.pt")
        ours = clipworks.load_checkpoint(Path(d) / "w.pt", config=args.model)
    our_tok = clipworks.get_tokenizer(args.model)
    runs = {"open_clip": lambda: ref.encode_text(ref_tok(captions)),
            "clipworks": lambda: ours.encode_text(our_tok(captions))}
    with torch.inference_mode():
        diff = (runs["open_clip"]() - runs["clipworks"]()).abs().max().item()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.rounds + 1):  # first round is warm-up
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    rates = {k: len(captions) / sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}  # median
    mean_words = sum(len(c.split()) for c in captions) / len(captions)
    print(f"{args.model} text tower, fp32, {len(captions)} captions of {mean_words:.1f} words on average, "
          f"{args.threads} threads, tokenizer included; max |diff| {diff:.2e}")
    for k, r in rates.items():
        print(f"{k}: {r:.0f} texts/s (median of {args.rounds})")
    print(f"ratio (clipworks/open_clip): {rates['clipworks'] / rates['open_clip']:.2f}x")


if __name__ == "__main__":
    main()
