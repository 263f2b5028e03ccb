"""Run metrics: one JSON object per line in ``metrics.jsonl`` (the record), the same scalars in TensorBoard.

Key names ``clipworks plot`` draws: ``loss``, ``lr``, ``logit_scale``, ``samples_per_s``,
``data_wait_pct`` (percent of step time spent waiting on data) and ``zeroshot_top1`` (fraction);
any other scalar is recorded too. Non-finite values are written as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import MissingFileError, UsageError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
RESERVED = ("step", "split", "time")

_warned_no_tensorboard = False


def _scalar(name: str, value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        x = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metric {name!r} must be a number, got {type(value).__name__}: {e}") from None
    return x if math.isfinite(x) else None


class MetricsLogger:
    """Appends to ``run_dir/metrics.jsonl`` (flushed per line, so a killed run keeps what it logged)
    and to TensorBoard event files in ``run_dir/tensorboard/``.

    On resume pass ``purge_step`` = the checkpoint's step: TensorBoard then hides events logged
    after it by the killed run; ``read_metrics`` users keep the last record per (split, step).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self._file = open(self.path, "a", encoding="utf-8")
        self._writer = _summary_writer(self.run_dir / TENSORBOARD_DIR, purge_step) if tensorboard else None

    def log(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        clash = sorted(set(values) & set(RESERVED))
        if clash:
            raise ValueError(f"metric name(s) {', '.join(map(repr, clash))} are reserved ({', '.join(RESERVED)})")
        if self._file.closed:
            raise ValueError(f"MetricsLogger for {self.path} is closed")
        scalars = {k: _scalar(k, v) for k, v in values.items()}
        record = {"step": int(step), "split": split, "time": time.time(), **scalars}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(f"{split}/{key}", math.nan if value is None else value, int(step))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._file.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _summary_writer(log_dir: Path, purge_step: int | None) -> Any:
    """A SummaryWriter, or None (warned once per process) where the tensorboard package is missing."""
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        if not _warned_no_tensorboard:
            warnings.warn(f"TensorBoard logging off ({e}); metrics go to {METRICS_FILE} only", stacklevel=3)
            _warned_no_tensorboard = True
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step, flush_secs=30)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of ``run_dir/metrics.jsonl`` in file order. A truncated last line (a run killed
    mid-write) is dropped; a broken line anywhere else is an error naming it."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise MissingFileError(f"{run_dir} has no {METRICS_FILE}: not a clipworks run directory, or nothing logged yet")
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # no newline after it: the writer was killed mid-line
                break
            raise UsageError(f"{path}:{number}: not a JSON object ({e})") from None
        if not isinstance(record, dict) or "step" not in record:
            raise UsageError(f"{path}:{number}: expected an object with a 'step' field, got {line[:80]!r}")
        records.append(record)
    return records
