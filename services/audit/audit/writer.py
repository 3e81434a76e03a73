"""Writes audit entries a batch at a time: one transaction (and one COPY) per batch.

The consumer runtime gathers the messages (`shared.consumer.Batched`: at most
`AUDIT_BATCH_SIZE`, or what arrived within `AUDIT_BATCH_WAIT_SECONDS`) and acks them only after
`write` has committed. A failed batch raises `Transient`, and each of its messages is retried
later.
"""

from __future__ import annotations

import asyncpg
import structlog

from shared import metrics
from shared.errors import Transient
from shared.events import Event

from audit import store

log = structlog.get_logger(__name__)


class BatchWriter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.written = 0

    async def write(self, events: list[Event]) -> None:
        try:
            async with self._pool.acquire() as conn:
                written = await store.write_batch(conn, events)
        except Exception as exc:
            log.warning("audit batch failed; its messages will be retried", error=repr(exc))
            raise Transient(f"audit batch failed: {exc!r}") from None
        self.written += written
        metrics.AUDIT_ENTRIES.inc(written)
