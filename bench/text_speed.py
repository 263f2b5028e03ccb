"""ViT-B/32 text tower on short real captions, fp32 CPU: clipworks vs open_clip on the same weights.

``encode_text(tokenizer(captions))`` as a user writes it, on batches of 3–30-word captions from the bench corpus
(the 20k tokenizer-bench captions). clipworks runs the batch as groups of rows of similar length, each cut to its own
longest row (``TextTower.encode_grouped``): a causal tower pooled at the end token cannot see the padding after it,
so short captions do not pay for 77 positions, nor for the longest caption of the batch; open_clip runs all 77.
The embeddings (L2-normalised) must agree within 1e-5 (the script exits 1 otherwise). Runs alternate between the
two; the last line is the texts/s ratio.
    python bench/text_speed.py [--threads 2] [--batch 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--model", default="ViT-B-32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip
    from caption_corpus import corpus

    import clipworks

    captions = [c for c in corpus() if 3 <= len(c.split()) <= 30][: args.batch]
    torch.manual_seed(0)
    ref = open_clip.create_model(args.model).eval()
    ref_tok = open_clip.get_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as d:
        torch.save(ref.state_dict(), Path(d) / "w.pt")
        ours = clipworks.load_checkpoint(Path(d) / "w.pt", config=args.model)
    our_tok = clipworks.get_tokenizer(args.model)
    runs = {"open_clip": lambda: ref.encode_text(ref_tok(captions)),
            "clipworks": lambda: ours.encode_text(our_tok(captions))}
    with torch.inference_mode():
        a, b = runs["open_clip"](), runs["clipworks"]()
        diff = (a - b).abs().max().item()
        emb_diff = (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).abs().max().item()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.rounds + 1):  # first round is warm-up
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    rates = {k: len(captions) / sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}  # median
    mean_words = sum(len(c.split()) for c in captions) / len(captions)
    lengths = (our_tok(captions).argmax(-1) + 1).float()
    print(f"{args.model} text tower, fp32, {len(captions)} captions of {mean_words:.1f} words on average "
          f"({lengths.mean():.1f} tokens, longest {int(lengths.max())}), {args.threads} threads, tokenizer included; "
          f"max |diff| features {diff:.2e}, normalised embeddings {emb_diff:.2e} "
          f"({'within' if emb_diff <= 1e-5 else 'NOT within'} 1e-5)")
    for k, r in rates.items():
        print(f"{k}: {r:.0f} texts/s (median of {args.rounds})")
    print(f"ratio (clipworks/open_clip): {rates['clipworks'] / rates['open_clip']:.2f}x")
    row(f"{args.model.replace('ViT-B-32', 'ViT-B/32')} text tower, real captions ({lengths.mean():.0f} tokens on "
        f"average), batch {len(captions)}, PyTorch fp32, {args.threads} threads", "texts/s", rates["clipworks"],
        rates["open_clip"], note="tokenizer included")
    if emb_diff > 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
