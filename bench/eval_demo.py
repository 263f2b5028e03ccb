"""Issue 9's figure: on the checkpoint `clipworks demo` writes, `clipworks eval zeroshot` reproduces the demo's
reported zero-shot accuracy exactly; and what the prompt ensemble buys over a single template.

    python bench/eval_demo.py --checkpoint runs/demo            # the demo's --out folder
    python bench/eval_demo.py --checkpoint runs/demo/checkpoints/step-00001521/model

Runs the real command (`python -m clipworks eval zeroshot … --compare-single`) on the 10k Fashion-MNIST test
images with the templates the demo evaluated with (read from its metrics.json), then compares top-1, top-5 and
per-class accuracy with the metrics.json the demo wrote. Equality is expected to the image: the command scores
the same features with the same classifier as the trainer. (Run it on the device the demo trained on: another
device's kernels can move a near-tie.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def find_demo(path: Path) -> tuple[Path, Path]:
    """(model dir, metrics.json) from the demo's out folder, a checkpoint step folder or its model folder."""
    path = path.resolve()
    metrics = next((p / "metrics.json" for p in (path, *path.parents[:4]) if (p / "metrics.json").is_file()), None)
    if metrics is None:
        sys.exit(f"no metrics.json found at or above {path}: is it a `clipworks demo` output?")
    if (path / "metrics.json").is_file():  # the out folder: its final checkpoint
        path = Path(json.loads(metrics.read_text())["checkpoint"])
    model = path / "model" if (path / "model").is_dir() else path
    return model, metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="the demo's out folder, a step folder or model dir")
    p.add_argument("--device", default=None, help="default: the device the demo ran on (cuda when it said auto and "
                                                  "there is one)")
    args = p.parse_args()
    model, metrics_path = find_demo(args.checkpoint)
    demo = json.loads(metrics_path.read_text())
    config = demo.get("config", {})
    templates = config.get("zeroshot_templates") or config.get("templates")
    device = args.device or config.get("device", "cpu")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="eval-demo-") as tmp:
        templates_file = Path(tmp) / "templates.txt"
        templates_file.write_text("\n".join(templates) + "\n")
        cmd = [sys.executable, "-m", "clipworks", "eval", "zeroshot", "--model", str(model), "--dataset", "fashion-mnist",
               "--split", config.get("val_split", "test"), "--templates", str(templates_file), "--compare-single",
               "--device", device, "--out", tmp, "--no-plot"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        result = json.loads((Path(tmp) / "zeroshot_fashion-mnist-test.json").read_text())
    m, single = result["metrics"], result["single_template"]
    per_class_demo = demo["per_class_accuracy"]
    per_class_eval = result["per_class_recall"]
    same = (m["acc1"] == demo["zeroshot_top1"] and m["acc5"] == demo["zeroshot_top5"] and result["n"] == demo["test_images"]
            and all(per_class_eval[c] == per_class_demo[c] for c in per_class_demo))
    print(f"checkpoint: {model}")
    print(f"command: {' '.join(cmd[1:])}  ({seconds:.0f} s on {device})")
    print(f"demo metrics.json: top-1 {100 * demo['zeroshot_top1']:.2f}%  top-5 {100 * demo['zeroshot_top5']:.2f}%  "
          f"n {demo['test_images']}")
    print(f"eval zeroshot:     top-1 {100 * m['acc1']:.2f}%  top-5 {100 * m['acc5']:.2f}%  n {result['n']}  "
          f"mean per-class recall {100 * m['mean_per_class_recall']:.2f}%")
    print(f"per-class accuracy identical: {all(per_class_eval[c] == per_class_demo[c] for c in per_class_demo)}")
    print(f"prompt ensemble ({len(result['templates'])} templates) top-1 {100 * m['acc1']:.2f}% vs single "
          f"{single['template']!r} {100 * single['metrics']['acc1']:.2f}% "
          f"({100 * (m['acc1'] - single['metrics']['acc1']):+.2f} points)")
    print(f"eval top-1 / demo top-1 = {m['acc1'] / demo['zeroshot_top1']:.6f} -> "
          + ("EXACT (top-1, top-5, n and every class)" if same else "MISMATCH"))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
