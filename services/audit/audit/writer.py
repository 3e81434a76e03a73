"""Batches audit entries: many messages in flight, one transaction (and one COPY) per batch.

`write(event)` returns once the batch holding the event is committed, so the consumer acks each
message only after its entry is stored. A batch closes at `max_batch` events or `max_wait`
seconds after its first (`shared.batching`). A failed batch fails every `write` in it as
`Transient`, and the consumer retries those messages later.
"""

from __future__ import annotations

import asyncpg
import structlog

from shared import metrics
from shared.batching import Batcher
from shared.errors import Transient
from shared.events import Event

from audit import store

log = structlog.get_logger(__name__)


class BatchWriter:
    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 500, max_wait: float = 0.02) -> None:
        self._pool = pool
        self._batcher: Batcher[Event, None] = Batcher(
            self._commit, max_batch=max_batch, max_wait=max_wait, name="audit-batch-writer"
        )
        self.written = 0

    async def write(self, event: Event) -> None:
        try:
            await self._batcher.submit(event)
        except Transient:
            raise
        except Exception as exc:
            log.warning("audit batch failed; its messages will be retried", error=repr(exc))
            raise Transient(f"audit batch failed: {exc!r}") from None

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop(Transient("the audit writer stopped"))

    async def _commit(self, events: list[Event]) -> list[None]:
        async with self._pool.acquire() as conn:
            written = await store.write_batch(conn, events)
        self.written += written
        metrics.AUDIT_ENTRIES.inc(written)
        return [None] * len(events)
