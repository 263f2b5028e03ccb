"""Numerical parity of the Hugging Face families: random-init ``AlignModel`` (ALIGN-base size) and
``MetaClip2Model`` (MetaCLIP 2 worldwide ViT-H/14 size) made by transformers, saved with ``save_pretrained``, loaded
by clipworks; prints the max abs differences of image embeddings, text embeddings and logits (fp32), the worst
last.

    python bench/parity_hf_families.py            # MetaCLIP 2 text vocabulary cut to 49,408 rows (~1B params)
    python bench/parity_hf_families.py --full     # its real 901,629-row vocabulary (~1.9B params, ~16 GB RAM)

The vocabulary only sizes an embedding lookup, so the cut changes no arithmetic; it keeps the run within the
memory of a small machine. The reference is freed before clipworks loads, so one model is in memory at a time.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import clipworks


def _diffs(ref: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> tuple[float, float, float]:
    return tuple(float((ref[k] - ours[k]).abs().max()) for k in ("image", "text", "logits"))  # type: ignore[return-value]


def _ours(directory: Path, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    model = clipworks.load_checkpoint(directory)
    with torch.no_grad():
        image, text = model.encode_image(images), model.encode_text(tokens)
        logits = model.logits(F.normalize(image, dim=-1), F.normalize(text, dim=-1))
    del model
    gc.collect()
    return {"image": image, "text": text, "logits": logits}


def align(directory: Path) -> tuple[float, float, float]:
    import transformers

    torch.manual_seed(0)
    ref = transformers.AlignModel(transformers.AlignConfig(temperature_init_value=0.05)).eval()  # align-base
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # fresh BatchNorms are the identity in eval mode: give them statistics
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    images = torch.randn(2, 3, 289, 289, generator=g)
    tokens = torch.zeros(3, 64, dtype=torch.long)  # [CLS] words [SEP] [PAD]…, as AlignProcessor pads them
    for i, n in enumerate((5, 17, 62)):
        tokens[i, 0], tokens[i, 1:n + 1], tokens[i, n + 1] = 101, torch.randint(1000, 30000, (n,), generator=g), 102
    mask = (tokens != 0).long()
    with torch.no_grad():
        out = ref(input_ids=tokens, attention_mask=mask, pixel_values=images)
        expected = {"image": ref.get_image_features(pixel_values=images).pooler_output,
                    "text": ref.get_text_features(input_ids=tokens, attention_mask=mask).pooler_output,
                    "logits": out.logits_per_image}
    params = sum(p.numel() for p in ref.parameters())
    ref.save_pretrained(directory)
    del ref, out
    gc.collect()
    print(f"ALIGN-base: {params / 1e6:.0f}M parameters, 289 px, 64 tokens", flush=True)
    return _diffs(expected, _ours(directory, images, tokens))


def metaclip2(directory: Path, vocab: int) -> tuple[float, float, float]:
    import transformers

    text = dict(vocab_size=vocab, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_act="quick_gelu")
    vision = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                  image_size=224, patch_size=14, hidden_act="quick_gelu")
    torch.manual_seed(0)
    ref = transformers.MetaClip2Model(transformers.MetaClip2Config(text_config=text, vision_config=vision,
                                                                   projection_dim=1024)).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 224, 224, generator=g)
    tokens = torch.randint(3, vocab, (3, 77), generator=g)
    tokens[:, 0] = 0
    tokens[0, 9], tokens[0, 30] = 2, 2       # the first end token is pooled, not a later one
    tokens[1, 40], tokens[1, 41:] = 2, 1      # end token, then padding
    tokens[2, 76] = 2                        # a full-length caption
    with torch.no_grad():
        out = ref(input_ids=tokens, pixel_values=images)
        expected = {"image": ref.get_image_features(pixel_values=images).pooler_output,
                    "text": ref.get_text_features(input_ids=tokens).pooler_output, "logits": out.logits_per_image}
    params = sum(p.numel() for p in ref.parameters())
    ref.save_pretrained(directory)
    del ref, out
    gc.collect()
    print(f"MetaCLIP 2 ViT-H/14 worldwide: {params / 1e6:.0f}M parameters, vocabulary {vocab}", flush=True)
    return _diffs(expected, _ours(directory, images, tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="MetaCLIP 2 with its 901,629-token vocabulary")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, run in (("ALIGN (transformers AlignModel)", lambda d: align(d)),
                           ("MetaCLIP 2 (transformers MetaClip2Model)",
                            lambda d: metaclip2(d, 901629 if args.full else 49408))):
            start = time.perf_counter()
            rows.append((label, *run(Path(tmp) / label.split()[0])))
            print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    for label, di, dt, dl in rows:
        print(f"{label:42s} image {di:.2e}  text {dt:.2e}  logits {dl:.2e}")
    print(f"max abs diff over all: {max(max(r[1:]) for r in rows):.2e}")


if __name__ == "__main__":
    main()
