"""Micro-batching: many concurrent callers, one round trip per batch.

`await batcher.submit(item)` returns that item's result once the batch holding it has been
handled by `flush(items) -> results` (same order). A batch closes when it holds `max_batch` items
or `max_wait` seconds after its first item arrived. If `flush` raises, every caller in the batch
gets the exception. Batches run one at a time, in arrival order, unless `concurrency` allows
more at once (then they start in arrival order; while all are busy, the next batch grows).
`add(item)` queues an item without waiting for its result, for a `flush` that settles each
item's outcome itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        max_wait: float,
        name: str = "batcher",
        concurrency: int = 1,
    ) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._name = name
        self._pending: list[tuple[T, asyncio.Future[R] | None]] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        if self._task is None:
            raise RuntimeError(f"{self._name} is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._enqueue(item, future)
        return await future

    def add(self, item: T) -> None:
        if self._task is None:
            raise RuntimeError(f"{self._name} is not running")
        self._enqueue(item, None)

    def _enqueue(self, item: T, future: asyncio.Future[R] | None) -> None:
        self._pending.append((item, future))
        self._arrived.set()
        if len(self._pending) >= self._max_batch:
            self._full.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def drain(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until every queued item has been flushed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._pending or self._running:
                    await asyncio.sleep(0.01)

    async def stop(self, reason: Exception) -> None:
        """Stop; callers still waiting get `reason`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for _, future in self._pending:
            if future is not None and not future.done():
                future.set_exception(reason)
        self._pending = []

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._max_wait):
                    await self._full.wait()
            await self._slots.acquire()  # meanwhile, arrivals join this batch
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            if len(self._pending) < self._max_batch:
                self._full.clear()
            if not self._pending:
                self._arrived.clear()
            task = asyncio.create_task(self._handle(batch), name=f"{self._name}-flush")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _handle(self, batch: list[tuple[T, asyncio.Future[R] | None]]) -> None:
        try:
            results = await self._flush([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(RuntimeError(f"{self._name} stopped"))
            raise
        except Exception as exc:
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future is not None and not future.done():
                future.set_result(result)
