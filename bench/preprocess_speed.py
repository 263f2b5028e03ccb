"""Eval preprocessing, file → normalised 224 px tensor: open_clip's ``preprocess`` vs clipworks' ``ImageTransform``.

Real photos (scikit-image's bundled ones; foolbox's ImageNet samples too when foolbox is installed), random crops
written as JPEG (quality 90) at typical camera sizes, 640×480 up to 12 megapixels, landscape and portrait. Each
round decodes every file and transforms it, one side after the other in this process (alternating, median of the
rounds). Rows:
- exact, one thread: ``preprocess(Image.open(f))`` vs ``ImageTransform(load_image(f))``; the tensors
  must be identical (max |diff| printed, and the script exits 1 if it is not 0).
- exact, ``--threads`` decode threads for both (the way ``embed``/``index`` run their loader; PIL releases the GIL
  while decoding and resizing, so both scale the same).
- the opt-in approximation (``ImageTransform(fast=True)``: JPEG draft decoding at ≥ 2× the target, PIL's
  ``reducing_gap`` resize), with its largest difference to open_clip's tensor.
Where the time goes (decode, resize, crop + normalise) is printed per photo size for open_clip's path.
    python bench/preprocess_speed.py [--photos 40] [--rounds 3] [--threads 2] [--model ViT-B-32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "horse", "immunohistochemistry", "motorcycle_left",
          "hubble_deep_field", "camera", "cat"]
SIZES = [(640, 480), (1024, 768), (1600, 1200), (1920, 1080), (2048, 1536), (3024, 4032), (4032, 3024), (768, 1024)]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import row


def bases() -> list[Image.Image]:
    import skimage.data

    out = []
    for name in PHOTOS:
        if hasattr(skimage.data, name):
            a = getattr(skimage.data, name)()
            out.append(Image.fromarray(a if a.dtype == np.uint8 else (a * 255).astype(np.uint8)).convert("RGB"))
    try:
        import foolbox  # noqa: F401  # its 20 ImageNet samples, when installed
        from foolbox.utils import samples

        images, _ = samples(None, dataset="imagenet", batchsize=20, data_format="channels_last", bounds=(0, 255))
        out += [Image.fromarray(np.asarray(i, dtype=np.uint8)) for i in images]
    except Exception as e:  # noqa: BLE001  # not installed, or no network for its samples: the photos suffice
        print(f"(foolbox samples not used: {type(e).__name__})")
    return out


def write_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    photos, paths = bases(), []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = im.crop((x, y, x + cw, y + ch)).resize(SIZES[i % len(SIZES)], Image.Resampling.BICUBIC)
        paths.append(folder / f"photo_{i:04d}.jpg")
        out.save(paths[-1], quality=90)
    return paths


def timed(fn, paths: list[Path], threads: int) -> float:
    t0 = time.perf_counter()
    if threads <= 1:
        for p in paths:
            fn(p)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, paths))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="ViT-B-32")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import open_clip
    from torchvision.transforms import Compose

    import clipworks
    from clipworks.factory import model_config
    from clipworks.image.decode import load_image

    preprocess = open_clip.create_model_and_transforms(args.model)[2]
    exact = clipworks.image_transform(model_config(args.model).preprocess())
    fast = replace(exact, fast=True)

    def ref(p: Path) -> torch.Tensor:
        return preprocess(Image.open(p))  # as open_clip's README writes it (its transform converts to RGB itself)

    def ours(p: Path) -> torch.Tensor:
        return exact(load_image(p))

    def ours_fast(p: Path) -> torch.Tensor:
        return fast(fast.load(p))

    with tempfile.TemporaryDirectory() as d:
        paths = write_photos(Path(d), args.photos)
        n_pixels = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths) / len(paths)
        exact_diff = max(float((ref(p) - ours(p)).abs().max()) for p in paths)
        fast_diffs = [float((ref(p) - ours_fast(p)).abs().max()) for p in paths]
        fast_mean = statistics.mean(float((ref(p) - ours_fast(p)).abs().mean()) for p in paths)

        # where open_clip's time goes, per size
        split: dict[tuple[int, int], list[float]] = {}
        resize, rest = preprocess.transforms[0], Compose(preprocess.transforms[1:])
        for p in paths:
            t0 = time.perf_counter()
            im = Image.open(p)
            im.load()
            t1 = time.perf_counter()
            r = resize(im)
            t2 = time.perf_counter()
            rest(r)
            t3 = time.perf_counter()
            split.setdefault(im.size, [0.0, 0.0, 0.0, 0])
            s = split[im.size]
            s[0], s[1], s[2], s[3] = s[0] + t1 - t0, s[1] + t2 - t1, s[2] + t3 - t2, s[3] + 1

        rows = {"open_clip": (ref, 1), "clipworks": (ours, 1), f"open_clip x{args.threads}": (ref, args.threads),
                f"clipworks x{args.threads}": (ours, args.threads), "clipworks fast": (ours_fast, 1),
                f"clipworks fast x{args.threads}": (ours_fast, args.threads)}
        times: dict[str, list[float]] = {k: [] for k in rows}
        for _ in range(args.rounds):
            for name, (fn, threads) in rows.items():
                times[name].append(timed(fn, paths, threads))
    rate = {k: len(paths) / statistics.median(v) for k, v in times.items()}
    print(f"{len(paths)} JPEG photos (quality 90), {n_pixels / 1e6:.1f} megapixels on average, -> {exact.image_size} px "
          f"{exact.resize_mode}/{exact.interpolation}; median of {args.rounds} rounds")
    print("open_clip's time per photo by size (decode / resize / crop+ToTensor+Normalize), ms:")
    for size, (dec, res, rest, k) in sorted(split.items(), key=lambda kv: kv[0][0] * kv[0][1]):
        print(f"  {size[0]}x{size[1]}: {dec / k * 1e3:.1f} / {res / k * 1e3:.1f} / {rest / k * 1e3:.2f}")
    for k, r in rate.items():
        print(f"{k:22s} {r:7.1f} images/s")
    print(f"exact path max |diff| to open_clip: {exact_diff:.1e}" + ("" if exact_diff == 0 else "  <-- NOT IDENTICAL"))
    print(f"fast path (draft + reducing_gap): {rate['clipworks fast'] / rate['open_clip']:.2f}x open_clip, max |diff| "
          f"{max(fast_diffs):.3f} (median over photos {statistics.median(fast_diffs):.3f}, mean |diff| {fast_mean:.4f}) "
          f"in normalised units")
    print(f"ratio (exact, {args.threads} threads each, clipworks/open_clip): "
          f"{rate[f'clipworks x{args.threads}'] / rate[f'open_clip x{args.threads}']:.2f}x")
    print(f"ratio (exact, clipworks loader with {args.threads} threads / open_clip preprocess loop): "
          f"{rate[f'clipworks x{args.threads}'] / rate['open_clip']:.2f}x")
    print(f"ratio (exact, one thread each, clipworks/open_clip): {rate['clipworks'] / rate['open_clip']:.2f}x")
    what = f"Preprocessing, JPEG photos ({n_pixels / 1e6:.1f} MP) to {exact.image_size} px"
    row(f"{what}, exact, 1 thread each", "images/s", rate["clipworks"], rate["open_clip"], note="identical tensors")
    row(f"{what}, exact, {args.threads} threads each", "images/s", rate[f"clipworks x{args.threads}"],
        rate[f"open_clip x{args.threads}"])
    row(f"{what}, opt-in fast decode, 1 thread", "images/s", rate["clipworks fast"], rate["open_clip"],
        note=f"max diff {max(fast_diffs):.3f}, mean {fast_mean:.4f} (normalised units); peer exact")
    if exact_diff != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
