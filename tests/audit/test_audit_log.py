"""The audit log as a security team uses it: every event written once, within seconds, by the
audit service; read back per owner, newest first, filtered and paged; exported; append-only;
and a hash chain that names the first edited entry."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import pytest_asyncio

from shared import audit_chain
from shared.events import Actor, Event, EventType

from api.domain import audit as audit_read
import audit.main
from audit import store

from tests.api_client import create_key, error_code, new_account
from tests.totp_helpers import enable_totp
from tests.webhooks.helpers import eventually, settings_env
from tests.event_watch import publish_events


@pytest_asyncio.fixture
async def auditor(settings) -> AsyncIterator[None]:
    consumer = audit.main.build(settings, health_port=0)
    await consumer.start()
    yield
    await consumer.stop()




def event_for(owner_id: str, type_: EventType = EventType.USER_LOGIN, user_id: str | None = None,
              occurred_at: datetime | None = None) -> Event:
    owner = uuid.UUID(owner_id)
    user_id = user_id or owner_id
    extra = {"occurredAt": occurred_at} if occurred_at else {}
    return Event.build(type_, {"userId": user_id}, ownerId=owner, userId=user_id,
                       actor=Actor(kind="user", id=owner_id), **extra)


async def entries(client, headers, **query) -> list[dict]:
    r = await client.get("/api/audit-logs", params=query, headers=headers)
    assert r.status == 200, await r.text()
    return (await r.json())["data"]


async def entries_at_least(client, headers, n: int, **query) -> list[dict]:
    async def check():
        got = await entries(client, headers, **query)
        return got if len(got) >= n else None

    return await eventually(check, timeout=10)


async def test_what_the_api_does_is_audited_within_seconds_with_actor_ip_and_user_agent(client, auditor):
    account = await new_account(client)
    key = await create_key(client, account, scopes=["2fa:read", "2fa:write", "audit:read"])
    headers = {"X-API-Key": key["apiKey"], "User-Agent": "audit-test/1.0"}
    await enable_totp(client, headers, "user-audited")
    r = await client.post("/api/2fa/verify", json={"userId": "user-audited", "code": "000000"}, headers=headers)
    assert r.status == 401
    r = await client.post(f"/api/api-keys/{key['id']}/rotate", json={}, headers=account.auth)
    assert r.status == 200

    got = await entries_at_least(client, account.auth, 6)
    types = [e["type"] for e in got]
    for expected in ("user.registered", "user.login", "apikey.created", "2fa.enabled", "2fa.failed", "apikey.rotated"):
        assert expected in types, types
    failed = next(e for e in got if e["type"] == "2fa.failed")
    assert failed["userId"] == "user-audited"
    assert failed["actor"] == {"kind": "apiKey", "id": key["id"]}
    assert failed["ip"] == "127.0.0.1" and failed["userAgent"] == "audit-test/1.0"
    assert failed["data"]["reason"] == "invalid_code"
    rotated = next(e for e in got if e["type"] == "apikey.rotated")
    assert rotated["actor"] == {"kind": "user", "id": account.id}
    # newest first
    stamps = [e["recordedAt"] for e in got]
    assert stamps == sorted(stamps, reverse=True)
    # The key with audit:read sees the same log; a key without it does not.
    assert [e["id"] for e in await entries(client, headers)][: len(got)] == [e["id"] for e in got]
    plain = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    r = await client.get("/api/audit-logs", headers=plain)
    assert r.status == 403 and await error_code(r) == "INSUFFICIENT_SCOPE"


async def test_an_event_delivered_twice_is_written_once(client, auditor, settings):
    account = await new_account(client)
    event = Event.build(EventType.TWOFA_VERIFIED, {"userId": "u1", "method": "totp"},
                        ownerId=uuid.UUID(account.id), userId="u1", actor=Actor(kind="user", id=account.id))
    await publish_events(settings, [event, event])
    await entries_at_least(client, account.auth, 1, event="2fa.verified")
    await publish_events(settings, [event])
    await asyncio.sleep(1)
    got = await entries(client, account.auth, event="2fa.verified")
    assert [e["eventId"] for e in got] == [str(event.id)]


async def test_owners_see_only_their_own_entries(client, auditor):
    alice, bob = await new_account(client), await new_account(client)
    alice_key = {"X-API-Key": (await create_key(client, alice))["apiKey"]}
    await enable_totp(client, alice_key, "alice-user")
    await entries_at_least(client, alice.auth, 1, userId="alice-user")
    bob_sees = await entries_at_least(client, bob.auth, 2)
    assert {e["type"] for e in bob_sees} <= {"user.registered", "user.login"}
    assert all(e["userId"] in (bob.id, None) for e in bob_sees)
    r = await client.get("/api/audit-logs", params={"userId": "alice-user"}, headers=bob.auth)
    assert r.status == 404 and await error_code(r) == "USER_NOT_FOUND"


async def test_pages_have_no_gaps_or_repeats_while_entries_are_being_written(client, auditor, settings):
    account = await new_account(client)
    await publish_events(settings, [event_for(account.id) for _ in range(120)])
    before = await entries_at_least(client, account.auth, 122, limit=200)
    existing = {e["id"] for e in before}

    seen: list[str] = []
    cursor = None
    writer = asyncio.create_task(
        publish_events(settings, [event_for(account.id) for _ in range(200)])
    )
    while True:
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/audit-logs", params=params, headers=account.auth)
        body = await r.json()
        seen += [e["id"] for e in body["data"]]
        cursor = body["nextCursor"]
        await asyncio.sleep(0.02)
        if cursor is None:
            break
    await writer
    assert len(seen) == len(set(seen)), "an entry appeared on two pages"
    assert existing <= set(seen), "an entry that existed before paging began was skipped"


async def test_the_log_cannot_be_changed_through_the_database_role(client, auditor, db):
    account = await new_account(client)
    await entries_at_least(client, account.auth, 1)
    owner = uuid.UUID(account.id)
    for statement in (
        "UPDATE audit_log SET type = 'forged' WHERE owner_id = $1",
        "DELETE FROM audit_log WHERE owner_id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement, owner)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("TRUNCATE audit_log")
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE owner_id = $1", owner) >= 1


async def test_chain_verification_names_the_first_edited_entry(client, auditor, db, settings):
    account = await new_account(client)
    await publish_events(settings, [event_for(account.id) for _ in range(5)])
    await entries_at_least(client, account.auth, 7)
    r = await client.get("/api/audit-logs/verify", headers=account.auth)
    assert (await r.json())["data"] == {"valid": True, "checked": 7, "firstBadEntry": None}

    owner = uuid.UUID(account.id)
    target = await db.fetchrow(
        "SELECT id, chain_seq FROM audit_log WHERE owner_id = $1 AND chain_seq = 4", owner
    )
    # A superuser can switch the trigger off; the chain still tells.
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(
            "UPDATE audit_log SET data = '{\"userId\": \"someone-else\"}' WHERE owner_id = $1 AND chain_seq = 4",
            owner,
        )
    r = await client.get("/api/audit-logs/verify", headers=account.auth)
    verdict = (await r.json())["data"]
    assert verdict["valid"] is False and verdict["checked"] == 3
    assert verdict["firstBadEntry"]["chainSeq"] == 4
    assert verdict["firstBadEntry"]["id"] == str(target["id"])

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "audit.verify", "--owner", account.id,
        env=settings_env(), stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 1
    assert f"BROKEN at entry 4 (id {target['id']})" in out.decode()


async def test_retention_drops_whole_partitions_and_the_rest_still_verifies(db):
    """Entries recorded 400 days ago (as the service wrote them then) sit in their day's
    partition; retention drops it whole, and the rest of the owner's chain still verifies."""
    owner = str(uuid.uuid4())
    long_ago = datetime.now(UTC) - timedelta(days=400)
    async with db.transaction():  # what maintenance made that day
        await store.ensure_partitions(db, long_ago.date(), days_ahead=0)
    await store.write_batch(db, [event_for(owner) for _ in range(3)], now=long_ago)
    await store.write_batch(db, [event_for(owner) for _ in range(2)])
    old_partition = store.partition_name(long_ago.date())
    assert await db.fetchval(f"SELECT count(*) FROM {old_partition} WHERE owner_id = $1", uuid.UUID(owner)) == 3
    assert (await audit_chain.verify_owner(db, uuid.UUID(owner))).checked == 5

    dropped = await store.drop_expired_partitions(db, datetime.now(UTC).date(), 365)
    assert old_partition in dropped
    assert await db.fetchval("SELECT to_regclass($1)", old_partition) is None
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE owner_id = $1", uuid.UUID(owner)) == 2
    verdict = await audit_chain.verify_owner(db, uuid.UUID(owner))
    assert verdict.valid and verdict.checked == 2


async def test_export_streams_ndjson_and_csv_with_formulas_neutralised(client, auditor, settings):
    account = await new_account(client)
    await publish_events(settings, [event_for(account.id, user_id="=HYPERLINK(\"x\")")])
    await entries_at_least(client, account.auth, 3)
    r = await client.get("/api/audit-logs/export", params={"format": "ndjson"}, headers=account.auth)
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert len(lines) == 3
    assert lines == sorted(lines, key=lambda e: e["recordedAt"])  # oldest first
    assert {e["type"] for e in lines} == {"user.registered", "user.login"}

    r = await client.get("/api/audit-logs/export", params={"format": "csv"}, headers=account.auth)
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert sorted(row["type"] for row in rows) == ["user.login", "user.login", "user.registered"]
    [formula] = [row for row in rows if row["userId"] != account.id]
    assert formula["userId"] == "'=HYPERLINK(\"x\")"
    assert json.loads(formula["data"])["userId"] == "=HYPERLINK(\"x\")"


@pytest.mark.parametrize(
    ("query", "status", "code", "field"),
    [
        ({"from": "yesterday"}, 400, "VALIDATION_ERROR", "from"),
        ({"to": "2026-13-01T00:00:00Z"}, 400, "VALIDATION_ERROR", "to"),
        ({"from": "2026-01-01T00:00:00"}, 400, "VALIDATION_ERROR", "from"),  # no time zone
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 400, "INVALID_RANGE", "from"),
        ({"limit": "201"}, 400, "VALIDATION_ERROR", "limit"),
        ({"limit": "0"}, 400, "VALIDATION_ERROR", "limit"),
        ({"cursor": "not-a-cursor"}, 400, "INVALID_CURSOR", "cursor"),
        ({"cursor": "YXVkaXQ6LTE"}, 400, "INVALID_CURSOR", "cursor"),  # "audit:-1"
        ({"event": "made.up"}, 400, "VALIDATION_ERROR", "event"),
        ({"sort": "asc"}, 400, "VALIDATION_ERROR", "sort"),
    ],
)
async def test_bad_queries_are_400_naming_the_field(client, query, status, code, field):
    account = await new_account(client)
    r = await client.get("/api/audit-logs", params=query, headers=account.auth)
    assert r.status == status, await r.text()
    body = await r.json()
    assert body["error"]["code"] == code
    assert field in [f["field"] for f in body["error"]["details"]["fields"]]


async def test_export_refuses_a_bad_range_before_streaming(client):
    account = await new_account(client)
    r = await client.get("/api/audit-logs/export", params={"format": "xml"}, headers=account.auth)
    assert r.status == 400
    r = await client.get("/api/audit-logs/export",
                         params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
                         headers=account.auth)
    assert r.status == 400 and await error_code(r) == "INVALID_RANGE"


async def test_refused_cross_owner_attempts_and_lockouts_are_audited(client, auditor):
    alice, mallory = await new_account(client), await new_account(client)
    alice_key = await create_key(client, alice)
    hook = (await (await client.post("/api/webhooks", json={"url": "http://93.184.216.34/h", "events": ["2fa.failed"]},
                                     headers=alice.auth)).json())["data"]
    mallory_key = {"X-API-Key": (await create_key(client, mallory, scopes=["*"]))["apiKey"],
                   "User-Agent": "mallory/1"}
    for method, path in (("GET", f"/api/webhooks/{hook['id']}"),
                         ("DELETE", f"/api/webhooks/{hook['id']}"),
                         ("GET", f"/api/api-keys/{alice_key['id']}")):
        r = await client.request(method, path, headers=mallory_key if "webhooks" in path else mallory.auth)
        assert r.status == 404 and await error_code(r) == "NOT_FOUND"
    # A plain miss is not an attempt on anyone.
    r = await client.get(f"/api/webhooks/{uuid.uuid4()}", headers=mallory.auth)
    assert r.status == 404

    denied = await entries_at_least(client, alice.auth, 3, event="security.access_denied")
    assert len(denied) == 3
    assert {e["data"]["resource"] for e in denied} == {f"webhook:{hook['id']}", f"apiKey:{alice_key['id']}"}
    assert all(e["data"]["callerOwnerId"] == mallory.id for e in denied)
    by_key = [e for e in denied if e["actor"]["kind"] == "apiKey"]
    assert len(by_key) == 2 and by_key[0]["userAgent"] == "mallory/1" and by_key[0]["ip"] == "127.0.0.1"
    assert await entries(client, mallory.auth, event="security.access_denied") == []

    key = {"X-API-Key": alice_key["apiKey"]}
    await enable_totp(client, key, "locked-user")
    for _ in range(5):
        await client.post("/api/2fa/verify", json={"userId": "locked-user", "code": "000000"}, headers=key)
    [lockout] = await entries_at_least(client, alice.auth, 1, event="security.lockout")
    assert lockout["userId"] == "locked-user"
    assert lockout["data"] == {"userId": "locked-user", "scope": "2fa", "lockedSeconds": 900}


async def test_from_and_to_select_by_when_the_event_occurred(client, auditor, settings):
    account = await new_account(client)
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    old = Event.build(EventType.TWOFA_VERIFIED, {"userId": "u-old", "method": "totp"},
                      ownerId=uuid.UUID(account.id), userId="u-old",
                      actor=Actor(kind="user", id=account.id), occurredAt=two_days_ago)
    await publish_events(settings, [old])
    await entries_at_least(client, account.auth, 1, event="2fa.verified")
    day_ago = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    recent = await entries(client, account.auth, **{"from": day_ago})
    assert str(old.id) not in {e["eventId"] for e in recent} and len(recent) == 2  # registered, login
    window = await entries(client, account.auth, **{"from": three_days_ago, "to": day_ago})
    assert [e["eventId"] for e in window] == [str(old.id)]


async def test_a_window_in_the_past_pages_through_entries_recorded_on_time_and_late(
    client, auditor, settings, monkeypatch
):
    """With a `to`, entries recorded soon after it are read by seq and late ones through the
    occurred_at index; paging through such a window gives exactly what the same window without
    `to` lists, in the same order. The 'late' line is moved between two groups of entries so
    that both ways are taken."""
    account = await new_account(client)
    occurred = datetime.now(UTC) - timedelta(minutes=10)
    await publish_events(settings, [event_for(account.id, occurred_at=occurred) for _ in range(3)])
    await entries_at_least(client, account.auth, 5)
    line = datetime.now(UTC)
    await asyncio.sleep(0.2)
    await publish_events(settings, [event_for(account.id, occurred_at=occurred) for _ in range(4)])
    window = {"from": (occurred - timedelta(hours=1)).isoformat(), "to": datetime.now(UTC).isoformat()}
    expected = [e["id"] for e in await entries_at_least(client, account.auth, 9, limit=100, **{"from": window["from"]})]
    monkeypatch.setattr(audit_read, "LATE_AFTER", line - datetime.fromisoformat(window["to"]))

    paged: list[str] = []
    cursor = None
    while True:
        query = {**window, "limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/audit-logs", params=query, headers=account.auth)
        body = await r.json()
        assert r.status == 200, body
        paged += [e["id"] for e in body["data"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert paged == expected and len(expected) == 9
