"""The trainer's CUDA paths side by side: fp32 vs bf16 autocast, unsharded vs FSDP2 (one rank, NCCL), GradCache
with tiled loss, and ViT-B-32 with FSDP + gradient checkpointing vs plain bf16. Each run is a fresh process
(FSDP ones under torchrun) on Fashion-MNIST; the table gives samples/s, the loss at the last logged step and
the zero-shot top-1 on the 10k test images. Pairs that compute the same thing (bf16 vs FSDP bf16, B-32 with and
without FSDP/checkpointing) should log the same loss; fp32 vs bf16 should agree closely. Needs a GPU.

    python bench/trainer_cuda.py [--data fashion-mnist] [--steps 300] [--runs fp32,bf16,...] [--workers 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The runner calls train() directly, so the bench needs the library but not its CLI's dependencies.
RUNNER = "import json, sys\nfrom clipworks.train.config import TrainConfig\nfrom clipworks.train.loop import train\n" \
         "train(TrainConfig.from_dict(json.load(open(sys.argv[1]))))\n"

SMALL = {"model": "fmnist-vit", "batch_size": 1024, "lr": 2e-3, "warmup": 30}
B32 = {"model": "ViT-B-32", "batch_size": 256, "lr": 5e-4, "warmup": 10, "val_samples": 500, "max_steps": 60}
RUNS: dict[str, dict] = {
    "fp32": {**SMALL},
    "bf16": {**SMALL, "precision": "bf16"},
    "fsdp-bf16": {**SMALL, "precision": "bf16", "parallel": "fsdp"},
    "fsdp-bf16-accum4-tile256": {**SMALL, "precision": "bf16", "parallel": "fsdp", "accum_steps": 4, "tile_size": 256},
    "b32-bf16": {**B32, "precision": "bf16"},
    "b32-fsdp-bf16-ckpt": {**B32, "precision": "bf16", "parallel": "fsdp", "grad_checkpointing": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist", help="Fashion-MNIST spec (a folder of the IDX files works)")
    ap.add_argument("--steps", type=int, default=300, help="steps of the fmnist-vit runs (ViT-B-32 runs take 60)")
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--workers", type=int, default=6)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trainer_cuda-"))
    runner = work / "run.py"
    runner.write_text(RUNNER)
    base = {"data": args.data, "val_data": args.data, "val_samples": 2000, "max_steps": args.steps,
            "weight_decay": 0.1, "grad_clip": None, "workers": args.workers, "device": "cuda", "progress": False,
            "tensorboard": False, "multi_positive": "label", "log_every": 10, "save_every": 100_000, "seed": 0}
    rows = []
    for name in args.runs.split(","):
        cfg = {**base, **RUNS[name], "out": str(work / name)}
        path = work / f"{name}.json"
        path.write_text(json.dumps(cfg))
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] \
            if cfg.get("parallel") == "fsdp" else [sys.executable]
        t0 = time.perf_counter()
        proc = subprocess.run([*launch, str(runner), str(path)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            print(f"{name} failed:\n{proc.stderr[-3000:]}", flush=True)
            continue
        summary = json.loads((work / name / "summary.json").read_text())
        logged = [json.loads(line) for line in (work / name / "metrics.jsonl").read_text().splitlines()]
        last_loss = [r for r in logged if "loss" in r][-1]
        rows.append((name, summary["steps"], summary["samples_per_s"], last_loss["step"], last_loss["loss"],
                     summary.get("zeroshot_top1"), wall))
        print(f"{name}: {rows[-1]}", flush=True)
    print(f"\n{'run':<28}{'steps':>6}{'samples/s':>11}{'loss @ step':>18}{'zero-shot':>11}{'wall s':>8}")
    for name, steps, sps, at, loss, top1, wall in rows:
        top1_text = f"{100 * top1:.2f}%" if top1 is not None else "-"
        print(f"{name:<28}{steps:>6}{sps:>11.0f}{loss:>12.5f} @ {at:<4}{top1_text:>11}{wall:>8.1f}")


if __name__ == "__main__":
    main()
