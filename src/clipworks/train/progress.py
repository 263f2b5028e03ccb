"""The training progress bar: steps, samples/s, loss, lr, logit scale and the share of time spent waiting on data."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=Console(stderr=True), disable=not enabled, refresh_per_second=2,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, stats="")

    def update(self, step: int, values: dict[str, Any]) -> None:
        stats = (f"loss {values['loss']:.4f} · {values['samples_per_s']:.0f} samples/s · lr {values['lr']:.2e} · "
                 f"scale {values['logit_scale']:.1f} · data wait {values['data_wait_pct']:.0f}%")
        self._progress.update(self._task, completed=step, stats=stats)

    def __enter__(self) -> TrainProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()
