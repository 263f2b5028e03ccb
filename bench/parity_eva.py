"""EVA-02 CLIP: open_clip's models (timm ``Eva`` image towers, random weights, every tensor moved off its init)
saved as open_clip Hub directories, loaded by clipworks into its own ViT. Prints the image-tower speed of both on
the same weights (fp32 CPU, runs alternate so machine noise hits both), then the max abs differences of image and
text embeddings, the worst case last.
    python bench/parity_eva.py [--models EVA02-B-16 EVA02-L-14] [--batch 8] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


def time_image_towers(ref: torch.nn.Module, ours: torch.nn.Module, x: torch.Tensor, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"open_clip": [], "clipworks": []}
    with torch.inference_mode():
        for _ in range(rounds + 1):  # the first round warms up
            for name, model in (("open_clip", ref), ("clipworks", ours)):
                t0 = time.perf_counter()
                model.encode_image(x)
                times[name].append(time.perf_counter() - t0)
    return {k: len(x) / sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}  # images/s, median


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["EVA02-B-16", "EVA02-L-14"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf

    import clipworks

    tokens = open_clip.tokenize(["a photo of a cat", "a diagram of a rocket", "&quot;ﬁne&quot; — 你好 😀"])
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        ref = open_clip.create_model(name).eval()
        with torch.no_grad():
            for p in ref.parameters():  # random init leaves biases at 0 and norms at 1: move them all
                p.add_(torch.randn_like(p) * 0.05)
        with tempfile.TemporaryDirectory() as tmp:
            hub = Path(tmp)
            save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(hub / "open_clip_model.safetensors"))
            save_config_for_hf(ref, hub / "open_clip_config.json", open_clip.get_model_config(name))
            ours = clipworks.load_checkpoint(hub)
        size = ours.image_size
        x = torch.randn(args.batch, 3, size, size)
        with torch.no_grad():
            di = (ref.encode_image(x) - ours.encode_image(x)).abs().max().item()
            dt = (ref.encode_text(tokens) - ours.encode_text(tokens)).abs().max().item()
        rates = time_image_towers(ref, ours, x, args.rounds)
        print(f"{name} image tower, fp32, batch {args.batch}, {args.threads} thread(s): open_clip {rates['open_clip']:.2f} "
              f"images/s, clipworks {rates['clipworks']:.2f} images/s, ratio (clipworks/open_clip) "
              f"{rates['clipworks'] / rates['open_clip']:.2f}x", flush=True)
        rows.append((name, di, dt))
        del ref, ours
    for name, di, dt in rows:
        print(f"open_clip {name:16s} max |diff| image {di:.2e}  text {dt:.2e}")
    print(f"worst max |diff|: image {max(r[1] for r in rows):.2e}  text {max(r[2] for r in rows):.2e}")


if __name__ == "__main__":
    main()
