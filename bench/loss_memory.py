"""Loss memory and time, forward + backward: clipworks' tiled ClipLoss/SigLipLoss vs open_clip's dense ones.

Normalised random features [B, d] that require grad (d=512, B=16384 by default). Every measurement runs in a
fresh process, so one variant's freed memory cannot hide another's peak; processes alternate between the
variants round by round, so machine noise hits all of them. Peak extra memory is the growth of peak RSS
over the RSS just before the loss (on CUDA, max_memory_allocated over memory_allocated). The last lines are
the ratios: memory (tiled peak / open_clip peak) and time (tiled / open_clip).
    nice python bench/loss_memory.py [--batch 16384] [--dim 512] [--tiles 1024] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from clipworks.loss import DEFAULT_TILE_SIZE

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rows import row

MiB = 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(kind: str, impl: str, batch: int, dim: int, tile: int, device: str, threads: int) -> None:
    """One forward + backward of one loss; prints {"peak": bytes, "seconds": s} as JSON."""
    import open_clip.loss as oc

    from clipworks.loss import ClipLoss, SigLipLoss

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    x, y = torch.randn(batch, dim, device=dev), torch.randn(batch, dim, device=dev)
    for t in (x, y):
        t.div_(t.norm(dim=1, keepdim=True)).requires_grad_()
    scale = torch.tensor(10.0, device=dev, requires_grad=True)
    bias = torch.tensor(-10.0, device=dev, requires_grad=True)
    if impl == "open_clip":
        loss_fn = oc.ClipLoss() if kind == "clip" else oc.SigLipLoss()
    else:
        loss_fn = ClipLoss(tile_size=tile) if kind == "clip" else SigLipLoss(tile_size=tile)
    args = (x, y, scale) if kind == "clip" else (x, y, scale, bias)
    if dev.type == "cuda":
        loss_fn(*args).backward()  # warm-up: kernels, cuBLAS workspace
        for t in (x, y, scale, bias):
            t.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        if resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > base + 16 * MiB:
            raise RuntimeError("the process peaked before the measurement; the RSS probe would under-report")
    start = time.perf_counter()
    loss_fn(*args).backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"peak": peak, "seconds": seconds}))


def measure(kind: str, impl: str, tile: int, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind, impl, "--batch", str(args.batch), "--dim", str(args.dim),
           "--tiles", str(tile), "--device", args.device, "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{kind} {impl} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16384)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--tiles", default=str(DEFAULT_TILE_SIZE), help="comma-separated tile sizes to compare")
    ap.add_argument("--rounds", type=int, default=3, help="best time of this many alternated rounds")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    tiles = [int(t) for t in args.tiles.split(",")]
    if args.child:
        child(*args.child, args.batch, args.dim, tiles[0], args.device, args.threads)
        return

    variants = [(kind, "open_clip", 0) for kind in ("clip", "siglip")]
    variants += [(kind, "clipworks", t) for kind in ("clip", "siglip") for t in tiles]
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            results[v].append(measure(*v, args))
            m = results[v][-1]
            print(f"  round {r + 1}: {v[0]:6s} {v[1]:9s} tile {v[2] or '-':>5}: "
                  f"{m['peak'] / MiB:8.1f} MiB  {m['seconds']:7.2f} s", flush=True)

    best = {v: (max(m["peak"] for m in ms), min(m["seconds"] for m in ms)) for v, ms in results.items()}
    print(f"\nd={args.dim}, B={args.batch}, {args.device}, {args.threads} threads; "
          f"peak extra memory (max of {args.rounds}) and time (best of {args.rounds}), forward + backward")
    for (kind, impl, tile), (peak, seconds) in best.items():
        print(f"{'ClipLoss' if kind == 'clip' else 'SigLipLoss':10s} {impl:9s} tile {tile or '-':>5}: "
              f"{peak / MiB:8.1f} MiB  {seconds:7.2f} s")
    for kind, name in (("clip", "ClipLoss"), ("siglip", "SigLipLoss")):
        ref_peak, ref_time = best[(kind, "open_clip", 0)]
        for tile in tiles:
            peak, seconds = best[(kind, "clipworks", tile)]
            print(f"{name} tile {tile}: memory ratio (clipworks / open_clip) {peak / ref_peak:.3f}, "
                  f"time ratio {seconds / ref_time:.2f}x")
            what = f"{name} forward+backward, B={args.batch}, d={args.dim}, tile {tile}"
            row(f"{what}: peak extra memory", "MiB", peak / MiB, ref_peak / MiB, higher_is_better=False)
            row(f"{what}: time", "s", seconds, ref_time, higher_is_better=False)


if __name__ == "__main__":
    main()
