"""Composition root of the audit consumer: `build(settings)` is used by `__main__` and tests.

Every event on its queue becomes one audit entry, written in batches (`BatchWriter`, handed
whole batches by the consumer runtime); a
maintenance task keeps daily partitions ahead of time and drops those past
`AUDIT_RETENTION_DAYS`.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import asyncpg
import structlog

from shared import broker, db
from shared.config import Settings
from shared.consumer import Batched, Consumer
from shared.health import Health

from audit import store
from audit.writer import BatchWriter

log = structlog.get_logger(__name__)


async def maintain(pool: asyncpg.Pool, settings: Settings) -> None:
    """Create the coming days' partitions and drop expired ones (safe in every replica)."""
    today = datetime.now(UTC).date()
    async with pool.acquire() as conn, conn.transaction():
        # One replica at a time: partition DDL from two at once would collide.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('audit-maintenance'))")
        await store.ensure_partitions(conn, today)
        if settings.AUDIT_RETENTION_DAYS:
            dropped = await store.drop_expired_partitions(conn, today, settings.AUDIT_RETENTION_DAYS)
            if dropped:
                log.info("audit partitions dropped", partitions=dropped)


async def _maintenance_loop(pool: asyncpg.Pool, settings: Settings) -> None:
    while True:
        try:
            await maintain(pool, settings)
        except Exception as exc:  # retried next round
            log.warning("audit maintenance failed", error=repr(exc))
        await asyncio.sleep(settings.AUDIT_MAINTENANCE_SECONDS)


def build(settings: Settings, *, health_port: int | None = None) -> Consumer:
    """The audit consumer with its queue, batch writer, maintenance task and health port."""

    async def setup(stack: AsyncExitStack, health: Health) -> Batched:
        pool = await stack.enter_async_context(db.create_pool(settings))
        health.register("database", lambda: db.ping(pool))
        writer = BatchWriter(pool)
        task = asyncio.create_task(_maintenance_loop(pool, settings), name="audit-maintenance")

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        stack.push_async_callback(cancel)
        return Batched(
            writer.write,
            max_batch=settings.AUDIT_BATCH_SIZE,
            max_wait=settings.AUDIT_BATCH_WAIT_SECONDS,
        )

    return Consumer(
        settings,
        broker.AUDIT,
        setup,
        health_port=settings.AUDIT_HEALTH_PORT if health_port is None else health_port,
        retry_delays=settings.CONSUMER_RETRY_DELAYS,
        prefetch=settings.AUDIT_PREFETCH,
    )
