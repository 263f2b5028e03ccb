"""PNG figures of a run: training curves, a confusion matrix, text→image retrieval examples.

matplotlib is imported only when a figure is drawn, and only through its object API on the Agg
canvas: no pyplot global state, no display needed, safe next to a user's own pyplot session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .fileio import atomic_file
from .train.metrics import METRICS_FILE, RESERVED, read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

# (metric key, panel title), in the order they are drawn; see clipworks.train.metrics for the keys.
CURVES: tuple[tuple[str, str], ...] = (
    ("loss", "loss"),
    ("lr", "learning rate"),
    ("logit_scale", "logit scale"),
    ("samples_per_s", "samples/s"),
    ("data_wait_pct", "waiting on data (%)"),
    ("zeroshot_top1", "zero-shot top-1"),
)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write the PNG atomically, so a reader never sees half an image."""
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _series(records: list[dict[str, Any]], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """split → (steps, values) for ``key``; a step logged again after a resume replaces the earlier value."""
    by_split: dict[str, dict[int, float]] = {}
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            by_split.setdefault(str(r.get("split", "train")), {})[int(r["step"])] = float(value)
    return {split: (sorted(points), [points[s] for s in sorted(points)]) for split, points in by_split.items()}


def plot_run(run_dir: str | Path) -> list[Path]:
    """``run_dir/curves.png``: one panel per known metric that has data, one line per split."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    panels = [(title, series) for key, title in CURVES if (series := _series(records, key))]
    if not panels:
        found = sorted({k for r in records for k in r} - set(RESERVED))
        raise ValueError(
            f"{run_dir / METRICS_FILE} has no plottable metrics (found: {', '.join(found) or 'none'}; "
            f"plotted: {', '.join(k for k, _ in CURVES)})"
        )
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = _figure(4.5 * cols, 3.2 * rows)
    for i, (title, series) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for split, (steps, values) in sorted(series.items()):
            ax.plot(steps, values, label=split, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize="small")
    return [_save(fig, run_dir / "curves.png")]


def plot_confusion(
    confusion: torch.Tensor | np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "confusion"
) -> Path:
    """Rows are true classes, columns predictions; colour is the row fraction, text the count."""
    counts = np.asarray(confusion.cpu() if isinstance(confusion, torch.Tensor) else confusion)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix is {counts.shape} but there are {n} class names")
    rows = counts.sum(axis=1, keepdims=True)
    fraction = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    side = max(4.0, 0.55 * n + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    im = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if fraction[i, j] > 0.5 else "black")
    return _save(fig, path)


def plot_retrieval(
    queries: Sequence[str],
    images: Sequence[Sequence[Image.Image | np.ndarray]],
    scores: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    path: str | Path,
) -> Path:
    """One row per text query: its retrieved images left to right, each titled with its score."""
    if not queries:
        raise ValueError("plot_retrieval needs at least one query")
    if len(images) != len(queries) or len(scores) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(images)} image rows and {len(scores)} score rows")
    for q, row, row_scores in zip(queries, images, scores):
        if len(row) != len(row_scores):
            raise ValueError(f"query {q!r}: {len(row)} images but {len(row_scores)} scores")
    cols = max(1, max(len(row) for row in images))
    fig = _figure(1.8 * cols + 2.5, 1.9 * len(queries))
    grid = fig.subplots(len(queries), cols, squeeze=False)
    for r, (query, row, row_scores) in enumerate(zip(queries, images, scores)):
        for c in range(cols):
            ax = grid[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            pixels = np.asarray(row[c])
            ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(f"{float(row_scores[c]):.3f}", fontsize=8)
        grid[r][0].set_ylabel(query, rotation=0, ha="right", va="center", fontsize=9)
    return _save(fig, path)
