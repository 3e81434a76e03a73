"""Batches audit entries: many messages in flight, one transaction (and one COPY) per batch.

`write(event)` returns once the batch holding the event is committed, so the consumer acks each
message only after its entry is stored. A batch closes when it holds `max_batch` events or
`max_wait` seconds after its first event arrived, whichever comes first. A failed batch fails
every `write` in it (as `Transient`), and the consumer retries those messages later.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from shared import metrics
from shared.errors import Transient
from shared.events import Event

from audit import store

log = structlog.get_logger(__name__)


class BatchWriter:
    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 500, max_wait: float = 0.02) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._pending: list[tuple[Event, asyncio.Future[None]]] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    async def write(self, event: Event) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._arrived.set()
        if len(self._pending) >= self._max_batch:
            self._full.set()
        await future

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-batch-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._pending:
            if not future.done():
                future.set_exception(Transient("the audit writer stopped"))

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._max_wait):
                    await self._full.wait()
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            if len(self._pending) < self._max_batch:
                self._full.clear()
            if not self._pending:
                self._arrived.clear()
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[Event, asyncio.Future[None]]]) -> None:
        try:
            async with self._pool.acquire() as conn:
                written = await store.write_batch(conn, [event for event, _ in batch])
            self.written += written
            metrics.AUDIT_ENTRIES.inc(written)
        except (asyncio.CancelledError, KeyboardInterrupt):
            for _, future in batch:
                if not future.done():
                    future.set_exception(Transient("the audit writer stopped"))
            raise
        except Exception as exc:
            log.warning("audit batch failed; its messages will be retried", size=len(batch), error=repr(exc))
            for _, future in batch:
                if not future.done():
                    future.set_exception(Transient(f"audit batch failed: {exc!r}"))
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
