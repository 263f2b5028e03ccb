"""Dynamic micro-batching: concurrent requests for one kind of model call share one call.

Each request puts its items on an asyncio queue and awaits a future. One gathering task per batcher takes the first
waiting request, then keeps taking requests until ``max_batch`` items are gathered or ``max_wait_ms`` has passed
(requests already queued are taken at once), and runs the model on all of them in its own worker thread, so the
event loop keeps accepting requests meanwhile — and while the model runs, the next batch gathers. Each request gets
its own rows back. A model error fails only the requests of that batch. This is the shape of Triton's and
immich's dynamic batching: throughput grows with concurrency, and a lone request waits at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class _Request(Generic[T]):
    items: Sequence[T]
    future: asyncio.Future = field(repr=False)


class MicroBatcher(Generic[T]):
    """``await batcher.submit(items)`` → ``fn(items)``'s rows for these items, computed in a shared call.

    ``fn`` maps a list of items to an array with one row per item; it runs in one dedicated thread (model calls of
    one kind never overlap). ``on_batch(n_items)`` is told the size of every call (for metrics)."""

    def __init__(self, fn: Callable[[list[T]], np.ndarray], max_batch: int = 32, max_wait_ms: float = 5.0,
                 name: str = "batch", on_batch: Callable[[int], None] | None = None) -> None:
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.name = name
        self.on_batch = on_batch
        self.calls = 0  # model calls made (the tests compare it with the number of requests)
        self._queue: asyncio.Queue[_Request[T]] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"clipworks-{name}")

    async def submit(self, items: Sequence[T]) -> np.ndarray:
        if not items:
            raise ValueError("submit needs at least one item")
        self._ensure_started()
        assert self._queue is not None and self._loop is not None
        request: _Request[T] = _Request(list(items), self._loop.create_future())
        await self._queue.put(request)
        return await request.future

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name=f"clipworks-{self.name}-batcher")

    async def _gather(self) -> list[_Request[T]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        n = len(batch[0].items)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(request)
            n += len(request.items)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [r for r in batch if not r.future.done()]  # a client that went away cancelled its future
            if not live:
                continue
            items = [x for r in live for x in r.items]
            try:
                rows = await loop.run_in_executor(self._executor, self._call, items)
            except Exception as e:  # noqa: BLE001 (the error belongs to these requests, not to the batcher)
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(e)
                continue
            start = 0
            for r in live:
                if not r.future.done():
                    r.future.set_result(rows[start : start + len(r.items)])
                start += len(r.items)

    def _call(self, items: list[T]) -> np.ndarray:
        self.calls += 1
        if self.on_batch is not None:
            self.on_batch(len(items))
        rows = np.asarray(self.fn(items))
        if len(rows) != len(items):
            raise RuntimeError(f"{self.name} batch function returned {len(rows)} rows for {len(items)} items")
        return rows

    async def aclose(self) -> None:
        """Stop gathering (pending requests are cancelled) and release the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls, "max_batch": self.max_batch, "max_wait_ms": self.max_wait * 1000}
