"""Tokenizers of every family: clipworks vs its references on the 20,000-caption bench corpus (10% tricky), same run.

For each family directory built by ``tests/tokenizer_refs.py`` (vocabularies trained here, saved by transformers'
own classes): ids identical to transformers called as the family's processor calls it (captions with lone
surrogates excluded: transformers raises on them, clipworks names them), and to open_clip's ``HFTokenizer`` with the
clean mode open_clip's configs use; then captions/s of each, calling with batches of ``--batch`` captions. The last
line is the slowest speed ratio (clipworks / reference) over all pairs.

    python bench/tokenizers_parity.py [--n 20000] [--tricky 0.1] [--batch 1024] [--dir /tmp/clipworks-tokenizers]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import tokenizer_refs as refs
from caption_corpus import corpus


def rates(fns: list, texts: list[str], batch: int, repeats: int = 3) -> list[float]:
    """Captions/s of each of ``fns``, best of ``repeats`` passes over ``texts`` in calls of ``batch`` captions; the
    passes alternate between the functions so that load from other processes hits both alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for i in range(0, len(texts), batch):
                fn(texts[i:i + batch])
            best[k] = min(best[k], time.perf_counter() - t0)
    return [len(texts) / b for b in best]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--tricky", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dir", default="/tmp/clipworks-tokenizers")
    ap.add_argument("--only", nargs="*", help="family names (default: all)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from clipworks.model.config import ClipConfig
    from clipworks.text import build_tokenizer, tokenizer_config_for_dir

    dirs = refs.build(Path(args.dir))
    texts = corpus(args.n, args.tricky, seed=0)
    utf8 = [t for t in texts if refs._utf8(t)]
    print(f"captions: {len(texts)} ({args.tricky:.0%} tricky; {len(texts) - len(utf8)} with lone surrogates, "
          f"which transformers rejects); calls of {args.batch}")
    ratios: list[tuple[float, str]] = []
    for name, family in refs.FAMILIES.items():
        if args.only and name not in args.only:
            continue
        length = family.context_length
        pairs = [("transformers", refs.transformers_reference(dirs[name], length),
                  build_tokenizer(tokenizer_config_for_dir(dirs[name]), length), utf8)]
        if family.clean:
            kwargs = {"clean": family.clean, **({"strip_sep_token": True} if family.strip_sep_token else {})}
            cfg = ClipConfig.from_dict({"embed_dim": 8, "text_cfg": {
                "hf_tokenizer_name": str(dirs[name]), "tokenizer_kwargs": kwargs, "context_length": length}})
            pairs.append(("open_clip", refs.open_clip_reference(dirs[name], family),
                          build_tokenizer(cfg.tokenizer_cfg, length), texts))
        for ref_name, ref, ours, sample in pairs:
            same = int((ref(sample) == ours(sample)).all(dim=1).sum())
            ref_rate, our_rate = rates([ref, ours], sample, args.batch)
            ratios.append((our_rate / ref_rate, f"{name}/{ref_name}"))
            print(f"{name:9s} vs {ref_name:12s} ({type(ours).__name__:22s}) identical ids {same}/{len(sample)}; "
                  f"{ref_rate:9,.0f} vs {our_rate:9,.0f} captions/s ({our_rate / ref_rate:.2f}x)")
    worst = min(ratios)
    print(f"ratio (slowest pair, clipworks/reference): {worst[0]:.2f}x ({worst[1]})")


if __name__ == "__main__":
    main()
