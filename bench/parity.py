"""Numerical parity: random-init weights made by open_clip and by transformers, saved in their own
formats, loaded by clipworks; prints the max abs difference of image and text embeddings (fp32).
The last line is the worst case over all rows.
    python bench/parity.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import clipworks
from clipworks.model.config import get_model_config


def feats_hf(m, x, t):
    i, s = m.get_image_features(pixel_values=x), m.get_text_features(input_ids=t)
    return getattr(i, "pooler_output", i), getattr(s, "pooler_output", s)


def main() -> None:
    import open_clip
    import transformers

    tokens = clipworks.tokenize(["a photo of a cat", "a diagram of a rocket", "&quot;ﬁne&quot; — 你好 😀"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        d = Path(tmp)
        for name in ["tiny-vit", "ViT-B-32", "RN50"]:
            cfg = get_model_config(name).to_dict()
            torch.manual_seed(0)
            ref = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"]).eval()
            torch.save({"name": name, "state_dict": ref.state_dict()}, d / f"{name}.pt")
            ours = clipworks.load_checkpoint(d / f"{name}.pt")
            s = ours.image_size
            x = torch.randn(4, 3, s, s)
            rows.append((f"open_clip {name}", (ref.encode_image(x) - ours.encode_image(x)).abs().max().item(),
                         (ref.encode_text(tokens) - ours.encode_text(tokens)).abs().max().item()))
        for label, hf_cfg in [("tiny-vit", transformers.CLIPConfig(
                text_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2),
                vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                                   image_size=32, patch_size=8), projection_dim=64)),
                              ("ViT-B-32", transformers.CLIPConfig())]:
            torch.manual_seed(0)
            ref = transformers.CLIPModel(hf_cfg).eval()
            ref.save_pretrained(d / f"hf-{label}")
            ours = clipworks.load_checkpoint(d / f"hf-{label}")
            s = ours.image_size
            x = torch.randn(4, 3, s, s)
            ri, rt = feats_hf(ref, x, tokens)
            rows.append((f"transformers {label}", (ri - ours.encode_image(x)).abs().max().item(),
                         (rt - ours.encode_text(tokens)).abs().max().item()))
            clipworks.save_pretrained(ours, d / f"rt-{label}", format="hf")
            back = transformers.CLIPModel.from_pretrained(d / f"rt-{label}").eval()
            bi, bt = feats_hf(back, x, tokens)
            rows.append((f"clipworks→HF→transformers {label}", (bi - ri).abs().max().item(), (bt - rt).abs().max().item()))
    for label, di, dt in rows:
        print(f"{label:40s} image {di:.2e}  text {dt:.2e}")
    print(f"worst max abs diff: {max(max(r[1], r[2]) for r in rows):.2e} (target ≤ 1e-5)")


if __name__ == "__main__":
    main()
