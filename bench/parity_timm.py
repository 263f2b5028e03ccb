"""Numerical parity of the timm image towers: full-size MobileCLIP2-S0 (FastViT MCi0) and convnext_base_w made by
open_clip with random weights (BatchNorm statistics and layer scales randomised too), saved as an open_clip hub
directory, loaded by clipworks; image and text embeddings of real photos (each model's own preprocessing) and
captions, fp32. Also the re-parameterised (fused) MobileCLIP tower against the unfused one. The last line is
the worst case.
    python bench/parity_timm.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

import clipworks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from open_clip_refs import open_clip_model  # noqa: E402

CAPTIONS = ["a photo of an astronaut", "a cup of coffee", "a cat", "a diagram of a rocket engine"]
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]


def photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(getattr(skimage.data, n)()) for n in PHOTOS]


def rel_max(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = float((a - b).abs().max())
    return d, d / max(1.0, float(b.abs().max()))


def timed(fn, x: torch.Tensor, rounds: int = 3) -> float:
    """Best of ``rounds`` wall times (the machine is shared)."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    import open_clip

    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name, tag in [("MobileCLIP2-S0", "dfndr2b"), ("convnext_base_w", "laion2b_s13b_b82k")]:
            ref = open_clip_model(name)
            pcfg = open_clip.get_pretrained_cfg(name, tag)
            hub = Path(tmp) / name
            hub.mkdir()
            (hub / "open_clip_config.json").write_text(json.dumps({
                "model_cfg": open_clip.get_model_config(name),
                "preprocess_cfg": {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode")}}))
            save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, hub / "open_clip_model.safetensors")
            _, _, ref_pre = open_clip.create_model_and_transforms("local-dir:" + str(hub), load_weights=False)
            ours, _, our_pre = clipworks.create_model_and_transforms(str(hub))
            images = photos()
            x = torch.stack([ref_pre(im) for im in images])
            pixel_diff = max(float((our_pre(im) - ref_pre(im)).abs().max()) for im in images)
            tokens = open_clip.get_tokenizer(name)(CAPTIONS)
            token_equal = torch.equal(clipworks.get_tokenizer(str(hub))(CAPTIONS), tokens)
            ri, rt = ref.encode_image(x), ref.encode_text(tokens)
            oi, ot = ours.encode_image(x), ours.encode_text(tokens)
            (di, ri_rel), (dt, rt_rel) = rel_max(oi, ri), rel_max(ot, rt)
            print(f"{name}: preprocessing max abs {pixel_diff:.1e}; tokens equal: {token_equal}; "
                  f"|image emb| max {float(ri.abs().max()):.2f}, |text emb| max {float(rt.abs().max()):.2f}")
            rows.append((f"{name} image", di, ri_rel))
            rows.append((f"{name} text", dt, rt_rel))
            if name.startswith("MobileCLIP"):
                unfused = timed(ours.encode_image, x)
                ours.visual.reparameterize()
                fused = timed(ours.encode_image, x)
                print(f"{name} image tower reparameterized: {unfused / fused:.2f}x the speed of the train-time form")
                rows.append((f"{name} image, reparameterized", *rel_max(ours.encode_image(x), ri)))
            del ref, ours
    for label, d, rel in rows:
        print(f"{label:36s} max abs {d:.2e}  relative {rel:.2e}")
    exact = max(max(r[1] for r in rows if "reparam" not in r[0]), 0.0)
    fused = max(r[2] for r in rows if "reparam" in r[0])
    print(f"worst max abs diff: {exact:.2e} (target ≤ 1e-5); reparameterized relative {fused:.2e} (target ≤ 1e-4)")


if __name__ == "__main__":
    main()
