"""Evaluation results on disk: JSON (written atomically) plus a markdown table, both recording the model
(``ModelRef.describe()``), the dataset, n, the templates and the command's settings, so a number can be traced
back to what produced it."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_file

TITLES = {"zeroshot": "Zero-shot classification", "retrieval": "Image–text retrieval",
          "linear-probe": "Linear probe", "compositional": "Compositional probes"}
METRIC_NAMES = {"acc1": "top-1", "acc5": "top-5", "mean_per_class_recall": "mean per-class recall"}


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays unwrapped, NaN and inf → null (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def slug(name: str) -> str:
    """A file-name-safe short form of a dataset name: ``fashion-mnist:test`` → ``fashion-mnist-test``."""
    base = Path(name).stem if ("/" in name or "\\" in name or Path(name).suffix) and ":" not in name else name
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip("-.") or "dataset"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f}%" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def to_markdown(result: dict[str, Any]) -> str:
    """A short markdown report: what was measured on what, then the metrics as a table."""
    task = result.get("task", "evaluation")
    dataset = result.get("dataset", {})
    lines = [f"## {TITLES.get(task, task)} — {dataset.get('name', '?')}", ""]
    if "model" in result:
        lines.append(f"- model: `{result['model'].get('describe', result['model'])}`")
    if dataset.get("description"):
        lines.append(f"- data: {dataset['description']}")
    if "n" in result:
        lines.append(f"- n: {result['n']}" + (f" ({len(result['skipped'])} unreadable images skipped)"
                                              if result.get("skipped") else ""))
    if "templates" in result:
        t = result["templates"]
        lines.append(f"- templates: {len(t)} ({'; '.join(t[:3])}{'; …' if len(t) > 3 else ''})")
    lines.append("")
    metrics = result.get("metrics", {})
    if task == "retrieval":
        ks = sorted({int(k.split("@")[1]) for k in metrics if "@" in k})
        lines += _table(["K", "text→image R@K", "image→text R@K"],
                        [[str(k), _pct(metrics.get(f"image_retrieval_recall@{k}")),
                          _pct(metrics.get(f"text_retrieval_recall@{k}"))] for k in ks])
    elif metrics and all(isinstance(v, dict) for v in metrics.values()):  # per category
        columns = sorted({c for v in metrics.values() for c in v})
        lines += _table(["", *columns], [[name, *(_pct(v.get(c)) for c in columns)] for name, v in metrics.items()])
    else:
        count = len(result.get("templates", []))
        header = ["metric", f"ensemble ({count} template{'s' if count != 1 else ''})" if count else "value"]
        single = result.get("single_template")
        if single:
            header.append(f"single: {single['template']!r}")
        rows = []
        for key, value in metrics.items():
            row = [METRIC_NAMES.get(key, key), _pct(value)]
            if single:
                row.append(_pct(single["metrics"].get(key)))
            rows.append(row)
        lines += _table(header, rows)
    if task == "linear-probe" and "C" in result:
        v = result["validation"]
        lines += ["", (f"C = {result['C']:.3g} chosen on a validation split ({v['n_val']} of {result['n_train']} training "
                      f"images; validation top-1 {_pct(v['val_acc1'])}, {len(v['search'])} values tried), "
                      "then refit on train + validation")]
    per_class = result.get("per_class_recall")
    if per_class:
        lines += ["", *_table(["class", "recall"], [[name, _pct(r)] for name, r in per_class.items()])]
    if result.get("settings"):
        lines += ["", "settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items())]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out_dir: str | Path, stem: str,
                 settings: dict[str, Any] | None = None, markdown: str | None = None) -> tuple[Path, Path]:
    """``out_dir/stem.json`` and ``out_dir/stem.md``, each written atomically; ``settings`` (the command's
    options) and the time are recorded in the JSON. ``markdown`` replaces ``to_markdown``'s table for a task
    with its own layout. Returns the two paths."""
    result = jsonable({**result, **({"settings": settings} if settings is not None else {}),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    with atomic_file(md_path) as tmp:
        tmp.write_text(markdown if markdown is not None else to_markdown(result), encoding="utf-8")
    return json_path, md_path
