"""Prometheus metrics in the text exposition format, kept per app (no process-global registry to collide in tests).

Written by hand rather than with ``prometheus_client``: four metric families need ~100 lines, no extra dependency,
and a registry that belongs to one app. ``/metrics`` exposes:

- ``clipworks_requests_total{route, method, status}`` — route is the matched template (``/items/{item_id}``), or
  ``unmatched`` for paths no route knows (so random paths cannot blow up the label set);
- ``clipworks_request_seconds`` — latency histogram by route;
- ``clipworks_batch_size{kind}`` — items per model call of the micro-batcher (text, image);
- ``clipworks_index_items`` — items in the served index.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative-bucket histogram per label tuple."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * (len(self.buckets) + 1))
        self.sums: dict[tuple[str, ...], float] = defaultdict(float)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self.counts[labels]
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.sums[labels] += value

    def lines(self, name: str, label_names: Sequence[str]) -> list[str]:
        out = []
        for labels in sorted(self.counts):
            base = _labels(label_names, labels)
            running = 0
            for bound, count in zip((*self.buckets, float("inf")), self.counts[labels]):
                running += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                out.append(f"{name}_bucket{{{base}{',' if base else ''}le=\"{le}\"}} {running}")
            braces = f"{{{base}}}" if base else ""
            out.append(f"{name}_sum{braces} {_number(self.sums[labels])}")
            out.append(f"{name}_count{braces} {running}")
        return out


class Metrics:
    """Thread-safe counters and histograms of one app; ``render()`` is the ``/metrics`` body."""

    def __init__(self, index_size: Callable[[], int] | None = None) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batches = Histogram(BATCH_BUCKETS)
        self.index_size = index_size

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, str(status))] += 1
            self.latency.observe((route,), seconds)

    def batch(self, kind: str, size: int) -> None:
        with self._lock:
            self.batches.observe((kind,), float(size))

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP clipworks_requests_total HTTP requests by route template, method and status.",
                     "# TYPE clipworks_requests_total counter"]
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(f"clipworks_requests_total{{{_labels(('route', 'method', 'status'), (route, method, status))}}} {n}")
            lines += ["# HELP clipworks_request_seconds Request latency in seconds by route template.",
                      "# TYPE clipworks_request_seconds histogram"]
            lines += self.latency.lines("clipworks_request_seconds", ("route",))
            lines += ["# HELP clipworks_batch_size Items per model call of the micro-batcher.",
                      "# TYPE clipworks_batch_size histogram"]
            lines += self.batches.lines("clipworks_batch_size", ("kind",))
        if self.index_size is not None:
            lines += ["# HELP clipworks_index_items Items in the served index.", "# TYPE clipworks_index_items gauge",
                      f"clipworks_index_items {self.index_size()}"]
        return "\n".join(lines) + "\n"


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: float) -> str:
    return repr(float(x)) if x != int(x) else f"{int(x)}.0" if abs(x) < 1e15 else repr(float(x))
