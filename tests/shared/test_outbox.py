"""The event backbone: state change + outbox row in one transaction, relayed with confirms,
nothing lost when the broker connection dies mid-run."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from shared import broker, db, outbox
from shared.events import Actor, Event, EventType, WebhookDeactivatedData
from shared.outbox import Appender, Relay

from tests.api_client import login, new_account, register
from tests.event_watch import watch_events
from tests.fakes.tcp_proxy import TcpProxy


async def test_login_and_logout_publish_typed_events(client, settings):
    async with watch_events(settings) as watcher:
        account = await new_account(client)
        r = await client.post("/api/auth/logout", headers=account.auth, json={})
        assert r.status == 200, await r.text()
        await watcher.wait_for(
            lambda evs: any(e.type == EventType.USER_LOGOUT and e.userId == account.id for e in evs)
        )
    login_event = next(e for e in watcher.of_type("user.login") if e.userId == account.id)
    assert str(login_event.ownerId) == account.id
    assert login_event.actor.kind == "user" and login_event.actor.id == account.id
    assert login_event.data == {"userId": account.id, "method": "password"}
    assert login_event.ip == "127.0.0.1"
    assert login_event.version == 1
    # The broker message id is the event id (consumers dedupe on it).
    assert str(login_event.id) in watcher.raw_ids


async def test_a_failed_state_change_writes_no_event(client, settings):
    """A duplicate registration rolls back: no user.registered row is left behind."""
    user = await register(client)
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        before = await conn.fetchval("SELECT count(*) FROM outbox WHERE type = 'user.registered'")
        r = await client.post(
            "/api/auth/register",
            json={"email": user["email"], "username": "someone_else_x", "password": "SecurePassword123!"},
        )
        assert r.status == 409
        after = await conn.fetchval("SELECT count(*) FROM outbox WHERE type = 'user.registered'")
    finally:
        await conn.close()
    assert after == before


async def test_no_event_is_lost_when_the_broker_connection_is_killed_mid_run(app_factory, settings):
    """Logins keep succeeding while the API's broker connection is cut repeatedly; afterwards
    every outbox row is marked sent and every event reached the exchange."""
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    try:
        client = await app_factory(RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        async with watch_events(settings, pattern="user.login") as watcher:
            account = await new_account(client)
            started = time.monotonic()
            for round_ in range(4):
                results = await asyncio.gather(*(login(client, account.username) for _ in range(10)))
                assert len(results) == 10
                await proxy.outage(0.5 if round_ % 2 else 0.0)
            conn = await asyncpg.connect(settings.DATABASE_URL)
            try:
                deadline = time.monotonic() + 30
                while await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"):
                    assert time.monotonic() < deadline, "outbox rows still unsent after 30 s"
                    await asyncio.sleep(0.1)
                rows = await conn.fetch("SELECT id, body FROM outbox WHERE type = 'user.login'")
            finally:
                await conn.close()
            expected = {
                str(r["id"]) for r in rows if Event.from_bytes(r["body"]).userId == account.id
            }
            assert len(expected) == 41  # new_account's login + 4 rounds of 10
            await watcher.wait_for(lambda evs: expected <= {str(e.id) for e in evs}, timeout=20)
            assert time.monotonic() - started < 60
    finally:
        await proxy.stop()


async def test_a_relay_that_crashes_is_started_again(app_factory, settings, monkeypatch):
    """A bug that escapes the relay's own error handling does not stop events for good: the
    API runs the relay again (here its first LISTEN raises something nobody expected)."""
    calls = 0
    listen = Relay._listen

    async def listen_failing_once(self):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug nobody expected")
        return await listen(self)

    monkeypatch.setattr(Relay, "_listen", listen_failing_once)
    client = await app_factory()
    async with watch_events(settings) as watcher:
        account = await new_account(client)
        await watcher.wait_for(
            lambda evs: any(e.type == EventType.USER_LOGIN and e.userId == account.id for e in evs)
        )
    assert calls >= 2


async def test_a_request_wakes_its_relay_at_once(app_factory, settings):
    """With the relay's poll a minute apart, an event a request writes is still published within
    moments: the finished request wakes its replica's relay (no NOTIFY from the database)."""
    client = await app_factory(OUTBOX_POLL_SECONDS=60)
    async with watch_events(settings, pattern="user.login") as watcher:
        started = time.monotonic()
        account = await new_account(client)
        await watcher.wait_for(lambda evs: any(e.userId == account.id for e in evs), timeout=5)
    assert time.monotonic() - started < 5


def _event(owner_id: uuid.UUID | None = None) -> Event:
    data = WebhookDeactivatedData(
        webhookId=str(uuid.uuid4()), url="https://example.com/hook", reason="test", consecutiveFailures=1
    )
    return Event.build(
        EventType.WEBHOOK_DEACTIVATED, data, ownerId=owner_id or uuid.uuid4(), actor=Actor(kind="system", id="test")
    )


async def test_an_event_written_outside_a_request_wakes_the_relays(app_factory, settings):
    """Another process (the webhook dispatcher, a script) records an event in its own
    transaction: the API's relay, polling only once a minute, publishes it as it commits."""
    await app_factory(OUTBOX_POLL_SECONDS=60)
    await asyncio.sleep(0.3)  # the relay has listened and gone back to waiting
    event = _event()
    async with watch_events(settings, pattern="webhook.deactivated") as watcher:
        conn = await asyncpg.connect(settings.DATABASE_URL)
        try:
            async with conn.transaction():
                await outbox.add(conn, event)
        finally:
            await conn.close()
        await watcher.wait_for(lambda evs: any(e.id == event.id for e in evs), timeout=5)


async def test_the_appender_commits_each_callers_events_before_it_returns_in_few_statements(settings):
    """Wrong codes' events: 60 concurrent callers, each finds its events committed (seen from
    another connection) when add_many returns; they shared far fewer transactions than 60."""
    async with db.create_pool(settings, size=4) as pool:
        appender = Appender(pool, concurrency=2)
        appender.start()
        check = await asyncpg.connect(settings.DATABASE_URL)
        try:
            async def one(i: int) -> uuid.UUID:
                events = [_event(), _event()] if i % 3 == 0 else [_event()]
                await appender.add_many(events)
                ids = [e.id for e in events]
                found = await pool.fetchval("SELECT count(*) FROM outbox WHERE id = ANY($1::uuid[])", ids)
                assert found == len(ids)
                return ids[0]

            firsts = await asyncio.gather(*(one(i) for i in range(60)))
            transactions = await check.fetchval(
                "SELECT count(DISTINCT xmin::text) FROM outbox WHERE id = ANY($1::uuid[])", firsts
            )
        finally:
            await check.close()
            await appender.stop()
    assert transactions < 20, transactions


async def test_batches_in_flight_at_once_still_publish_in_order(settings):
    """The relay keeps several batches in flight (each waits for its confirms meanwhile); the
    events still reach the exchange in the order they were written, each once."""
    owner = uuid.uuid4()
    events = [_event(owner) for _ in range(600)]
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        async with conn.transaction():
            for event in events:
                await outbox.add(conn, event)
    finally:
        await conn.close()
    async with (
        watch_events(settings, pattern="webhook.deactivated") as watcher,
        broker.connect(settings, "test") as connection,
        db.create_pool(settings, size=4) as pool,
    ):
        publisher = broker.Publisher(connection, broker.Topology(settings.BROKER_PREFIX))
        relay = Relay(pool, publisher, batch_size=50, pipeline=4)
        await relay.relay_all()
        assert relay.published >= 600
        await watcher.wait_for(lambda evs: sum(e.ownerId == owner for e in evs) >= 600, timeout=20)
    received = [e.id for e in watcher.events if e.ownerId == owner]
    assert received == [e.id for e in events]


class FlakyPublisher:
    """The real publisher, except that the events named in `refuse` time out once each."""

    def __init__(self, publisher: broker.Publisher, refuse: set[str]) -> None:
        self.publisher, self.refuse = publisher, refuse

    async def ready(self) -> object:
        return await self.publisher.ready()

    async def publish(self, event_id: str, routing_key: str, body: bytes) -> None:
        if event_id in self.refuse:
            self.refuse.discard(event_id)
            raise TimeoutError("no confirm in time")
        await self.publisher.publish(event_id, routing_key, body)


async def test_events_the_broker_did_not_confirm_go_again_and_only_they(settings):
    """A slow broker leaves a few publishes of a batch unconfirmed: the confirmed ones are marked
    sent (not published again with the rest), the others go in the next round."""
    owner = uuid.uuid4()
    events = [_event(owner) for _ in range(20)]
    refused = {str(events[i].id) for i in (3, 11)}
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        async with conn.transaction():
            for event in events:
                await outbox.add(conn, event)
        async with (
            watch_events(settings, pattern="webhook.deactivated") as watcher,
            broker.connect(settings, "test") as connection,
            db.create_pool(settings, size=2) as pool,
        ):
            real = broker.Publisher(connection, broker.Topology(settings.BROKER_PREFIX))
            relay = Relay(pool, FlakyPublisher(real, set(refused)), batch_size=500, pipeline=1)  # type: ignore[arg-type]
            await relay.relay_once()
            unsent = await conn.fetch(
                "SELECT id FROM outbox WHERE sent_at IS NULL AND id = ANY($1::uuid[])", [e.id for e in events]
            )
            assert {str(r["id"]) for r in unsent} == refused
            await relay.relay_all()
            await watcher.wait_for(lambda evs: sum(e.ownerId == owner for e in evs) >= 20, timeout=10)
            await asyncio.sleep(0.3)  # nothing more arrives
    finally:
        await conn.close()
    received = [str(e.id) for e in watcher.events if e.ownerId == owner]
    assert sorted(received) == sorted(str(e.id) for e in events)  # each exactly once
    assert set(received[-2:]) == refused
