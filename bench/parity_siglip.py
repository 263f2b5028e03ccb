"""SigLIP parity: random-init full-size weights made by open_clip (ViT-B-16-SigLIP: timm trunk + open_clip's text
tower, saved as a hub directory) and by transformers (a SiglipModel at B/16-224 size, saved with save_pretrained),
loaded by clipworks; prints the max abs difference of image and text embeddings and of sigmoid probabilities
(fp32). The last line is the worst case. Token ids are fixed (the SentencePiece vocabulary is not shipped offline).
    python bench/parity_siglip.py
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import clipworks

logging.getLogger().setLevel(logging.ERROR)


def main() -> None:
    import open_clip
    import transformers

    torch.manual_seed(0)
    images = torch.randn(4, 3, 224, 224)
    ids = torch.randint(1, 32000, (5, 64))
    ids[:, -1] = 1  # SigLIP pads to the context length and pools the last position
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        d = Path(tmp)

        ref = open_clip.create_model("ViT-B-16-SigLIP").eval()
        (d / "oc").mkdir()
        (d / "oc" / "open_clip_config.json").write_text(json.dumps({
            "model_cfg": open_clip.get_model_config("ViT-B-16-SigLIP"),
            "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"},
        }))
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(d / "oc" / "open_clip_model.safetensors"))
        ours = clipworks.create_model(str(d / "oc"))
        ri, rt = ref.encode_image(images), ref.encode_text(ids)
        oi, ot = ours.encode_image(images), ours.encode_text(ids)
        rp = torch.sigmoid(ref.logit_scale.exp() * F.normalize(ri, dim=-1) @ F.normalize(rt, dim=-1).T + ref.logit_bias)
        op = ours.probabilities(F.normalize(oi, dim=-1), F.normalize(ot, dim=-1))
        rows.append(("open_clip ViT-B-16-SigLIP (hub dir)", ri, oi, rt, ot, rp, op))
        del ref, ours

        cfg = transformers.SiglipConfig(text_config={}, vision_config={})  # defaults: B/16 at 224, 32k vocab, 64 tokens
        ref = transformers.SiglipModel(cfg).eval()
        ref.logit_scale.fill_(math.log(112.0))  # a released temperature (> CLIP's clamp at 100)
        ref.logit_bias.fill_(-12.5)
        ref.save_pretrained(d / "hf")
        ours = clipworks.create_model(str(d / "hf"))
        out = ref(input_ids=ids, pixel_values=images)
        oi, ot = ours.encode_image(images), ours.encode_text(ids)
        op = ours.probabilities(F.normalize(oi, dim=-1), F.normalize(ot, dim=-1))
        rows.append(("transformers SiglipModel B/16-224", out.vision_model_output.pooler_output, oi,
                     out.text_model_output.pooler_output, ot, out.logits_per_image.sigmoid(), op))

    worst = [0.0, 0.0, 0.0]
    for label, ri, oi, rt, ot, rp, op in rows:
        diffs = [(ri - oi).abs().max().item(), (rt - ot).abs().max().item(), (rp - op).abs().max().item()]
        worst = [max(w, x) for w, x in zip(worst, diffs)]
        print(f"{label:38s} image {diffs[0]:.2e}  text {diffs[1]:.2e}  sigmoid probs {diffs[2]:.2e}"
              f"  (|image| max {ri.abs().max().item():.2f}, |text| max {rt.abs().max().item():.2f})")
    print(f"{'worst':38s} image {worst[0]:.2e}  text {worst[1]:.2e}  sigmoid probs {worst[2]:.2e}")


if __name__ == "__main__":
    main()
