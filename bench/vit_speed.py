"""ViT-B/32 image tower, fp32 CPU inference, batch 32: clipworks vs open_clip on the same weights.

Runs alternate between the two so machine noise hits both; the last line is the images/s ratio.
    python bench/vit_speed.py [--threads 2] [--batch 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="ViT-B-32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip

    import clipworks

    torch.manual_seed(0)
    ref = open_clip.create_model(args.model).eval()
    with tempfile.TemporaryDirectory() as d:
        torch.save(ref.state_dict(), Path(d) / "w.pt")
        ours = clipworks.load_checkpoint(Path(d) / "w.pt", config=args.model)
    x = torch.randn(args.batch, 3, ours.image_size, ours.image_size)
    with torch.inference_mode():
        diff = (ref.encode_image(x) - ours.encode_image(x)).abs().max().item()
        times: dict[str, list[float]] = {"open_clip": [], "clipworks": []}
        for _ in range(args.rounds + 1):  # first round is warm-up
            for name, model in (("open_clip", ref), ("clipworks", ours)):
                t0 = time.perf_counter()
                model.encode_image(x)
                times[name].append(time.perf_counter() - t0)
    rates = {k: args.batch / sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}  # median
    print(f"{args.model} image tower, fp32, batch {args.batch}, {args.threads} threads; max |diff| {diff:.2e}")
    for k, r in rates.items():
        print(f"{k}: {r:.1f} images/s (median of {args.rounds})")
    print(f"ratio (clipworks/open_clip): {rates['clipworks'] / rates['open_clip']:.2f}x")


if __name__ == "__main__":
    main()
