"""ONNX export parity: the fp32 graphs' largest |difference| to torch for every tower family, and on a trained model
what int8 costs — cosine of int8 to fp32 embeddings and the zero-shot top-1 change on Fashion-MNIST.

Families are the tiny random models of ``tests/onnx_families.py`` (every tower kind clipworks loads); ``--configs``
adds named configs at their real shapes with random weights (ViT-B-32, RN50, …: slower to export). With
``--checkpoint`` (a ``clipworks demo`` output: its folder, a step folder or the model folder), the model is exported
with int8 graphs and evaluated on the 10k Fashion-MNIST test images with the ``fashion-mnist`` template set: torch
fp32 vs ONNX fp32 vs ONNX int8, same preprocessing, same prompt ensembling (``build_classifier``'s: per class the
normalised mean of the normalised template embeddings). The last line is the int8 top-1 drop (target ≤ 1 point).

    python bench/onnx_parity.py [--configs ViT-B-32 RN50] [--checkpoint runs/demo] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import row

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def model_dir(path: Path) -> Path:
    """The model folder of a demo output folder (its final checkpoint), a step folder or the model folder itself."""
    path = path.resolve()
    if (path / "metrics.json").is_file():
        path = Path(json.loads((path / "metrics.json").read_text())["checkpoint"])
    return path / "model" if (path / "model").is_dir() else path


def family_rows(names: list[str] | None, configs: list[str], root: Path) -> list[tuple[str, dict[str, float], float]]:
    from onnx_families import families

    from clipworks.encoder import Encoder
    from clipworks.export import export_onnx_report

    builders = {k: v for k, v in families(root).items() if not names or k in names}
    for name in configs:
        builders[name] = lambda name=name: Encoder.load(name)  # random weights at the config's real shapes
    rows = []
    for name, build in builders.items():
        encoder = build()
        t0 = time.perf_counter()
        result = export_onnx_report(encoder, root / "out" / name)
        rows.append((name, result.max_diff, time.perf_counter() - t0))
        print(f"  {name:20s} image {result.max_diff['image']:.1e}  text {result.max_diff['text']:.1e}  "
              f"(export + check {rows[-1][2]:.0f} s)", flush=True)
    return rows


def zeroshot(checkpoint: Path, root: Path, batch: int) -> dict[str, float]:
    from clipworks.data import open_source
    from clipworks.encoder import Encoder
    from clipworks.export import export_onnx_report, int8_parity
    from clipworks.export.onnx import session_for
    from clipworks.runtime.package import Package
    from clipworks.zeroshot.classifier import build_classifier
    from clipworks.zeroshot.templates import TEMPLATE_SETS

    encoder = Encoder.load(str(checkpoint))
    out = root / "demo-onnx"
    result = export_onnx_report(encoder, out, int8=True)
    package = Package.read(out)
    source = open_source("fashion-mnist", split="test")
    templates = list(TEMPLATE_SETS["fashion-mnist"])
    classes = list(source.class_names)
    labels = source.labels.numpy()
    images = [source.get(i).image for i in range(len(source))]
    pixels = torch.stack([encoder.pixels(im) for im in images])
    prompts = [t.format(c) for c in classes for t in templates]
    ids = encoder.tokenizer(prompts)

    def norm(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def classifier(text: np.ndarray) -> np.ndarray:
        return norm(norm(text).reshape(len(classes), len(templates), -1).mean(1)).T

    def top1(image_features: np.ndarray, weights: np.ndarray) -> float:
        return float(((norm(image_features) @ weights).argmax(1) == labels).mean())

    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with torch.inference_mode():
        weights = build_classifier(encoder.model, encoder.tokenizer, classes, templates).numpy()
        img = np.concatenate([encoder.model.encode_image(pixels[i : i + batch]).numpy()
                              for i in range(0, len(pixels), batch)])
        feats["torch fp32"] = (img, weights)
    for precision in ("fp32", "int8"):
        image = session_for(out / package.graph("image", precision).file)
        text = session_for(out / package.graph("text", precision).file)
        img = np.concatenate([image.run(None, {"pixels": pixels[i : i + batch].numpy()})[0]
                              for i in range(0, len(pixels), batch)])
        feats[f"onnx {precision}"] = (img, classifier(text.run(None, {"input_ids": ids.numpy()})[0]))
    acc = {k: top1(img, w) for k, (img, w) in feats.items()}
    report = int8_parity(out, images=images, texts=prompts)
    diff = float(np.abs(feats["onnx fp32"][0] - feats["torch fp32"][0]).max())
    print(f"demo model {checkpoint}: export parity image {result.max_diff['image']:.1e} text "
          f"{result.max_diff['text']:.1e}; on all {len(labels)} test images: max |onnx fp32 - torch| {diff:.1e}")
    for line in report.lines():
        print(f"  int8 {line}")
    for k, a in acc.items():
        print(f"  zero-shot top-1 {k:10s} {100 * a:.2f}%  ({len(templates)} templates)")
    row("Demo model int8 image embeddings: cosine to fp32, mean", "cosine", report.image_mean,
        note=f"min {report.image_min:.4f} over the {len(images)} parity images")
    for k in ("onnx fp32", "onnx int8"):
        row(f"Demo model zero-shot top-1 on Fashion-MNIST, {k.replace('onnx', 'ONNX')}", "%", 100 * acc[k],
            100 * acc["torch fp32"], peer_name="clipworks torch fp32", note="ratio 1.00 = no change")
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="*", default=None, help="tiny families to export (default: all)")
    ap.add_argument("--configs", nargs="*", default=[], help="named configs to export at full size, random weights")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a clipworks demo output (int8 zero-shot check)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="onnx-parity-") as tmp:
        root = Path(tmp)
        print(f"fp32 ONNX vs torch, max |difference| of unnormalised embeddings (limit 1e-4), {args.threads} threads:")
        rows = family_rows(args.families, args.configs, root)
        worst = max(max(d.values()) for _, d, _ in rows)
        acc = zeroshot(model_dir(args.checkpoint), root, args.batch) if args.checkpoint else None
    row(f"ONNX fp32 vs torch, {len(rows)} exported families: worst max |diff|", "abs diff", worst,
        note="limit 1e-4")
    line = f"fp32: {len(rows)} families, worst max |diff| {worst:.1e} ({'within' if worst <= 1e-4 else 'ABOVE'} 1e-4)"
    if acc:
        drop = 100 * (acc["torch fp32"] - acc["onnx int8"])
        line += (f"; zero-shot top-1 onnx fp32 - torch {100 * (acc['onnx fp32'] - acc['torch fp32']):+.2f} points, "
                 f"int8 drop {drop:+.2f} points (target <= 1)")
    print(line)


if __name__ == "__main__":
    main()
