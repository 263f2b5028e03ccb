"""Zero-shot classification figures on a demo checkpoint (issue 9, part 1).

1. ``clipworks.classify`` reproduces the trainer's zero-shot evaluation (``train.loop.zeroshot_eval``, the number
   the demo logs) on the same checkpoint, image for image.
2. Top-1 on the 10k Fashion-MNIST test images per template set (one template vs ensembles) and per test-time
   augmentation.
3. The prompt ensemble equals open_clip's ``build_zero_shot_classifier`` on the same model; time of both.
4. Last: ``classify`` throughput against the bare ``Encoder.encode_images`` + matmul it wraps (ratio).

    PYTHONPATH=src python bench/classify.py /path/to/run/checkpoints/step-N/model [--train-config RUN/train_config.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from clipworks.data import FashionMNIST
from clipworks.encoder import Encoder
from clipworks.zeroshot import TEMPLATE_SETS, ZeroShotClassifier, classify
from clipworks.zeroshot.tta import encode_images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a demo checkpoint's model directory")
    p.add_argument("--train-config", type=Path, default=None, help="the run's train_config.json (for its templates "
                   "and seed); default: the run directory above the checkpoint")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg_path = args.train_config or args.checkpoint.parents[2] / "train_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    demo_templates = cfg.get("zeroshot_templates") or list(TEMPLATE_SETS["simple"])
    encoder = Encoder.load(str(args.checkpoint))
    source = FashionMNIST(split="test")
    names = source.class_names
    images = [source.get(i).image for i in range(len(source))]
    labels = source.labels.numpy()

    # 1. the trainer's own evaluation vs classify(), on the demo's 2,000-image eval subset and on all 10k
    from clipworks.train.loop import zeroshot_eval

    for limit in (cfg.get("val_samples"), None):
        ref = zeroshot_eval(encoder.model, source, demo_templates, limit, cfg.get("seed", 0), encoder.device)
        print(f"trainer zeroshot_eval, {ref.n} images: top-1 {100 * ref.top1:.2f}%  top-5 {100 * ref.top5:.2f}%")
    t0 = time.perf_counter()
    preds = classify(encoder, images, names, templates=demo_templates, k=5)
    t_classify = time.perf_counter() - t0
    top1 = np.array([names.index(pr.label) for pr in preds])
    top5 = np.mean([names[y] in pr.labels for pr, y in zip(preds, labels)])
    ref_pred = ref.confusion.sum()  # n
    print(f"clipworks.classify, {len(preds)} images: top-1 {100 * np.mean(top1 == labels):.2f}%  top-5 {100 * top5:.2f}%"
          f"  (trainer's confusion matrix reproduced: {bool((_confusion(labels, top1) == ref.confusion.numpy()).all())},"
          f" n={int(ref_pred)})")

    # 2. template sets × test-time augmentation
    feats = {tta: encode_images(encoder, images, tta) for tta in ("none", "flip", "multicrop", "multicrop-flip")}
    sets = {"demo's own (5)": demo_templates, "simple (1)": "simple", 
            "openai-imagenet (80)": "openai-imagenet"}
    print(f"\ntop-1 % on {len(labels)} Fashion-MNIST test images   " + "  ".join(f"{t:>14}" for t in feats))
    for title, spec in sets.items():
        clf = ZeroShotClassifier.build(encoder, names, spec)
        accs = [100 * np.mean(clf.predict(f).argmax(1) == labels) for f in feats.values()]
        print(f"  {title:<40}" + "  ".join(f"{a:>14.2f}" for a in accs))

    # 3. the ensemble against open_clip's builder on the same model
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    templates = TEMPLATE_SETS["openai-imagenet"]
    many = [f"{n} {i}" for i in range(10) for n in names]  # 100 classes × 80 templates = 8,000 prompts
    t0 = time.perf_counter()
    ours = ZeroShotClassifier.build(encoder, many, templates)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok = encoder.tokenizer
    peer = build_zero_shot_classifier(encoder.model, lambda t: tok(t, context_length=encoder.model.context_length),
                                      many, templates, num_classes_per_batch=10)
    t_peer = time.perf_counter() - t0
    diff = float(np.abs(ours.weights - peer.numpy().T).max())
    print(f"\nensemble of 100 classes × 80 templates: max |ours - open_clip| = {diff:.1e}; "
          f"{t_ours:.2f} s vs open_clip {t_peer:.2f} s ({t_peer / t_ours:.2f}×)")

    # 4. classify()'s overhead over the bare encode + matmul it wraps
    clf = ZeroShotClassifier.build(encoder, names, demo_templates)
    t0 = time.perf_counter()
    bare = clf.predict(encoder.encode_images(images)).argmax(1)
    t_bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    wrapped = classify(encoder, images, clf, k=5)
    t_wrapped = time.perf_counter() - t0
    assert [names[i] for i in bare] == [pr.label for pr in wrapped]
    print(f"\nclassify {len(images)} images: {len(images) / t_wrapped:.0f} img/s (with the classifier build: "
          f"{len(images) / t_classify:.0f} img/s); bare encode_images + predict {len(images) / t_bare:.0f} img/s "
          f"-> classify/bare time ratio {t_wrapped / t_bare:.2f}")


def _confusion(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


if __name__ == "__main__":
    main()
