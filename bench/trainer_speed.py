"""Trainer throughput (and zero-shot accuracy) side by side: clipworks vs open_clip's own trainer.

Both train the same model — clipworks' ``fmnist-vit`` (28 px, patch 7, 4×96 ViT with MLP ratio 2, 2×128 text, embed 128),
handed to open_clip as a model-config JSON — on the same Fashion-MNIST CSV export (``clipworks data
fashion-mnist OUT --format csv``), with the same batch, lr, warmup, weight decay, grad clipping, fp32, seed
and loader workers. open_clip trains with a RandomResizedCrop(scale 0.9–1) it always applies; the clipworks
CSV run matches it with ``train_augment=True``. clipworks is also timed on its native ``fashion-mnist``
source (the demo's data path: an in-memory array, no PNG decoding), reported separately.

Speed: each trainer runs ``--steps`` steps in a fresh process (open_clip gets a CSV of exactly
steps × batch rows, so its single epoch is that many steps); the first ~10 steps (start-up, worker
spawn, allocator warm-up) are excluded from both, and samples/s comes from each trainer's own per-window
timing (open_clip's ``Batch (t)`` averages, clipworks' ``metrics.jsonl``). Runs alternate between
trainers for ``--rounds`` rounds so machine noise hits both; the median is reported. On a shared 2-core
machine another busy process wrecks a 2-thread run (OpenMP threads wait on each other at every op), so each
run waits for the machine to go quiet first, measures how much CPU *other* processes used meanwhile
(/proc/stat minus its own rusage), and runs above ``--max-contention`` are left out of the median.

Accuracy (``--acc-epochs N``, 0 to skip): both train N full epochs on the whole export, then both
checkpoints are scored by the same code — clipworks' zero-shot on all 10k Fashion-MNIST test images
with the 5 Fashion-MNIST templates.

    python bench/trainer_speed.py [--export /tmp/fmcsv] [--steps 40] [--rounds 3] [--workers 1] [--acc-epochs 1]
    python bench/trainer_speed.py --quick     # smoke run: 2 short rounds of tiny runs, no accuracy part

The last line is the samples/s ratio clipworks/open_clip on the same CSV data.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import row as table_row

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "fmnist-vit"
OPEN_CLIP_NAME = "bench-fmnist-vit"

# open_clip_train.main reads model configs from open_clip's registry only, so the wrapper registers the JSON first.
OPEN_CLIP_WRAPPER = """
import sys, open_clip, open_clip_train.main as m
open_clip.add_model_config(sys.argv[1])
sys.exit(m.main(sys.argv[2:]) or 0)
"""


def model_config() -> dict:
    src = ROOT / "src" / "clipworks" / "configs" / f"{MODEL_NAME}.json"
    return json.loads(src.read_text())


def ensure_export(export: Path) -> Path:
    table = export / "data.csv"
    if not table.is_file():
        print(f"exporting Fashion-MNIST train to {export} (clipworks data … --format csv)", flush=True)
        subprocess.run([sys.executable, "-m", "clipworks", "data", "fashion-mnist", str(export), "--format", "csv"],
                       check=True, stdout=subprocess.DEVNULL)
    return table


def subset_table(table: Path, rows: int | None, out: Path) -> Path:
    """The export's first ``rows`` rows (all when None) with absolute image paths: open_clip's CsvDataset
    opens paths relative to its working directory, clipworks relative to the table; absolute suits both."""
    with open(table, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        body = [row for _, row in zip(range(rows) if rows else iter(int, 1), reader)]
    col = header.index("filepath")
    for row in body:
        row[col] = str((table.parent / row[col]).resolve())
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(body)
    return out


def _busy_seconds() -> float:
    """CPU-seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (up to ``limit_s``) until other processes use under ``threshold`` of the machine over 3 s;
    returns the last measured share. A niced benchmark next to a busy process measures nothing useful."""
    start = time.monotonic()
    told = False
    while True:
        b0 = _busy_seconds()
        time.sleep(3.0)
        share = (_busy_seconds() - b0) / (3.0 * os.cpu_count())
        if share < threshold or time.monotonic() - start > limit_s:
            if told:
                print(f"  (waited {time.monotonic() - start:.0f} s; others now use {100 * share:.0f}%)", flush=True)
            return share
        if not told:
            print(f"  (machine busy: {100 * share:.0f}% used by other processes; waiting up to {limit_s:.0f} s)", flush=True)
            told = True


CONTENTION: dict[str, float] = {}
ARGS = argparse.Namespace(quiet_wait=0)  # main() replaces it with the parsed flags


def run(cmd: list[str], log: Path, env: dict | None = None) -> float:
    """Run ``cmd`` to completion; records in CONTENTION[log.stem] the share of the machine's CPU that
    *other* processes used meanwhile (whole-machine busy time minus this run's own CPU time)."""
    wait_quiet(ARGS.quiet_wait)
    b0, c0, t0 = _busy_seconds(), _children_seconds(), time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    others = (_busy_seconds() - b0) - (_children_seconds() - c0)
    CONTENTION[log.stem] = max(0.0, others / (wall * os.cpu_count()))
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n--- {log} ---\n{log.read_text()[-3000:]}")
    return wall


def open_clip_train(work: Path, name: str, table: Path, args: argparse.Namespace, epochs: int) -> Path:
    """Run open_clip_train.main; returns its log directory."""
    cfg_dir = work / "oc_configs"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / f"{OPEN_CLIP_NAME}.json").write_text(json.dumps(model_config()))
    cmd = [sys.executable, "-c", OPEN_CLIP_WRAPPER, str(cfg_dir),
           "--model", OPEN_CLIP_NAME, "--train-data", str(table), "--dataset-type", "csv", "--csv-separator", ",",
           "--csv-img-key", "filepath", "--csv-caption-key", "title",
           "--batch-size", str(args.batch), "--lr", str(args.lr), "--wd", str(args.wd), "--warmup", str(args.warmup),
           "--grad-clip-norm", "1.0", "--epochs", str(epochs), "--workers", str(args.workers), "--seed", str(args.seed),
           "--precision", "fp32", "--device", "cpu", "--log-every-n-steps", str(args.log_every),
           "--save-frequency", "1", "--report-to", "", "--logs", str(work / "oc_logs"), "--name", name]
    run(cmd, work / f"{name}.stdout")
    return work / "oc_logs" / name


def clipworks_train(work: Path, name: str, data: str, args: argparse.Namespace, *, steps: int | None = None,
                    epochs: float = 1.0, augment: bool, workers: int) -> Path:
    cfg = dict(model=MODEL_NAME, data=data, batch_size=args.batch, lr=args.lr, weight_decay=args.wd,
               warmup=args.warmup, grad_clip=1.0, precision="fp32", device="cpu", seed=args.seed, workers=workers,
               train_augment=augment, multi_positive="none", log_every=args.log_every, save_every=10**6,
               keep_last=1, progress=False, out=str(work / name), epochs=epochs, max_steps=steps)
    if data == "fashion-mnist":
        from clipworks.data import FASHION_MNIST_TEMPLATES
        cfg["templates"] = list(FASHION_MNIST_TEMPLATES)
    path = work / f"{name}.json"
    path.write_text(json.dumps(cfg))
    run([sys.executable, "-m", "clipworks", "train", str(path)], work / f"{name}.stdout")
    return work / name


_OC_LINE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\d+.*?Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+)")


def open_clip_rate(log_dir: Path, batch: int, skip_steps: int) -> tuple[float, float]:
    """(samples/s, data-wait %) over the log windows after the first ``skip_steps`` steps.

    Each log line carries the window's mean data and batch time and the samples done so far; a window's
    step count is the difference of those sample counts over the batch size."""
    prev, steps, t, d = 0, 0, 0.0, 0.0
    for line in (log_dir / "out.log").read_text().splitlines():
        m = _OC_LINE.search(line)
        if not m:
            continue
        done, data_t, batch_t = int(m[1]) // batch, float(m[2]), float(m[3])
        n = done - prev
        if prev >= skip_steps and n > 0:
            steps, t, d = steps + n, t + n * batch_t, d + n * data_t
        prev = done
    if not steps:
        raise RuntimeError(f"no timed open_clip log windows in {log_dir / 'out.log'}")
    return steps * batch / t, 100 * d / t


def clipworks_rate(run_dir: Path, skip_steps: int) -> tuple[float, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "samples_per_s" in r]
    prev, samples, t, wait = 0, 0.0, 0.0, 0.0
    for r in rows:
        step = r["step"]
        n = step - prev
        if prev >= skip_steps and n > 0:
            secs = n * _batch_of(run_dir) / r["samples_per_s"]
            samples, t, wait = samples + n * _batch_of(run_dir), t + secs, wait + secs * r["data_wait_pct"] / 100
        prev = step
    if not t:
        raise RuntimeError(f"no timed clipworks log windows in {run_dir / 'metrics.jsonl'}")
    return samples / t, 100 * wait / t


def _batch_of(run_dir: Path) -> int:
    return json.loads((run_dir / "train_config.json").read_text())["batch_size"]


def zeroshot_top1(model) -> float:
    import torch

    from clipworks.data import FASHION_MNIST_TEMPLATES, open_source
    from clipworks.train.loop import zeroshot_eval

    test = open_source("fashion-mnist", split="test")
    return zeroshot_eval(model, test, list(FASHION_MNIST_TEMPLATES), None, 0, torch.device("cpu")).top1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", type=Path, default=Path(tempfile.gettempdir()) / "fmcsv",
                    help="Fashion-MNIST CSV export (made when missing)")
    ap.add_argument("--steps", type=int, default=40, help="steps per speed run (first --skip excluded)")
    ap.add_argument("--skip", type=int, default=10, help="warm-up steps excluded from the timing")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-contention", type=float, default=0.10,
                    help="runs during which other processes used more of the machine than this are left out of "
                         "the median (when at least one run of that trainer is clean)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=70)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="loader worker processes, both trainers")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--acc-epochs", type=int, default=1, help="epochs for the accuracy comparison; 0 skips it")
    ap.add_argument("--no-native", action="store_true", help="skip clipworks' native fashion-mnist source")
    ap.add_argument("--keep", type=Path, default=None, help="keep run dirs and logs here (default: a temp dir)")
    ap.add_argument("--quiet-wait", type=float, default=300,
                    help="seconds to wait for other processes to go quiet before each run")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny speed runs, no accuracy part")
    args = ap.parse_args()
    global ARGS
    ARGS = args
    if args.quick:
        args.steps, args.skip, args.rounds, args.log_every, args.acc_epochs = 12, 4, 1, 4, 0
    table = ensure_export(args.export)
    work = args.keep or Path(tempfile.mkdtemp(prefix="trainer_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; torch threads default, {os.cpu_count()} CPUs; batch {args.batch}, {args.steps} steps "
          f"(first {args.skip} untimed), workers {args.workers}, {args.rounds} round(s)", flush=True)
    speed_table = subset_table(table, args.steps * args.batch, work / "speed.csv")

    # per trainer: (samples/s, data-wait %, share of the machine other processes used meanwhile)
    rates: dict[str, list[tuple[float, float, float]]] = {"open_clip csv": [], "clipworks csv": []}
    if not args.no_native:
        rates["clipworks fashion-mnist (native)"] = []
    for r in range(args.rounds):
        d = open_clip_train(work, f"oc_speed{r}", speed_table, args, epochs=1)
        rates["open_clip csv"].append((*open_clip_rate(d, args.batch, args.skip), CONTENTION[f"oc_speed{r}"]))
        d = clipworks_train(work, f"cw_speed{r}", str(speed_table), args, steps=args.steps, augment=True,
                            workers=args.workers)
        rates["clipworks csv"].append((*clipworks_rate(d, args.skip), CONTENTION[f"cw_speed{r}"]))
        if not args.no_native:
            d = clipworks_train(work, f"cwn_speed{r}", "fashion-mnist", args, steps=args.steps, augment=False, workers=0)
            rates["clipworks fashion-mnist (native)"].append((*clipworks_rate(d, args.skip), CONTENTION[f"cwn_speed{r}"]))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.0f}/s ({v[-1][1]:.0f}% data wait, others used "
                                             f"{100 * v[-1][2]:.0f}% of the CPU)" for k, v in rates.items()), flush=True)
    med: dict[str, float] = {}
    for k, v in rates.items():
        if not v:  # --rounds 0: no speed runs
            continue
        clean = [x for x, _, c in v if c <= args.max_contention]
        if not clean:
            print(f"WARNING: every {k} run shared the machine with other processes; its figure is unreliable")
        med[k] = statistics.median(clean or [x for x, _, _ in v])

    acc: dict[str, float] = {}
    if args.acc_epochs:
        import clipworks

        full = subset_table(table, None, work / "full.csv")
        cfg_path = work / "fmnist-vit.json"
        cfg_path.write_text(json.dumps(model_config()))
        t0 = time.perf_counter()
        d = open_clip_train(work, "oc_acc", full, args, epochs=args.acc_epochs)
        t_oc = time.perf_counter() - t0
        oc_model = clipworks.load_checkpoint(d / "checkpoints" / f"epoch_{args.acc_epochs}.pt", config=str(cfg_path))
        acc["open_clip csv"] = zeroshot_top1(oc_model)
        t0 = time.perf_counter()
        d = clipworks_train(work, "cw_acc", str(full), args, epochs=args.acc_epochs, augment=True, workers=args.workers)
        t_cw = time.perf_counter() - t0
        final = json.loads((d / "summary.json").read_text())["final_checkpoint"]
        acc["clipworks csv"] = zeroshot_top1(clipworks.load_checkpoint(Path(final) / "model"))
        print(f"accuracy runs: {args.acc_epochs} epoch(s) on {full}: open_clip {t_oc:.0f} s wall, clipworks "
              f"{t_cw:.0f} s wall (whole process, start-up and checkpointing included); CPU used by other "
              f"processes: {100 * CONTENTION['oc_acc']:.0f}% / {100 * CONTENTION['cw_acc']:.0f}%", flush=True)

    if med:
        print(f"\nfmnist-vit, batch {args.batch}, fp32, lr {args.lr}, workers {args.workers}; samples/s, median of "
              f"{args.rounds} round(s) of {args.steps - args.skip} timed steps, runs that shared the CPU left out:")
    for k, v in med.items():  # empty with --rounds 0
        runs = ", ".join(f"{x:.0f}{'' if c <= args.max_contention else f' [others {100 * c:.0f}%, left out]'}"
                         for x, _, c in rates[k])
        print(f"  {k:34s} {v:7.1f} samples/s  (runs: {runs})")
    if acc:
        print(f"zero-shot top-1 on 10k Fashion-MNIST test images after {args.acc_epochs} epoch(s), 5 templates:")
        for k, v in acc.items():
            print(f"  {k:34s} {100 * v:6.2f}%")
        print(f"  difference clipworks - open_clip: {100 * (acc['clipworks csv'] - acc['open_clip csv']):+.2f} points")
    if not args.rounds:  # accuracy only (--rounds 0): its difference is the key figure
        return
    if "clipworks fashion-mnist (native)" in med:
        print(f"ratio native-source clipworks / open_clip csv: {med['clipworks fashion-mnist (native)'] / med['open_clip csv']:.2f}x")
    table_row(f"Train samples/s, fmnist-vit (28 px ViT, batch {args.batch}, fp32, same CSV)", "samples/s",
        med["clipworks csv"], med["open_clip csv"])
    if "clipworks fashion-mnist (native)" in med:
        table_row(f"Train samples/s, fmnist-vit (28 px ViT, batch {args.batch}, fp32), clipworks' in-memory source",
            "samples/s", med["clipworks fashion-mnist (native)"], med["open_clip csv"], note="peer reads the CSV")
    print(f"ratio samples/s clipworks/open_clip (same CSV export): {med['clipworks csv'] / med['open_clip csv']:.2f}x")


if __name__ == "__main__":
    main()
