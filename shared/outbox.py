"""Transactional outbox: events are written with the state change and relayed to the broker.

`add(conn, event)` must run inside the caller's transaction, so an event exists exactly when its
state change was committed. The `Relay` takes unsent rows with `FOR UPDATE SKIP LOCKED` (safe in
every API replica at once), publishes each with a publisher confirm, then sets `sent_at` of the
confirmed ones in the same transaction. If the broker is down the transaction rolls back and the
rows wait; rows the broker did not confirm in time wait for a later round; if the process dies
after a confirm but before the commit, the rows are published again: delivery is at-least-once
and consumers dedupe by event id.

Waking the relay: an API request runs under a `Written` (see `watch`), which counts the events it
records; when the request has finished (its transactions committed), the API wakes its own relay.
Events recorded anywhere else (another service, a script) send `NOTIFY outbox` with them, which
wakes every replica's relay at commit. Relays also poll, as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from contextvars import ContextVar

import asyncpg
import structlog

from shared import metrics
from shared.batching import Batcher
from shared.broker import Publisher
from shared.db import Queries, Statement
from shared.events import Event

log = structlog.get_logger(__name__)

INSERT_SQL = "INSERT INTO outbox (id, type, body) VALUES ($1, $2, $3)"
INSERT_MANY_SQL = (
    "INSERT INTO outbox (id, type, body) SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[])"
)
# A batch is locked while it is published, and only the rows the broker confirmed are marked
# sent, in the same transaction: the others stay for the next round.
CLAIM_SQL = """
SELECT seq, id, type, body, created_at FROM outbox
WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED
"""
MARK_SENT_SQL = "UPDATE outbox SET sent_at = now() WHERE seq = ANY($1::bigint[])"
PURGE_SQL = "DELETE FROM outbox WHERE sent_at < now() - make_interval(secs => $1)"
# Delivered when the writer's transaction commits, to every relay listening.
NOTIFY_SQL = "SELECT pg_notify('outbox', '')"


class Written:
    """How many events the code running under it recorded (see `watch`)."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events = 0


_written: ContextVar[Written | None] = ContextVar("outbox_written", default=None)


def watch() -> Written:
    """Count the events recorded from here on in this task (and tasks it starts), instead of
    notifying for each: whoever calls this wakes a relay once those events are committed."""
    written = Written()
    _written.set(written)
    return written


async def _recorded(db: Queries, count: int) -> None:
    written = _written.get()
    if written is not None:
        written.events += count
    else:
        await db.execute(NOTIFY_SQL)


async def add(conn: Queries, event: Event) -> None:
    """Record an event in the caller's transaction."""
    await conn.execute(INSERT_SQL, event.id, event.type.value, event.to_bytes())
    await _recorded(conn, 1)


async def add_if(db: Queries, change: Statement, event: Event) -> bool:
    """Run `change` (a data-modifying statement that returns a row when it changed something)
    and record `event` only if it did, in one statement: atomic without a transaction, and one
    round trip instead of four (BEGIN, change, insert, COMMIT). True when it did."""
    sql = _add_if_sql(change.sql, len(change.args))
    done = await db.fetchval(sql, *change.args, event.id, event.type.value, event.to_bytes())
    if done is None:
        return False
    await _recorded(db, 1)
    return True


@functools.cache
def _add_if_sql(change_sql: str, n: int) -> str:
    return (
        f"WITH changed AS ({change_sql}) INSERT INTO outbox (id, type, body) "
        f"SELECT ${n + 1}::uuid, ${n + 2}::text, ${n + 3}::bytea FROM changed LIMIT 1 RETURNING 1"
    )


class Appender:
    """Records events that belong to no transaction of the caller's (a wrong code's
    `2fa.failed`): the events of all callers waiting meanwhile go into one statement, committed
    before any of them returns. Under load that is one commit for many requests instead of one
    each; alone, a caller waits no longer than for its own INSERT."""

    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 500, concurrency: int = 4) -> None:
        self._pool = pool
        self._batcher: Batcher[list[Event], None] = Batcher(
            self._flush, max_batch=max_batch, max_wait=0, name="outbox-appender", concurrency=concurrency
        )

    def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop(RuntimeError("the outbox appender has stopped"))

    async def add_many(self, events: list[Event]) -> None:
        if events:
            await self._batcher.submit(events)
            await _recorded(self._pool, len(events))

    async def _flush(self, batches: list[list[Event]]) -> list[None]:
        events = [event for batch in batches for event in batch]
        await self._pool.execute(
            INSERT_MANY_SQL,
            [e.id for e in events],
            [e.type.value for e in events],
            [e.to_bytes() for e in events],
        )
        return [None] * len(batches)


def _alive(conn: asyncpg.Connection) -> bool:
    """Whether a held connection still works. When the server closes one, asyncpg hands it back
    to its pool by itself, and every call on the proxy still held (`is_closed()` too) raises."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


class Relay:
    """Publishes committed outbox rows to the broker, in order of commit, at least once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        poll_seconds: float = 1.0,
        gather_seconds: float = 0.0,
        batch_size: int = 200,
        pipeline: int = 4,
        keep_sent_seconds: int = 24 * 3600,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._poll = poll_seconds
        self._gather = gather_seconds
        self._batch = batch_size
        self._pipeline = pipeline
        self._claiming = asyncio.Lock()
        self._keep_sent = keep_sent_seconds
        self._wake = asyncio.Event()
        self.published = 0

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def relay_once(self, claimed: asyncio.Future[int] | None = None) -> int:
        """Publish one batch; returns how many rows it took (0 when none were waiting). Rows
        whose publish failed (not confirmed in time, say, when the broker is slow) stay unsent
        and go in a later round. It raises (and the relay backs off) only when none was
        confirmed and not every failure was a timeout: a slow broker is paced by the timeout
        itself, and backing off from it would only let the backlog grow. `claimed` is given
        the number of rows taken as soon as they are, before they are published."""
        async with self._pool.acquire() as conn, conn.transaction():
            # Batches in flight at once claim and start publishing one after the other, so that
            # their messages go out in the order of the rows; only waiting for the confirms and
            # committing overlap.
            async with self._claiming:
                await self._publisher.ready()
                rows = await conn.fetch(CLAIM_SQL, self._batch)
                if claimed is not None:
                    claimed.set_result(len(rows))
                if not rows:
                    metrics.OUTBOX_LAG.set(0)
                    return 0
                sending = [
                    asyncio.ensure_future(self._publisher.publish(str(r["id"]), r["type"], r["body"]))
                    for r in rows
                ]
                await asyncio.sleep(0)  # each has taken its place on the channel
            try:
                outcomes = await asyncio.gather(*sending, return_exceptions=True)
            finally:
                for task in sending:
                    task.cancel()  # cancelled ourselves (shutdown): they need not wait on
            sent = [row for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
            failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            # None confirmed and the broker refused or failed (not merely slow): back off.
            if failures and not sent and not all(isinstance(f, TimeoutError) for f in failures):
                raise failures[0]
            if sent:
                await conn.execute(MARK_SENT_SQL, [row["seq"] for row in sent])
        if failures:
            log.warning(
                "outbox: some events were not confirmed; they go again in a later round",
                unconfirmed=len(failures),
                confirmed=len(sent),
                error=repr(failures[0]),
            )
        self.published += len(sent)
        metrics.OUTBOX_LAG.set(max((time.time() - rows[0]["created_at"].timestamp()), 0.0))
        for row in sent:
            metrics.EVENTS_PUBLISHED.labels(row["type"]).inc()
        return len(rows)

    async def relay_all(self) -> None:
        """Relay until a batch comes back short, with up to `pipeline` batches in flight: each
        waits about a broker round trip (more under load) for its confirms, and meanwhile the
        next is claimed and published (SKIP LOCKED keeps them apart; the channel keeps their
        order). One at a time, a busy API fell behind at ~700 events/s. The next batch is only
        started once the last one claimed a full batch, so a wake-up for a few rows costs one
        claim, not `pipeline`."""
        running: set[asyncio.Task[int]] = set()
        try:
            while True:
                while len(running) >= self._pipeline:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # raises what relay_once raised
                claimed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self.relay_once(claimed))
                running.add(task)
                await asyncio.wait({claimed, task}, return_when=asyncio.FIRST_COMPLETED)
                if not claimed.done():
                    task.result()  # it failed before claiming: raise that
                if claimed.result() < self._batch:
                    break
            for task in asyncio.as_completed(list(running)):
                await task
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def purge_sent(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(PURGE_SQL, float(self._keep_sent))

    async def run(self) -> None:
        """Relay until cancelled; broker or database failures back off and retry."""
        listener = await self._listen()
        backoff = self._poll
        cycles = 0
        try:
            while True:
                self._wake.clear()
                if listener is not None and not _alive(listener):
                    # The database restarted between two rounds: LISTEN again, or no NOTIFY
                    # would wake the relay and every event would wait for the next poll.
                    listener = await self._listen()
                try:
                    await self.relay_all()
                    backoff = self._poll
                    cycles += 1
                    if cycles % 3600 == 0:
                        await self.purge_sent()
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # broker or database down: keep the rows, retry later
                    log.warning("outbox relay failed; will retry", error=repr(exc))
                    backoff = min(backoff * 2, 10.0)
                    if listener is None or not _alive(listener):
                        if listener is not None:
                            await self._pool.release(listener)
                        listener = await self._listen()
                    await asyncio.sleep(backoff)
                    continue
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands
                # as the event is set, and shutdown would then wait for this loop forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()
                        # Woken by a commit: let the commits of the next moment join the batch.
                        if self._gather:
                            await asyncio.sleep(self._gather)
        finally:
            if listener is not None and _alive(listener):
                with contextlib.suppress(Exception):
                    await listener.remove_listener("outbox", self.wake)
                await self._pool.release(listener)

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn = await self._pool.acquire()
        except Exception as exc:
            log.warning("outbox LISTEN unavailable; polling only", error=repr(exc))
            return None
        try:
            await conn.add_listener("outbox", self.wake)
        except BaseException as exc:
            # Failed or cancelled (shutdown) mid-LISTEN: hand the connection back, or
            # pool.close() waits for it forever.
            await self._pool.release(conn)
            if not isinstance(exc, Exception):
                raise
            log.warning("outbox LISTEN unavailable; polling only", error=repr(exc))
            return None
        return conn
