"""Numerical parity: random-init weights made by open_clip and by transformers, saved in their own
formats, loaded by clipworks; prints the max abs difference of image and text embeddings (fp32).
The last line is the worst case over all rows.
    python bench/parity.py          # CLIP (OpenAI/open_clip/transformers layouts), ViT-H-14, an XLM-R text tower
    python bench/parity.py --all    # … then every family's script, one process each, their last lines gathered:
                                    # SigLIP/SigLIP 2, EVA-02, MobileCLIP/ConvNeXt, ALIGN/MetaCLIP 2, tokenizers
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import clipworks
from clipworks.model.config import get_model_config


def feats_hf(m, x, t):
    i, s = m.get_image_features(pixel_values=x), m.get_text_features(input_ids=t)
    return getattr(i, "pooler_output", i), getattr(s, "pooler_output", s)


FAMILY_SCRIPTS = ["parity_siglip.py", "parity_eva.py", "parity_timm.py", "parity_hf_families.py", "tokenizers_parity.py"]


def xlm_roberta_rows(d: Path, tokens: torch.Tensor) -> list[tuple[str, float, float]]:
    """open_clip's xlm-roberta-base-ViT-B-32 (full size), its encoder built from the config.json our named config
    embeds (no network), against clipworks reading open_clip's state dict."""
    import open_clip

    cfg = get_model_config("xlm-roberta-base-ViT-B-32")
    enc = d / "xlm-roberta-base"
    enc.mkdir()
    (enc / "config.json").write_text(json.dumps(cfg.text_cfg.hf_config))
    oc_cfg = json.loads((Path(open_clip.__file__).parent / "model_configs" / "xlm-roberta-base-ViT-B-32.json").read_text())
    oc_cfg["text_cfg"].update(hf_model_name=str(enc), hf_model_pretrained=False)
    torch.manual_seed(0)
    ref = open_clip.CustomTextCLIP(**oc_cfg).eval()
    torch.save(ref.state_dict(), d / "xlmr.pt")
    ours = clipworks.load_checkpoint(d / "xlmr.pt", config=cfg)
    ids = torch.tensor([[0, 581, 35, 8, 2, 1, 1, 1], [0, 1000, 2000, 3000, 4000, 5000, 6, 2]])
    x = torch.randn(2, 3, 224, 224)
    return [("open_clip xlm-roberta-base-ViT-B-32", (ref.encode_image(x) - ours.encode_image(x)).abs().max().item(),
             (ref.encode_text(ids) - ours.encode_text(ids)).abs().max().item())]


def family_rows() -> list[str]:
    """Each family's parity script in its own process (they build full-size models); their last lines."""
    out = []
    for script in FAMILY_SCRIPTS:
        proc = subprocess.run([sys.executable, str(Path(__file__).parent / script)], capture_output=True, text=True)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-300:]
        out.append(f"{script:26s} {'' if proc.returncode == 0 else 'FAILED: '}{last}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--all", action="store_true", help="also run every family's parity script")
    args = ap.parse_args()
    import open_clip
    import transformers

    tokens = clipworks.tokenize(["a photo of a cat", "a diagram of a rocket", "&quot;ﬁne&quot; — 你好 😀"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        d = Path(tmp)
        for name in ["tiny-vit", "ViT-B-32", "RN50", "ViT-H-14"]:
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
        rows += xlm_roberta_rows(d, tokens)
    for label, di, dt in rows:
        print(f"{label:40s} image {di:.2e}  text {dt:.2e}")
    if args.all:
        for line in family_rows():
            print(line)
    print(f"worst max abs diff (CLIP rows): {max(max(r[1], r[2]) for r in rows):.2e} (target ≤ 1e-5)")


if __name__ == "__main__":
    main()
