"""Tokenizer: clipworks vs open_clip's SimpleTokenizer on 20,000 captions (10% tricky), same process.

Checks ids are identical, then prints captions/s for both; the last line is the ratio.
    python bench/tokenizer.py [--n 20000] [--tricky 0.1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from caption_corpus import corpus  # noqa: E402


def rate(fn, captions, repeats: int) -> tuple[float, float]:
    """(first-call captions/s with a cold cache, best of the following calls)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(captions)
        times.append(time.perf_counter() - t0)
    return len(captions) / times[0], len(captions) / min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--tricky", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    from open_clip.tokenizer import SimpleTokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # open_clip's import turns the Rust thread pool off
    from clipworks.text.clip_bpe import ClipTokenizer

    captions = corpus(args.n, args.tricky, seed=0)
    ref, ours = SimpleTokenizer(), ClipTokenizer()
    same = (ref(captions) == ClipTokenizer()(captions)).all(dim=1)
    print(f"captions: {len(captions)} ({args.tricky:.0%} tricky); identical ids: {int(same.sum())}/{len(captions)}")
    ref_cold, ref_warm = rate(ref, captions, args.repeats)
    our_cold, our_warm = rate(ours, captions, args.repeats)
    print(f"open_clip SimpleTokenizer: {ref_cold:,.0f} captions/s cold, {ref_warm:,.0f} warm")
    print(f"clipworks ClipTokenizer:   {our_cold:,.0f} captions/s cold, {our_warm:,.0f} warm")
    print(f"cold ratio: {our_cold / ref_cold:.2f}x")
    print(f"ratio (warm, clipworks/open_clip): {our_warm / ref_warm:.2f}x")


if __name__ == "__main__":
    main()
