"""Tokenizer: clipworks' ``ClipTokenizer`` vs open_clip's ``SimpleTokenizer`` on 20,000 captions (10% tricky).

Cold is what a user's script pays: each cold run is a fresh Python process that imports the tokenizer module
(reported apart: both sides import torch), constructs the tokenizer and makes its first call on all the captions;
"cold" below is construct + first call (wall and CPU time: CPU time is what a busy machine cannot distort),
the two sides alternating over ``--cold-runs`` processes (median). The
children also hash their ids, so the cold ids are checked identical too. clipworks' compact vocabulary cache
(``text/bpe_cache.py``) is in whatever state the machine has; one extra run with an empty cache directory shows
the very first start ever. Warm is the best of the later calls in this process.
    python bench/tokenizer.py [--n 20000] [--tricky 0.1] [--cold-runs 5] [--repeats 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "tests"))
from caption_corpus import corpus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import row


def child(side: str, n: int, tricky: float) -> None:
    """One cold run: import, construct, first call; prints JSON timings and an ids hash."""
    captions = corpus(n, tricky, seed=0)
    c0, t0 = time.process_time(), time.perf_counter()
    if side == "open_clip":
        from open_clip.tokenizer import SimpleTokenizer as Tok
    else:
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        import torch  # noqa: F401 (both sides return a torch tensor; open_clip's import brings torch, so this does too)

        from clipworks.text.clip_bpe import ClipTokenizer as Tok
    c1, t1 = time.process_time(), time.perf_counter()
    tok = Tok()
    ids = tok(captions)
    c3, t3 = time.process_time(), time.perf_counter()
    digest = hashlib.sha256(ids.numpy().tobytes()).hexdigest()
    print(json.dumps({"import": t1 - t0, "cold": t3 - t1, "cold_cpu": c3 - c1, "import_cpu": c1 - c0, "sha": digest}))


def cold(side: str, args, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, str(HERE), "--child", side, "--n", str(args.n), "--tricky", str(args.tricky)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rate(fn, captions, repeats: int) -> float:
    """Best captions/s over ``repeats`` calls after the first."""
    fn(captions)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(captions)
        times.append(time.perf_counter() - t0)
    return len(captions) / min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--tricky", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--child", choices=["open_clip", "clipworks"])
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.n, args.tricky)

    runs: dict[str, list[dict]] = {"open_clip": [], "clipworks": []}
    with tempfile.TemporaryDirectory() as empty:  # the very first start: no compact vocabulary cached yet
        first_ever = cold("clipworks", args, env={**os.environ, "CLIPWORKS_CACHE": empty})
    for _ in range(args.cold_runs):
        for side, results in runs.items():
            results.append(cold(side, args))
    shas = {r["sha"] for rs in runs.values() for r in rs} | {first_ever["sha"]}

    from open_clip.tokenizer import SimpleTokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # open_clip's import turns the Rust thread pool off
    from clipworks.text.clip_bpe import ClipTokenizer

    captions = corpus(args.n, args.tricky, seed=0)
    ref, ours = SimpleTokenizer(), ClipTokenizer()
    same = (ref(captions) == ours(captions)).all(dim=1)
    ref_warm, our_warm = rate(ref, captions, args.repeats), rate(ours, captions, args.repeats)

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    print(f"captions: {len(captions)} ({args.tricky:.0%} tricky); identical ids: {int(same.sum())}/{len(captions)} "
          f"warm, cold runs {'identical' if len(shas) == 1 else 'DIFFER'} ({len(shas)} distinct id hashes)")
    for side in runs:
        print(f"{side:10s} cold (median of {args.cold_runs} fresh processes): import {med(side, 'import'):.2f} s; "
              f"construct + first call {med(side, 'cold') * 1e3:.0f} ms wall ({med(side, 'cold_cpu') * 1e3:.0f} ms CPU) "
              f"-> {args.n / med(side, 'cold'):,.0f} captions/s")
    print(f"clipworks  first start ever (empty cache): construct + first call {first_ever['cold'] * 1e3:.0f} ms wall "
          f"({first_ever['cold_cpu'] * 1e3:.0f} ms CPU)")
    print(f"open_clip SimpleTokenizer warm: {ref_warm:,.0f} captions/s; clipworks ClipTokenizer warm: {our_warm:,.0f}")
    print(f"ratio (warm, clipworks/open_clip): {our_warm / ref_warm:.2f}x")
    print(f"ratio (cold CPU time, clipworks/open_clip): {med('open_clip', 'cold_cpu') / med('clipworks', 'cold_cpu'):.2f}x")
    print(f"ratio (cold: construct + first call in a fresh process, wall, clipworks/open_clip): "
          f"{med('open_clip', 'cold') / med('clipworks', 'cold'):.2f}x")
    row(f"CLIP BPE tokenizer, {args.n // 1000}k captions, cold (fresh process: construct + first call)", "captions/s",
        args.n / med("clipworks", "cold"), args.n / med("open_clip", "cold"), peer_name="open_clip SimpleTokenizer",
        note="ids identical")
    row(f"CLIP BPE tokenizer, {args.n // 1000}k captions, warm", "captions/s", our_warm, ref_warm,
        peer_name="open_clip SimpleTokenizer")


if __name__ == "__main__":
    main()
