"""ViT-B/32 on CPU: open_clip fp32 vs clipworks torch vs ONNX fp32 vs ONNX int8, same random weights, 2 threads.

Image tower images/s at batch 32 and batch-1 latency; text tower texts/s on real caption lengths (the bench corpus,
3-30 words, batch 256, tokenizer included: the ONNX rows drop the padding columns the manifest's ``text_trim``
allows, as the runtime does; open_clip runs all 77 positions). Each rate is also given as a share of its ceiling:
the images/s (texts/s) the tower would reach if every FLOP ran at the measured peak of a 2048² GEMM at that precision
— ``torch.mm`` fp32 for the fp32 rows, onnxruntime ``MatMulInteger`` (uint8 × int8 → int32) for int8. FLOPs are
counted from the config (2 per multiply-add: patch embedding, QKV, attention products, output projection, MLP and
head; ViT-B/32 at 224 px is 8.82 GFLOP per image; norms and softmax not counted). Runs alternate between the
engines so machine noise hits all; medians are reported. The last line is the ratios against the issue's targets
(int8 ≥ 1.8× open_clip fp32 images/s; batch-1 latency ≤ 0.8× open_clip's).

    python bench/onnx_speed.py [--threads 2] [--rounds 5] [--onnx-dir DIR]   # DIR: reuse an export between runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import row


def vit_flops(cfg, tokens: int | None = None, text: bool = False) -> float:
    """FLOPs of one forward of a ViT image tower (``tokens`` = patches + class token) or a text tower at ``tokens``
    positions: 2 per multiply-add in every matrix product."""
    if text:
        w, layers, mlp, t = cfg.text_cfg.width, cfg.text_cfg.layers, cfg.text_cfg.width * 4, tokens
        stem, head = 0.0, 2 * w * cfg.embed_dim
    else:
        v = cfg.vision_cfg
        grid = (v.image_size // v.patch_size) ** 2
        w, layers, mlp, t = v.width, v.layers, int(v.width * v.mlp_ratio), grid + 1
        stem, head = 2 * grid * 3 * v.patch_size**2 * w, 2 * w * cfg.embed_dim
    per_layer = 2 * t * (4 * w * w + 2 * w * mlp) + 2 * 2 * t * t * w
    return stem + layers * per_layer + head


def times_of(fn: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn: Callable[[], object], runs: int) -> float:
    return statistics.median(times_of(fn, runs))


def fp32_peak(threads: int, n: int = 2048, runs: int = 5) -> float:
    """GFLOP/s of a 2048² fp32 torch.mm: the best of ``runs`` (a peak; a shared machine only ever lowers it)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    return 2 * n**3 / min(times_of(lambda: torch.mm(a, b), runs)) / 1e9


def int8_peak(threads: int, n: int = 2048, runs: int = 5) -> float:
    """GOP/s of a 2048² onnxruntime MatMulInteger (uint8 activations × int8 constant weights → int32), best of
    ``runs``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "B")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "gemm",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    session.run(None, {"A": a})
    onnx.checker.check_model(model)
    return 2 * n**3 / min(times_of(lambda: session.run(None, {"A": a}), runs)) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--latency-runs", type=int, default=20)
    ap.add_argument("--texts", type=int, default=2048, help="captions for the text rows (batches of --text-batch)")
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--onnx-dir", type=Path, default=None, help="export here, or reuse the export already there")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import open_clip
    from caption_corpus import corpus

    import clipworks
    from clipworks.encoder import Encoder, ModelRef
    from clipworks.export import export_onnx_report
    from clipworks.export.onnx import session_for
    from clipworks.factory import tokenizer_for
    from clipworks.image.transforms import image_transform
    from clipworks.runtime import OnnxEncoder
    from clipworks.runtime.package import Package

    torch.manual_seed(0)
    ref = open_clip.create_model(args.model).eval()
    ref_tok = open_clip.get_tokenizer(args.model)
    with tempfile.TemporaryDirectory() as d:
        torch.save(ref.state_dict(), Path(d) / "w.pt")
        ours = clipworks.load_checkpoint(Path(d) / "w.pt", config=args.model).eval()
    encoder = Encoder(ours, image_transform(ours.config.preprocess()), tokenizer_for(ours.config),
                      ModelRef.of(args.model, None, ours))
    tmp = tempfile.TemporaryDirectory()
    out = args.onnx_dir or Path(tmp.name) / "onnx"
    if (out / "clipworks-onnx.json").is_file() and "image.int8" in Package.read(out, verify=False).graphs:
        package, note = Package.read(out, verify=False), f"reused {out}"
    else:
        t0 = time.perf_counter()
        result = export_onnx_report(encoder, out, int8=True, force=True)
        package = result.package
        note = (f"exported in {time.perf_counter() - t0:.0f} s; parity max |diff| image {result.max_diff['image']:.1e} "
                f"text {result.max_diff['text']:.1e}; int8 cosine image mean {result.int8.image_mean:.4f} "
                f"min {result.int8.image_min:.4f}")
    sessions = {p: {k: session_for(out / package.graph(k, p).file, args.threads) for k in ("image", "text")}
                for p in ("fp32", "int8")}

    # -- ceilings ------------------------------------------------------------------------------------------------
    peak32, peak8 = fp32_peak(args.threads), int8_peak(args.threads)  # measured again at the end; the best is kept

    # -- image tower ---------------------------------------------------------------------------------------------
    def image_runs(x: torch.Tensor) -> dict[str, Callable[[], object]]:
        xn = x.numpy()
        return {"open_clip fp32": lambda: ref.encode_image(x), "clipworks torch fp32": lambda: ours.encode_image(x),
                "onnx fp32": lambda: sessions["fp32"]["image"].run(None, {"pixels": xn}),
                "onnx int8": lambda: sessions["int8"]["image"].run(None, {"pixels": xn})}

    size = ours.image_size
    x = torch.randn(args.batch, 3, size, size)
    one = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        runs, single = image_runs(x), image_runs(one)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds + 1):  # round 0 is warm-up
            for name, run in runs.items():
                t = median_time(run, 1)
                if r:
                    times[name].append(t)
        rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
        lat: dict[str, list[float]] = {k: [] for k in single}
        for name, run in single.items():
            run()
        for _ in range(args.latency_runs):
            for name, run in single.items():
                lat[name].append(median_time(run, 1))
        latency = {k: 1000 * statistics.median(v) for k, v in lat.items()}

    # -- text tower ----------------------------------------------------------------------------------------------
    captions = [c for c in corpus() if 3 <= len(c.split()) <= 30][: args.texts]
    batches = [captions[i : i + args.text_batch] for i in range(0, len(captions), args.text_batch)]

    def onnx_text(precision: str) -> Callable[[], object]:
        """The user's path: one ``OnnxEncoder.encode_text`` call on all the captions, which tokenizes, sorts them
        into model calls of ``--text-batch`` similar lengths and trims each call's padding."""
        onnx_encoder = OnnxEncoder.load(out, precision=precision, threads=args.threads)
        onnx_encoder.text_batch_size = args.text_batch
        return lambda: onnx_encoder.encode_text(captions)

    text_runs = {"open_clip fp32": lambda: [ref.encode_text(ref_tok(b)) for b in batches],
                 "clipworks torch fp32": lambda: [ours.encode_text(encoder.tokenizer(b)) for b in batches],
                 "onnx fp32": onnx_text("fp32"), "onnx int8": onnx_text("int8")}
    with torch.inference_mode():
        ttimes: dict[str, list[float]] = {k: [] for k in text_runs}
        for r in range(max(2, args.rounds // 2) + 1):
            for name, run in text_runs.items():
                t = median_time(run, 1)
                if r:
                    ttimes[name].append(t)
    trate = {k: len(captions) / statistics.median(v) for k, v in ttimes.items()}
    lengths = [int(np.flatnonzero(row).max()) + 1 for row in encoder.tokenizer(captions).numpy()]
    text_flops = statistics.mean(vit_flops(ours.config, n, text=True) for n in lengths)  # at each caption's length
    peak32, peak8 = max(peak32, fp32_peak(args.threads)), max(peak8, int8_peak(args.threads))
    img_flops = vit_flops(ours.config)
    ceiling = {"fp32": peak32 * 1e9 / img_flops, "int8": peak8 * 1e9 / img_flops}
    tceiling = {"fp32": peak32 * 1e9 / text_flops, "int8": peak8 * 1e9 / text_flops}

    print(f"{args.model}, random weights, {args.threads} threads; {note}")
    print(f"ceilings: fp32 torch.mm 2048² {peak32:.0f} GFLOP/s, int8 MatMulInteger 2048² {peak8:.0f} GOP/s; "
          f"image {img_flops / 1e9:.2f} GFLOP -> {ceiling['fp32']:.1f} img/s fp32, {ceiling['int8']:.1f} img/s int8")
    print(f"image tower, batch {args.batch} (median of {args.rounds}) | batch-1 latency (median of {args.latency_runs})")
    for k in runs:
        c = ceiling["int8" if "int8" in k else "fp32"]
        print(f"  {k:22s} {rate[k]:7.1f} images/s ({100 * rate[k] / c:4.0f}% of its ceiling) | {latency[k]:7.1f} ms")
    print(f"text tower, {len(captions)} captions of {statistics.mean(len(c.split()) for c in captions):.1f} words "
          f"({statistics.mean(lengths):.1f} tokens) in batches of {args.text_batch}, tokenizer included; "
          f"ceiling at those lengths {tceiling['fp32']:.0f} texts/s fp32, {tceiling['int8']:.0f} int8")
    for k in text_runs:
        c = tceiling["int8" if "int8" in k else "fp32"]
        print(f"  {k:22s} {trate[k]:7.0f} texts/s ({100 * trate[k] / c:4.0f}% of its ceiling)")
    name = args.model.replace("ViT-B-32", "ViT-B/32")
    for k in ("onnx fp32", "onnx int8"):
        c = ceiling["int8" if "int8" in k else "fp32"]
        row(f"{name} image tower, batch {args.batch}, {k.replace('onnx', 'ONNX')}, {args.threads} threads", "images/s",
            rate[k], rate["open_clip fp32"], ceiling=rate[k] / c, note="peer: open_clip fp32")
    for k in ("onnx fp32", "onnx int8"):
        row(f"{name} image tower, batch-1 latency, {k.replace('onnx', 'ONNX')}, {args.threads} threads", "ms",
            latency[k], latency["open_clip fp32"], higher_is_better=False, note="peer: open_clip fp32")
    for k in ("onnx fp32", "onnx int8"):
        c = tceiling["int8" if "int8" in k else "fp32"]
        row(f"{name} text tower, real captions, batch {args.text_batch}, {k.replace('onnx', 'ONNX')}", "texts/s",
            trate[k], trate["open_clip fp32"], ceiling=trate[k] / c, note="tokenizer included; peer: open_clip fp32")
    best_latency = min(latency["onnx fp32"], latency["onnx int8"], latency["clipworks torch fp32"])
    print(f"ratios vs open_clip fp32: onnx int8 images/s {rate['onnx int8'] / rate['open_clip fp32']:.2f}x "
          f"(target >= 1.8x), onnx fp32 {rate['onnx fp32'] / rate['open_clip fp32']:.2f}x; batch-1 latency "
          f"onnx fp32 {latency['onnx fp32'] / latency['open_clip fp32']:.2f}x, onnx int8 "
          f"{latency['onnx int8'] / latency['open_clip fp32']:.2f}x, best {best_latency / latency['open_clip fp32']:.2f}x "
          f"(target <= 0.8x); texts/s onnx int8 {trate['onnx int8'] / trate['open_clip fp32']:.2f}x, onnx fp32 "
          f"{trate['onnx fp32'] / trate['open_clip fp32']:.2f}x")
    tmp.cleanup()


if __name__ == "__main__":
    main()
