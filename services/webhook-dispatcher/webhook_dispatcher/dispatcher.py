"""What the dispatcher does with an event, and with a delivery that is due again.

An event fans out to a delivery per target webhook (one row each, unique per webhook and event,
so a redelivered event finds the rows it already made). A new delivery is attempted at once;
an attempt is recorded before the message is acked. A failed attempt schedules the next one as
a job message on `<queue>.jobs` through a TTL delay queue (`WEBHOOK_RETRY_DELAYS`): nothing
sleeps. A delivery whose endpoint is saturated is put back the same way after
`WEBHOOK_DEFER_SECONDS`, without spending an attempt.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from shared import metrics, webhook_signing
from shared.batching import Batcher
from shared.config import Settings
from shared.crypto import SecretBox
from shared.errors import Transient
from shared.events import WEBHOOK_EVENT_TYPES, Event, EventType

from webhook_dispatcher import store
from webhook_dispatcher.sender import Outcome, Sender, endpoint_of

log = structlog.get_logger(__name__)

Publish = Callable[[bytes, int | None], Awaitable[None]]


class DeliveryJob(BaseModel):
    """A job message: make attempt number `attempt` of this delivery."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    deliveryId: uuid.UUID
    attempt: int = Field(ge=1)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, body: bytes) -> DeliveryJob:
        return cls.model_validate_json(body)


class SecretCache:
    """Decrypted signing secrets by ciphertext (a ciphertext never changes meaning)."""

    def __init__(self, box: SecretBox, size: int = 10_000) -> None:
        self._box = box
        self._size = size
        self._plain: dict[bytes, str] = {}

    def reveal(self, claimed: store.Claimed) -> list[str]:
        aad = webhook_signing.secret_aad(claimed.owner_id, claimed.webhook_id)
        secrets = []
        for blob in claimed.secrets:
            secret = self._plain.get(blob)
            if secret is None:
                if len(self._plain) >= self._size:
                    self._plain.clear()
                secret = self._plain[blob] = self._box.decrypt(blob, aad).decode()
            secrets.append(secret)
        return secrets


class Dispatcher:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, box: SecretBox, sender: Sender, publish: Publish
    ) -> None:
        self.settings = settings
        self._pool = pool
        self._secrets = SecretCache(box)
        self._sender = sender
        self._publish = publish
        # Long enough for a wait for an endpoint slot and the attempt itself.
        self._lease_seconds = 2 * settings.WEBHOOK_TIMEOUT_SECONDS + 5
        # Events fan out, and attempts are recorded, a batch per statement: under load one
        # round trip serves many deliveries; when idle a batch is one item, sent at once.
        wait = settings.WEBHOOK_BATCH_WAIT_SECONDS
        self._openings: Batcher[store.Opening, list[store.Target]] = Batcher(
            self._open_batch, max_batch=200, max_wait=wait, name="webhook-open"
        )
        self._records: Batcher[tuple[store.Claimed, store.Attempt], tuple[int, bool] | None] = Batcher(
            self._record_batch, max_batch=200, max_wait=wait, name="webhook-record"
        )

    def start(self) -> None:
        self._openings.start()
        self._records.start()

    async def stop(self) -> None:
        reason = Transient("the dispatcher stopped")
        await self._openings.stop(reason)
        await self._records.stop(reason)

    async def _open_batch(self, batch: list[store.Opening]) -> list[list[store.Target]]:
        async with self._pool.acquire() as conn:
            return await store.open_deliveries(conn, batch, self._lease_seconds)

    async def _record_batch(
        self, batch: list[tuple[store.Claimed, store.Attempt]]
    ) -> list[tuple[int, bool] | None]:
        async with self._pool.acquire() as conn:
            return await store.record(conn, batch)

    # --- entry points -------------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if event.type == EventType.WEBHOOK_REDELIVERY_REQUESTED:
            await self._redeliver(uuid.UUID(event.data["deliveryId"]))
            return
        if event.type not in WEBHOOK_EVENT_TYPES:
            return
        only = uuid.UUID(event.data["webhookId"]) if event.type == EventType.WEBHOOK_TEST else None
        body = webhook_signing.body(event.id, event.type.value, event.occurredAt, event.data)
        targets = await self._openings.submit(store.Opening(event, body, only))
        await asyncio.gather(*(self._resume(t, event, body) for t in targets))

    async def on_job(self, job: DeliveryJob) -> None:
        async with self._pool.acquire() as conn:
            claimed = await store.claim(conn, job.deliveryId, job.attempt, self._lease_seconds)
            if claimed is None:
                if await store.is_leased(conn, job.deliveryId, job.attempt):
                    await self._schedule(job, self.settings.WEBHOOK_DEFER_SECONDS)
                return  # done, deleted, or this attempt was made already: a stale job
        await self._attempt(claimed)

    # --- steps --------------------------------------------------------------------------------

    async def _resume(self, target: store.Target, event: Event, body: bytes) -> None:
        if target.created:
            await self._attempt(store.claimed_new(target, event, body))
        elif target.status == "pending":
            # The broker delivered this event again: the first attempt may never have been
            # made, or a retry may not have been scheduled. A duplicate job is harmless.
            job = DeliveryJob(deliveryId=target.delivery_id, attempt=target.attempts + 1)
            if target.attempts == target.run_base:
                await self.on_job(job)
            else:
                await self._schedule(job, self._retry_delay(target.attempts - target.run_base))

    async def _redeliver(self, delivery_id: uuid.UUID) -> None:
        async with self._pool.acquire() as conn:
            attempts = await store.pending_attempts(conn, delivery_id)
        if attempts is not None:
            await self.on_job(DeliveryJob(deliveryId=delivery_id, attempt=attempts + 1))

    async def _attempt(self, claimed: store.Claimed) -> None:
        """Make one attempt under the lease, record it, and schedule the next if it failed."""
        if not claimed.active and claimed.event_type != EventType.WEBHOOK_TEST:
            async with self._pool.acquire() as conn:
                await store.abandon(conn, claimed.delivery_id)
            return
        job = DeliveryJob(deliveryId=claimed.delivery_id, attempt=claimed.attempt)
        async with self._sender.limiter.slot(endpoint_of(URL(claimed.url))) as admitted:
            if admitted:
                outcome = await self._send(claimed)
        if not admitted:
            await self._schedule(job, self.settings.WEBHOOK_DEFER_SECONDS)
            async with self._pool.acquire() as conn:
                await store.release(conn, claimed.delivery_id)
            return
        await self._record(claimed, outcome)

    async def _send(self, claimed: store.Claimed) -> Outcome:
        headers = webhook_signing.headers(
            event_id=str(claimed.event_id),
            event_type=claimed.event_type,
            payload=claimed.body,
            secrets_newest_first=self._secrets.reveal(claimed),
            now=int(time.time()),
        )
        return await self._sender.post(claimed.url, claimed.body, headers)

    async def _record(self, claimed: store.Claimed, outcome: Outcome) -> None:
        in_run = claimed.attempt - claimed.run_base
        retry_in = None
        if outcome.ok:
            status = "succeeded"
        elif in_run < self.settings.WEBHOOK_MAX_ATTEMPTS:
            status, retry_in = "pending", self._retry_delay(in_run)
        else:
            status = "failed"
        next_retry_at = datetime.now(UTC) + timedelta(seconds=retry_in) if retry_in else None
        attempt = store.Attempt(
            status, outcome.status_code, outcome.latency_ms, outcome.error, next_retry_at
        )
        metrics.WEBHOOK_ATTEMPTS.labels(status).inc()
        metrics.WEBHOOK_LATENCY.observe(outcome.latency_ms / 1000)
        streak = await self._records.submit((claimed, attempt))
        if streak is not None and status == "failed":
            failures, active = streak
            if active and failures >= self.settings.WEBHOOK_DISABLE_AFTER:
                reason = f"{failures} events in a row could not be delivered"
                async with self._pool.acquire() as conn:
                    if await store.deactivate(conn, claimed.webhook_id, reason):
                        log.warning("webhook deactivated", webhook_id=str(claimed.webhook_id))
        if retry_in is not None:
            job = DeliveryJob(deliveryId=claimed.delivery_id, attempt=claimed.attempt + 1)
            await self._schedule(job, retry_in)
        log.info(
            "webhook attempt",
            delivery_id=str(claimed.delivery_id),
            attempt=claimed.attempt,
            status=status,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
        )

    def _retry_delay(self, attempts_in_run: int) -> int:
        delays = self.settings.WEBHOOK_RETRY_DELAYS
        return delays[min(attempts_in_run, len(delays)) - 1]

    async def _schedule(self, job: DeliveryJob, delay: int) -> None:
        await self._publish(job.to_bytes(), delay)
