"""ViT-B/32 image tower, fp32 CPU inference: clipworks vs open_clip on the same weights.

Throughput at ``--batch`` (images/s, and as a share of the fp32 ceiling: this machine's measured ``torch.mm`` peak at
the same thread count divided by the tower's matmul FLOPs per image), then batch-1 latency (the time one image takes,
which a search box or a photo app waits for). Runs alternate between the two so machine noise hits both; the last
lines are the ratios.
    python bench/vit_speed.py [--threads 2] [--batch 32] [--rounds 5] [--latency-runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import row


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n×n ``torch.mm`` at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_image(model, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model.encode_image(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--latency-runs", type=int, default=20)
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
    size = ours.image_size
    x = torch.randn(args.batch, 3, size, size)
    one = x[:1].clone()
    our_image = ours.encode_image
    with torch.inference_mode():
        flops = flops_per_image(ours, size)
        peak = matmul_peak()
        diff = (ref.encode_image(x) - our_image(x)).abs().max().item()
        runs = {"open_clip": ref.encode_image, "clipworks": our_image}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.rounds + 1):  # first round is warm-up
            for name, run in runs.items():
                times[name].append(_timed(lambda run=run: run(x)))
        latency: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(3):
            for run in runs.values():
                run(one)
        for _ in range(args.latency_runs):
            for name, run in runs.items():
                latency[name].append(_timed(lambda run=run: run(one)))
    rates = {k: args.batch / statistics.median(v[1:]) for k, v in times.items()}
    ceiling = peak * 1e9 / flops
    lat = {k: statistics.median(v) * 1e3 for k, v in latency.items()}
    print(f"{args.model} image tower, fp32, {args.threads} threads; max |diff| {diff:.2e}; {flops / 1e9:.2f} GFLOP per "
          f"image, matmul peak {peak:.0f} GFLOP/s -> ceiling {ceiling:.1f} images/s")
    for k, r in rates.items():
        print(f"{k}: {r:.1f} images/s at batch {args.batch} ({r / ceiling:.0%} of the fp32 ceiling, median of "
              f"{args.rounds}); batch-1 latency {lat[k]:.1f} ms (median of {args.latency_runs})")
    print(f"latency ratio (batch 1, clipworks/open_clip, lower is better): {lat['clipworks'] / lat['open_clip']:.2f}x")
    print(f"ratio (batch {args.batch} images/s, clipworks/open_clip): {rates['clipworks'] / rates['open_clip']:.2f}x")
    name = args.model.replace("ViT-B-32", "ViT-B/32")
    row(f"{name} image tower, batch {args.batch}, PyTorch fp32, {args.threads} threads", "images/s", rates["clipworks"],
        rates["open_clip"], ceiling=rates["clipworks"] / ceiling)
    row(f"{name} image tower, batch-1 latency, PyTorch fp32, {args.threads} threads", "ms", lat["clipworks"],
        lat["open_clip"], higher_is_better=False)


if __name__ == "__main__":
    main()
