"""The README's benchmark table, produced by running the bench scripts themselves (each runs clipworks and its
peer side by side in one process and prints ``ROW`` lines through ``bench/rows.py``).

    python bench/table.py                       # every script, full settings; prints the markdown table
    python bench/table.py --only vit,onnx       # scripts whose name contains one of these
    python bench/table.py --write README.md     # replace the table between the README's bench-table markers
    python bench/table.py --rows rows.jsonl     # also keep the raw rows
    python bench/table.py --checkpoint runs/demo   # with the demo model's int8 zero-shot rows
    python bench/table.py --from-rows rows.jsonl --write README.md   # the table from saved rows (runs nothing);
                                                # a figure measured more than once keeps its latest row

A script that fails is reported with its exit code and the table is still written from the others; the exit
code is then 1. Each row names the machine it was taken on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"

# (script, arguments): the table's rows, in order.
RUNS: list[tuple[str, list[str]]] = [
    ("vit_speed.py", ["--model", "ViT-B-32"]),
    ("vit_speed.py", ["--model", "ViT-B-16-SigLIP"]),
    ("text_speed.py", ["--model", "ViT-B-32"]),
    ("onnx_speed.py", []),
    ("onnx_parity.py", ["--configs", "ViT-B-32", "RN50"]),  # SigLIP: its tiny family (the real one needs the Hub)
    ("preprocess_speed.py", []),
    ("tokenizer.py", []),
    ("trainer_speed.py", []),
    ("loss_memory.py", []),
]


def run(script: str, args: list[str]) -> tuple[int, list[dict]]:
    """Run one script with its output shown as it comes; return its exit code and ROW lines."""
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    rows = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith("ROW "):
                rows.append({**json.loads(line[4:]), "command": f"python bench/{script} {' '.join(args)}".strip()})
            else:
                print("  " + line, end="", flush=True)
    return p.returncode, rows


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if unit == "cosine":
        return f"{x:.5f}"
    if unit == "%":
        return f"{x:.2f}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def markdown(rows: list[dict]) -> str:
    lines = ["| Figure | Unit | clipworks | Peer | Ratio | Machine | Command |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        peer = f"{fmt(r['peer'], r['unit'])} ({r['peer_name']})" if r.get("peer") else "—"
        ratio = f"**{r['ratio']:.2f}×**" if r.get("ratio") else "—"
        extra = [f"{r['ceiling']:.0%} of ceiling"] if r.get("ceiling") else []
        extra += [r["note"]] if r.get("note") else []
        what = (r["what"] + (f" ({'; '.join(extra)})" if extra else "")).replace("|", "\\|")  # a cell's own bars
        lines.append(f"| {what} | {r['unit']} | {fmt(r['ours'], r['unit'])} | {peer} | {ratio} | {r['machine']} | "
                     f"`{r['command']}` |")
    return "\n".join(lines)


def write_readme(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} … {END} markers to put the table between")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    stamp = time.strftime("%Y-%m-%d")
    new = f"{head}{START}\n_Taken {stamp} with `python bench/table.py`._\n\n{table}\n{END}{tail}"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as f:
        f.write(new)
    os.replace(f.name, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated parts of script names to run")
    ap.add_argument("--write", type=Path, help="a markdown file with bench-table markers to update")
    ap.add_argument("--rows", type=Path, help="append the raw rows (JSON lines) here")
    ap.add_argument("--checkpoint", type=Path, help="a `clipworks demo` output: adds the int8 zero-shot rows")
    ap.add_argument("--from-rows", type=Path, help="build the table from these saved rows instead of running")
    args = ap.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    rows, failed = [], []
    if args.from_rows:
        latest = {}
        for line in args.from_rows.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                latest[r["what"]] = r  # insertion order is kept; a later row of the same figure replaces it
        rows = list(latest.values())
    for script, extra in [] if args.from_rows else RUNS:
        if wanted and not any(w in script for w in wanted):
            continue
        if script == "onnx_parity.py" and args.checkpoint:
            extra = [*extra, "--checkpoint", str(args.checkpoint)]
        code, got = run(script, extra)
        rows += got
        if code != 0:
            failed.append(f"{script} {' '.join(extra)} (exit {code})")
    table = markdown(rows)
    print("\n" + table)
    if args.rows:
        with open(args.rows, "a", encoding="utf-8") as f:  # appended: a rerun's rows supersede with --from-rows
            f.writelines(json.dumps(r) + "\n" for r in rows)
    if args.write:
        write_readme(args.write, table)
        print(f"wrote the table into {args.write}")
    for f in failed:
        print(f"FAILED {f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
