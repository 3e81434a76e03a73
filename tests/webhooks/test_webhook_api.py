"""The webhook management API as an integrator sees it: create (secret shown once), list, get,
update, delete, test, rotate-secret, the delivery log and redeliver; scopes, tenancy, the SSRF
guard and bad input. Everything runs against the real PostgreSQL, Redis and RabbitMQ; delivery
rows are written with SQL because no dispatcher runs here."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.api_client import create_key, error_code, new_account
from tests.event_watch import watch_events
from tests.webhooks.helpers import create_webhook, delivery_log

# Tests that make the service queue an event for a webhook point it at a closed local port, so
# a dispatcher started later in the same run fails fast instead of calling out to the internet.
LOCAL_URL = "http://127.0.0.1:9/hook"
PUBLIC_URL = "http://93.184.216.34/hook"
PUBLIC_V6_URL = "https://[2606:4700:4700::1111]/x"
WEEK = 7 * 24 * 3600


# --- helpers -------------------------------------------------------------------------------------




def with_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def error_of(response: Any) -> dict[str, Any]:
    body = await response.json()
    assert body["success"] is False, body
    return body["error"]


async def field_names(response: Any) -> list[str]:
    error = await error_of(response)
    return [f["field"] for f in error.get("details", {}).get("fields", [])]


async def get_webhook(
    client: TestClient, headers: dict[str, str], webhook_id: str
) -> dict[str, Any]:
    r = await client.get(f"/api/webhooks/{webhook_id}", headers=headers)
    assert r.status == 200, await r.text()
    return (await r.json())["data"]


async def list_ids(client: TestClient, headers: dict[str, str], **query: Any) -> list[str]:
    r = await client.get("/api/webhooks", params=query, headers=headers)
    assert r.status == 200, await r.text()
    return [w["id"] for w in (await r.json())["data"]]


async def outcome(response: Any) -> tuple[int, str | None]:
    """The status and, for an error, its code: compared in bulk so one failure shows them all."""
    if response.status < 400:
        return response.status, None
    return response.status, await error_code(response)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def cursor_of(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def insert_delivery(
    db: asyncpg.Connection, owner_id: str, webhook_id: str, statuses: list[str]
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A delivery of a `2fa.enabled` event with one logged attempt per status, as the dispatcher
    would write them; returns the delivery id and the attempt ids."""
    delivery_id = uuid.uuid4()
    final = statuses[-1]
    await db.execute(
        """INSERT INTO webhook_deliveries
               (id, owner_id, webhook_id, event_id, event_type, body, status, attempts)
           VALUES ($1, $2, $3, $4, '2fa.enabled', '{}'::bytea, $5, $6)""",
        delivery_id, uuid.UUID(owner_id), uuid.UUID(webhook_id), uuid.uuid4(), final, len(statuses),
    )
    attempt_ids = []
    for n, status in enumerate(statuses, start=1):
        attempt_id = uuid.uuid4()
        await db.execute(
            """INSERT INTO webhook_attempts (id, owner_id, webhook_id, delivery_id, attempt, status,
                   status_code, latency_ms, error, next_retry_at, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, 12, $8, NULL,
                       now() + $5::int * interval '1 second')""",
            attempt_id, uuid.UUID(owner_id), uuid.UUID(webhook_id), delivery_id, n, status,
            200 if status == "succeeded" else 500, None if status == "succeeded" else "HTTP 500",
        )
        attempt_ids.append(attempt_id)
    return delivery_id, attempt_ids


async def outbox_types_mentioning(db: asyncpg.Connection, text: str) -> list[str]:
    """Types of the events written (in order) whose body mentions `text`."""
    rows = await db.fetch(
        "SELECT type FROM outbox WHERE position($1 in convert_from(body, 'UTF8')) > 0 ORDER BY seq",
        text,
    )
    return [r["type"] for r in rows]


# --- create, get, list ---------------------------------------------------------------------------


async def test_create_shows_the_secret_once_in_data_and_at_top_level(client):
    account = await new_account(client)
    r = await client.post(
        "/api/webhooks",
        json={
            "url": PUBLIC_URL,
            "events": ["2fa.enabled", "user.login", "2fa.enabled"],
            "description": "Production receiver",
        },
        headers=account.auth,
    )
    assert r.status == 201, await r.text()
    body = await r.json()
    data = body["data"]
    assert body["success"] is True
    uuid.UUID(data["id"])
    assert data["url"] == PUBLIC_URL
    assert data["events"] == ["2fa.enabled", "user.login"], "duplicates collapse, order kept"
    assert data["active"] is True
    assert data["description"] == "Production receiver"
    assert data["consecutiveFailures"] == 0
    assert data["disabledAt"] is None and data["disabledReason"] is None
    assert data["secret"].startswith("whsec_") and len(data["secret"]) > len("whsec_") + 16
    # The contract's envelope rule: an object payload's keys are also at the top level.
    for key in ("id", "url", "events", "active", "secret"):
        assert body[key] == data[key], key

    secret = data["secret"]
    r = await client.get(f"/api/webhooks/{data['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    text = await r.text()
    got = (await r.json())["data"]
    assert "secret" not in got and "secret" not in json.loads(text)
    assert secret not in text
    assert got["events"] == ["2fa.enabled", "user.login"]
    assert got["description"] == "Production receiver"

    r = await client.get("/api/webhooks", headers=account.auth)
    assert r.status == 200, await r.text()
    text = await r.text()
    assert secret not in text
    (listed,) = (await r.json())["data"]
    assert listed["id"] == data["id"] and "secret" not in listed


async def test_each_webhook_gets_its_own_secret(client):
    account = await new_account(client)
    first = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    second = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    assert first["id"] != second["id"]
    assert first["secret"] != second["secret"]


async def test_list_is_newest_first_paginated_and_only_the_callers(client):
    alice, bob = await new_account(client), await new_account(client)
    created = [
        (await create_webhook(client, alice.auth, f"{PUBLIC_URL}/{n}", ["user.login"]))["id"]
        for n in range(5)
    ]
    bobs = (await create_webhook(client, bob.auth, PUBLIC_URL, ["user.login"]))["id"]

    seen: list[str] = []
    page_sizes = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/webhooks", params=params, headers=alice.auth)
        assert r.status == 200, await r.text()
        body = await r.json()
        page_sizes.append(len(body["data"]))
        seen += [w["id"] for w in body["data"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert page_sizes == [2, 2, 1]
    assert seen == created[::-1], "newest first, no gaps, no repeats"

    r = await client.get("/api/webhooks", headers=alice.auth)
    body = await r.json()
    assert [w["id"] for w in body["data"]] == created[::-1]
    assert body["nextCursor"] is None
    assert bobs not in seen
    assert await list_ids(client, bob.auth) == [bobs]


# --- update --------------------------------------------------------------------------------------


async def test_patch_changes_url_events_description_and_active(client):
    account = await new_account(client)
    hook = await create_webhook(
        client, account.auth, PUBLIC_URL, ["2fa.enabled"], description="before"
    )
    changes = {
        "url": PUBLIC_V6_URL,
        "events": ["2fa.failed", "user.logout", "2fa.failed"],
        "description": "after",
        "active": False,
    }
    r = await client.patch(f"/api/webhooks/{hook['id']}", json=changes, headers=account.auth)
    assert r.status == 200, await r.text()
    patched = (await r.json())["data"]
    assert "secret" not in patched
    got = await get_webhook(client, account.auth, hook["id"])
    assert got == patched
    assert got["url"] == PUBLIC_V6_URL
    assert got["events"] == ["2fa.failed", "user.logout"]
    assert got["description"] == "after"
    assert got["active"] is False
    assert parse_time(got["updatedAt"]) >= parse_time(hook["updatedAt"])

    # A field left out keeps its value; a JSON null description clears it.
    r = await client.patch(
        f"/api/webhooks/{hook['id']}", json={"description": None}, headers=account.auth
    )
    assert r.status == 200, await r.text()
    got = await get_webhook(client, account.auth, hook["id"])
    assert got["description"] is None
    assert got["url"] == PUBLIC_V6_URL
    assert got["events"] == ["2fa.failed", "user.logout"]
    assert got["active"] is False

    r = await client.patch(
        f"/api/webhooks/{hook['id']}", json={"active": True}, headers=account.auth
    )
    assert r.status == 200, await r.text()
    assert (await get_webhook(client, account.auth, hook["id"]))["active"] is True


async def test_turning_a_deactivated_webhook_back_on_clears_its_failure_state(client, db):
    """What the dispatcher records when it gives up on a webhook is cleared by PATCH
    active: true."""
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    await db.execute(
        """UPDATE webhooks SET active = false, consecutive_failures = 7, disabled_at = now(),
               disabled_reason = '7 events failed in a row' WHERE id = $1""",
        uuid.UUID(hook["id"]),
    )
    before = await get_webhook(client, account.auth, hook["id"])
    assert before["active"] is False and before["consecutiveFailures"] == 7
    assert before["disabledAt"] is not None and before["disabledReason"]

    r = await client.patch(
        f"/api/webhooks/{hook['id']}", json={"active": True}, headers=account.auth
    )
    assert r.status == 200, await r.text()
    patched = (await r.json())["data"]
    after = await get_webhook(client, account.auth, hook["id"])
    for view in (patched, after):
        assert view["active"] is True
        assert view["consecutiveFailures"] == 0
        assert view["disabledAt"] is None
        assert view["disabledReason"] is None


# --- delete --------------------------------------------------------------------------------------


async def test_delete_removes_the_webhook_and_its_delivery_log(client, db):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    await insert_delivery(db, account.id, hook["id"], ["pending", "failed"])
    assert len(await delivery_log(client, account.auth, hook["id"])) == 2

    r = await client.delete(f"/api/webhooks/{hook['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["data"]["id"] == hook["id"]

    r = await client.get(f"/api/webhooks/{hook['id']}", headers=account.auth)
    assert r.status == 404, await r.text()
    assert await error_code(r) == "NOT_FOUND"
    r = await client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=account.auth)
    assert r.status == 404, await r.text()
    assert hook["id"] not in await list_ids(client, account.auth)
    webhook_id = uuid.UUID(hook["id"])
    for table in ("webhook_deliveries", "webhook_attempts", "webhook_secrets"):
        count = await db.fetchval(f"SELECT count(*) FROM {table} WHERE webhook_id = $1", webhook_id)
        assert count == 0, table

    r = await client.delete(f"/api/webhooks/{hook['id']}", headers=account.auth)
    assert r.status == 404, await r.text()


# --- rotate-secret -------------------------------------------------------------------------------


async def test_rotate_secret_gives_a_new_secret_and_a_day_of_grace_by_default(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    r = await client.post(f"/api/webhooks/{hook['id']}/rotate-secret", headers=account.auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    rotated = body["data"]
    assert rotated["id"] == hook["id"]
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != hook["secret"]
    assert body["secret"] == rotated["secret"]
    expected = datetime.now(UTC) + timedelta(hours=24)
    assert abs(parse_time(rotated["previousSecretExpiresAt"]) - expected) < timedelta(seconds=30)

    r = await client.post(
        f"/api/webhooks/{hook['id']}/rotate-secret", json={}, headers=account.auth
    )
    assert r.status == 200, await r.text()
    again = (await r.json())["data"]["secret"]
    assert again not in (hook["secret"], rotated["secret"])
    assert rotated["secret"] not in json.dumps(await get_webhook(client, account.auth, hook["id"]))


async def test_rotate_secret_grace_period_may_be_zero_up_to_seven_days(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    url = f"/api/webhooks/{hook['id']}/rotate-secret"

    r = await client.post(url, json={"gracePeriodSeconds": 0}, headers=account.auth)
    assert r.status == 200, await r.text()
    ends = parse_time((await r.json())["data"]["previousSecretExpiresAt"])
    assert abs(ends - datetime.now(UTC)) < timedelta(seconds=30)

    r = await client.post(url, json={"gracePeriodSeconds": WEEK}, headers=account.auth)
    assert r.status == 200, await r.text()
    ends = parse_time((await r.json())["data"]["previousSecretExpiresAt"])
    assert abs(ends - (datetime.now(UTC) + timedelta(seconds=WEEK))) < timedelta(seconds=30)

    for bad in (WEEK + 1, -1, "soon"):
        r = await client.post(url, json={"gracePeriodSeconds": bad}, headers=account.auth)
        assert r.status == 400, (bad, await r.text())
        assert await error_code(r) == "VALIDATION_ERROR"
        assert "gracePeriodSeconds" in await field_names(r)


# --- test endpoint and events --------------------------------------------------------------------


async def test_test_endpoint_queues_a_webhook_test_event(client, settings):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, LOCAL_URL, ["2fa.enabled"])
    async with watch_events(settings, pattern="webhook.test") as watcher:
        r = await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        assert r.status == 202, await r.text()
        queued = (await r.json())["data"]
        assert queued["queued"] is True
        event_id = queued["eventId"]
        uuid.UUID(event_id)
        await watcher.wait_for(lambda events: any(str(e.id) == event_id for e in events))
    (event,) = [e for e in watcher.of_type("webhook.test") if str(e.id) == event_id]
    data = event.data
    assert data["webhookId"] == hook["id"]
    assert data["userId"] == account.id
    assert str(event.ownerId) == account.id
    assert hook["secret"] not in event.model_dump_json()
    await client.delete(f"/api/webhooks/{hook['id']}", headers=account.auth)


async def test_management_events_are_published_without_the_secret(client, settings):
    account = await new_account(client)
    async with watch_events(settings, pattern="webhook.*") as watcher:
        hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
        r = await client.patch(
            f"/api/webhooks/{hook['id']}", json={"url": PUBLIC_V6_URL}, headers=account.auth
        )
        assert r.status == 200, await r.text()
        r = await client.post(f"/api/webhooks/{hook['id']}/rotate-secret", headers=account.auth)
        assert r.status == 200, await r.text()
        rotated_secret = (await r.json())["data"]["secret"]
        r = await client.delete(f"/api/webhooks/{hook['id']}", headers=account.auth)
        assert r.status == 200, await r.text()

        wanted = {"webhook.created", "webhook.updated", "webhook.secret_rotated", "webhook.deleted"}

        def mine(events: list[Any]) -> list[Any]:
            return [e for e in events if e.data.get("webhookId") == hook["id"]]

        await watcher.wait_for(lambda events: {e.type.value for e in mine(events)} >= wanted)

    events = mine(watcher.events)
    by_type = {e.type.value: e for e in events}
    assert by_type["webhook.created"].data["url"] == PUBLIC_URL
    assert by_type["webhook.created"].data["events"] == ["2fa.enabled"]
    assert by_type["webhook.updated"].data["url"] == PUBLIC_V6_URL
    for event in events:
        assert str(event.ownerId) == account.id
        body = event.model_dump_json()
        assert hook["secret"] not in body, event.type
        assert rotated_secret not in body, event.type
        assert "whsec_" not in body, event.type


# --- access --------------------------------------------------------------------------------------


async def test_read_only_key_can_read_but_not_change(client, db):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    _, (attempt_id,) = await insert_delivery(db, account.id, hook["id"], ["failed"])
    reader = with_key((await create_key(client, account, scopes=["webhooks:read"]))["apiKey"])

    assert await list_ids(client, reader) == [hook["id"]]
    assert (await get_webhook(client, reader, hook["id"]))["url"] == PUBLIC_URL
    assert len(await delivery_log(client, reader, hook["id"])) == 1

    base = f"/api/webhooks/{hook['id']}"
    refused = {
        "create": await client.post(
            "/api/webhooks", json={"url": PUBLIC_URL, "events": ["2fa.enabled"]}, headers=reader
        ),
        "patch": await client.patch(base, json={"active": False}, headers=reader),
        "delete": await client.delete(base, headers=reader),
        "test": await client.post(f"{base}/test", headers=reader),
        "rotate": await client.post(f"{base}/rotate-secret", headers=reader),
        "redeliver": await client.post(f"{base}/deliveries/{attempt_id}/redeliver", headers=reader),
    }
    outcomes = {name: await outcome(r) for name, r in refused.items()}
    assert outcomes == {name: (403, "INSUFFICIENT_SCOPE") for name in refused}

    after = await get_webhook(client, account.auth, hook["id"])
    assert after == {k: v for k, v in hook.items() if k != "secret"}
    assert await list_ids(client, account.auth) == [hook["id"]]


async def test_read_write_key_can_do_everything(client, db, settings):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["webhooks:read", "webhooks:write"]))["apiKey"]
    headers = with_key(key)

    hook = await create_webhook(client, headers, LOCAL_URL, ["2fa.enabled"])
    assert hook["secret"].startswith("whsec_")
    assert await list_ids(client, {"Authorization": f"Bearer {key}"}) == [hook["id"]]
    base = f"/api/webhooks/{hook['id']}"
    r = await client.patch(base, json={"description": "via key"}, headers=headers)
    assert r.status == 200, await r.text()
    assert (await get_webhook(client, headers, hook["id"]))["description"] == "via key"
    async with watch_events(settings, pattern="webhook.test") as watcher:
        r = await client.post(f"{base}/test", headers=headers)
        assert r.status == 202, await r.text()
        event_id = (await r.json())["data"]["eventId"]
        await watcher.wait_for(lambda events: any(str(e.id) == event_id for e in events))
    (event,) = [e for e in watcher.events if str(e.id) == event_id]
    assert event.data["userId"] == account.id
    r = await client.post(f"{base}/rotate-secret", headers=headers)
    assert r.status == 200, await r.text()
    assert (await r.json())["data"]["secret"] != hook["secret"]
    _, (attempt_id,) = await insert_delivery(db, account.id, hook["id"], ["failed"])
    assert len(await delivery_log(client, headers, hook["id"])) == 1
    r = await client.post(f"{base}/deliveries/{attempt_id}/redeliver", headers=headers)
    assert r.status == 202, await r.text()
    r = await client.delete(base, headers=headers)
    assert r.status == 200, await r.text()
    assert await list_ids(client, account.auth) == []


async def test_key_without_webhook_scopes_is_refused(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    key = await create_key(client, account, scopes=["2fa:read", "2fa:write"])
    headers = with_key(key["apiKey"])
    for r in (
        await client.get("/api/webhooks", headers=headers),
        await client.get(f"/api/webhooks/{hook['id']}", headers=headers),
        await client.post(
            "/api/webhooks", json={"url": PUBLIC_URL, "events": ["2fa.enabled"]}, headers=headers
        ),
    ):
        assert r.status == 403, await r.text()
        assert await error_code(r) == "INSUFFICIENT_SCOPE"


async def test_no_credentials_is_401(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    for r in (
        await client.get("/api/webhooks"),
        await client.get(f"/api/webhooks/{hook['id']}"),
        await client.post("/api/webhooks", json={"url": PUBLIC_URL, "events": ["2fa.enabled"]}),
        await client.delete(f"/api/webhooks/{hook['id']}"),
        await client.post(f"/api/webhooks/{hook['id']}/test"),
        await client.get("/api/webhooks", headers={"Authorization": "Bearer not-a-token"}),
    ):
        assert r.status == 401, await r.text()
        assert (await r.json())["success"] is False
    assert await list_ids(client, account.auth) == [hook["id"]]


# --- tenancy -------------------------------------------------------------------------------------


async def test_another_owner_gets_404_for_every_operation_and_changes_nothing(client, db):
    alice, bob = await new_account(client), await new_account(client)
    hook = await create_webhook(client, alice.auth, PUBLIC_URL, ["2fa.enabled"], description="mine")
    delivery_id, (attempt_id,) = await insert_delivery(db, alice.id, hook["id"], ["failed"])
    bob_key = (await create_key(client, bob, scopes=["webhooks:read", "webhooks:write"]))["apiKey"]
    before = await get_webhook(client, alice.auth, hook["id"])
    log_before = await delivery_log(client, alice.auth, hook["id"])

    base = f"/api/webhooks/{hook['id']}"
    outcomes = {}
    for who, headers in (("bob token", bob.auth), ("bob key", with_key(bob_key))):
        calls = {
            "get": client.get(base, headers=headers),
            "patch": client.patch(
                base, json={"url": PUBLIC_V6_URL, "active": False}, headers=headers
            ),
            "test": client.post(f"{base}/test", headers=headers),
            "rotate": client.post(f"{base}/rotate-secret", headers=headers),
            "deliveries": client.get(f"{base}/deliveries", headers=headers),
            "redeliver attempt": client.post(
                f"{base}/deliveries/{attempt_id}/redeliver", headers=headers
            ),
            "redeliver delivery": client.post(
                f"{base}/deliveries/{delivery_id}/redeliver", headers=headers
            ),
            "delete": client.delete(base, headers=headers),
        }
        for name, call in calls.items():
            r = await call
            outcomes[(who, name)] = await outcome(r)
        assert hook["id"] not in await list_ids(client, headers)
    assert outcomes == {key: (404, "NOT_FOUND") for key in outcomes}

    assert await get_webhook(client, alice.auth, hook["id"]) == before
    assert await delivery_log(client, alice.auth, hook["id"]) == log_before
    secrets = await db.fetch(
        "SELECT expires_at FROM webhook_secrets WHERE webhook_id = $1", uuid.UUID(hook["id"])
    )
    assert [s["expires_at"] for s in secrets] == [None], "the secret was not rotated"
    status = await db.fetchval("SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id)
    assert status == "failed", "the delivery was not queued again"
    changes = {"webhook.updated", "webhook.deleted", "webhook.secret_rotated", "webhook.test",
               "webhook.redelivery_requested"}
    written = await outbox_types_mentioning(db, hook["id"])
    assert "webhook.created" in written
    assert not changes & set(written), written


# --- bad input -----------------------------------------------------------------------------------


async def test_malformed_urls_are_refused_with_invalid_webhook_url(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    long_url = PUBLIC_URL + "/" + "a" * (10_000 - len(PUBLIC_URL) - 1)
    assert len(long_url) == 10_000
    bad_urls = [
        "ftp://93.184.216.34/x",
        "javascript:alert(1)",
        "http://",
        "http:///path",
        "http://user:pass@93.184.216.34/",
        "http://93.184.216.34:99999/",
        "not a url",
        long_url,
    ]
    outcomes = {}
    for url in bad_urls:
        r = await client.post(
            "/api/webhooks", json={"url": url, "events": ["2fa.enabled"]}, headers=account.auth
        )
        outcomes[("create", url[:40])] = await outcome(r)
        r = await client.patch(
            f"/api/webhooks/{hook['id']}", json={"url": url}, headers=account.auth
        )
        outcomes[("patch", url[:40])] = await outcome(r)
    assert outcomes == {key: (400, "INVALID_WEBHOOK_URL") for key in outcomes}

    r = await client.post(
        "/api/webhooks", json={"url": "ftp://x/", "events": ["2fa.enabled"]}, headers=account.auth
    )
    assert "url" in await field_names(r)
    assert await list_ids(client, account.auth) == [hook["id"]]
    assert (await get_webhook(client, account.auth, hook["id"]))["url"] == PUBLIC_URL


async def test_url_that_grows_past_the_limit_when_normalised_is_refused_not_a_500(client):
    """A URL within 2048 characters as sent, whose percent-encoded form (what would be stored and
    called) is longer, is refused like any over-long URL."""
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    url = PUBLIC_URL + "/" + "é" * 1000
    assert len(url) < 2048
    r = await client.patch(f"/api/webhooks/{hook['id']}", json={"url": url}, headers=account.auth)
    outcomes = {"patch": await outcome(r)}
    r = await client.post(
        "/api/webhooks", json={"url": url, "events": ["2fa.enabled"]}, headers=account.auth
    )
    outcomes["create"] = await outcome(r)
    assert outcomes == {
        "patch": (400, "INVALID_WEBHOOK_URL"),
        "create": (400, "INVALID_WEBHOOK_URL"),
    }
    assert (await get_webhook(client, account.auth, hook["id"]))["url"] == PUBLIC_URL


async def test_private_targets_are_forbidden_when_the_guard_is_on(app_factory):
    guarded = await app_factory(WEBHOOK_ALLOW_PRIVATE_URLS=False)
    account = await new_account(guarded)
    private_urls = [
        "http://localhost:8080/x",
        "http://127.0.0.1/",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
    ]
    outcomes = {}
    fields = set()
    for url in private_urls:
        r = await guarded.post(
            "/api/webhooks", json={"url": url, "events": ["2fa.enabled"]}, headers=account.auth
        )
        outcomes[url] = await outcome(r)
        fields.update(await field_names(r) if r.status >= 400 else [])
    assert outcomes == {url: (400, "WEBHOOK_URL_FORBIDDEN") for url in private_urls}
    assert fields == {"url"}
    assert await list_ids(guarded, account.auth) == []

    v4 = await create_webhook(guarded, account.auth, PUBLIC_URL, ["2fa.enabled"])
    v6 = await create_webhook(guarded, account.auth, PUBLIC_V6_URL, ["2fa.enabled"])
    assert (v4["url"], v6["url"]) == (PUBLIC_URL, PUBLIC_V6_URL)

    patched = {}
    for url in ("http://127.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/"):
        r = await guarded.patch(
            f"/api/webhooks/{v4['id']}", json={"url": url}, headers=account.auth
        )
        patched[url] = await outcome(r)
    assert patched == {url: (400, "WEBHOOK_URL_FORBIDDEN") for url in patched}
    assert (await get_webhook(guarded, account.auth, v4["id"]))["url"] == PUBLIC_URL

    r = await guarded.patch(
        f"/api/webhooks/{v4['id']}", json={"url": PUBLIC_V6_URL}, headers=account.auth
    )
    assert r.status == 200, await r.text()


async def test_private_targets_are_allowed_when_the_setting_says_so(client):
    """The test settings allow private URLs (development); the guard-on test above shows the
    difference is the setting."""
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, "http://localhost:8080/x", ["2fa.enabled"])
    assert hook["url"] == "http://localhost:8080/x"


async def test_invalid_bodies_are_400_naming_the_field(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    ok = {"url": PUBLIC_URL, "events": ["2fa.enabled"]}
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/api/webhooks", {**ok, "events": ["2fa.enabled", "no.such.event"]}, "events"),
        ("POST", "/api/webhooks", {**ok, "events": []}, "events"),
        ("POST", "/api/webhooks", {**ok, "events": "2fa.enabled"}, "events"),
        ("POST", "/api/webhooks", {**ok, "events": {"2fa.enabled": True}}, "events"),
        ("POST", "/api/webhooks", {**ok, "events": [7]}, "events.0"),
        ("POST", "/api/webhooks", {"events": ["2fa.enabled"]}, "url"),
        ("POST", "/api/webhooks", {"url": PUBLIC_URL}, "events"),
        ("POST", "/api/webhooks", {**ok, "url": 42}, "url"),
        ("POST", "/api/webhooks", {**ok, "secret": "whsec_mine"}, "secret"),
        ("POST", "/api/webhooks", {**ok, "active": False}, "active"),
        ("POST", "/api/webhooks", {**ok, "description": "x" * 501}, "description"),
        ("POST", "/api/webhooks", ["not", "an", "object"], "body"),
        ("PATCH", f"/api/webhooks/{hook['id']}", {"events": ["nope"]}, "events"),
        ("PATCH", f"/api/webhooks/{hook['id']}", {"events": []}, "events"),
        ("PATCH", f"/api/webhooks/{hook['id']}", {"colour": "red"}, "colour"),
        ("PATCH", f"/api/webhooks/{hook['id']}", {"active": "maybe"}, "active"),
        ("POST", f"/api/webhooks/{hook['id']}/rotate-secret", {"grace": 5}, "grace"),
    ]
    outcomes = {}
    for method, path, body, field in cases:
        r = await client.request(method, path, json=body, headers=account.auth)
        named = field in (await field_names(r) if r.status >= 400 else [])
        outcomes[(method, json.dumps(body)[:60])] = (*await outcome(r), named)
    assert outcomes == {key: (400, "VALIDATION_ERROR", True) for key in outcomes}

    r = await client.post(
        "/api/webhooks",
        data=b'{"url": ',
        headers={**account.auth, "Content-Type": "application/json"},
    )
    assert r.status == 400, await r.text()
    assert await error_code(r) == "VALIDATION_ERROR"
    assert await list_ids(client, account.auth) == [hook["id"]]
    assert await get_webhook(client, account.auth, hook["id"]) == {
        k: v for k, v in hook.items() if k != "secret"
    }


async def test_unknown_or_malformed_ids_in_the_path_are_404(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    unknown = str(uuid.uuid4())
    calls = []
    for webhook_id in ("not-a-uuid", "1234", unknown):
        base = f"/api/webhooks/{webhook_id}"
        calls += [
            ("GET", base, None),
            ("PATCH", base, {"description": "x"}),
            ("DELETE", base, None),
            ("POST", f"{base}/test", None),
            ("POST", f"{base}/rotate-secret", None),
            ("GET", f"{base}/deliveries", None),
            ("POST", f"{base}/deliveries/{uuid.uuid4()}/redeliver", None),
        ]
    calls += [
        ("POST", f"/api/webhooks/{hook['id']}/deliveries/not-a-uuid/redeliver", None),
        ("POST", f"/api/webhooks/{hook['id']}/deliveries/{uuid.uuid4()}/redeliver", None),
    ]
    outcomes = {}
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=account.auth)
        outcomes[(method, path)] = await outcome(r)
    assert outcomes == {key: (404, "NOT_FOUND") for key in outcomes}


async def test_delivery_log_filters_paginates_and_validates_its_query(client, db):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, PUBLIC_URL, ["2fa.enabled"])
    delivery_id, attempts = await insert_delivery(
        db, account.id, hook["id"], ["pending", "pending", "succeeded"]
    )

    log = await delivery_log(client, account.auth, hook["id"])
    assert [e["id"] for e in log] == [str(a) for a in attempts[::-1]], "newest first"
    newest = log[0]
    assert newest["deliveryId"] == str(delivery_id)
    assert newest["event"] == "2fa.enabled"
    assert (newest["attempt"], newest["status"], newest["statusCode"]) == (3, "succeeded", 200)
    assert {"eventId", "latencyMs", "error", "nextRetryAt", "createdAt"} <= set(newest)
    succeeded = await delivery_log(client, account.auth, hook["id"], status="succeeded")
    assert [e["id"] for e in succeeded] == [str(attempts[2])]
    assert await delivery_log(client, account.auth, hook["id"], status="failed") == []

    url = f"/api/webhooks/{hook['id']}/deliveries"
    r = await client.get(url, params={"limit": 2}, headers=account.auth)
    first = await r.json()
    assert len(first["data"]) == 2 and first["nextCursor"]
    r = await client.get(
        url, params={"limit": 2, "cursor": first["nextCursor"]}, headers=account.auth
    )
    second = await r.json()
    assert [e["id"] for e in first["data"] + second["data"]] == [str(a) for a in attempts[::-1]]
    assert second["nextCursor"] is None

    bad_queries = [
        ({"status": "bogus"}, "VALIDATION_ERROR", "status"),
        ({"limit": "0"}, "VALIDATION_ERROR", "limit"),
        ({"limit": "201"}, "VALIDATION_ERROR", "limit"),
        ({"limit": "ten"}, "VALIDATION_ERROR", "limit"),
        ({"page": "2"}, "VALIDATION_ERROR", "page"),
        ({"cursor": "forged!!"}, "INVALID_CURSOR", "cursor"),
        ({"cursor": cursor_of({"not": "a list"})}, "INVALID_CURSOR", "cursor"),
        ({"cursor": cursor_of(["yesterday", str(uuid.uuid4())])}, "INVALID_CURSOR", "cursor"),
        ({"cursor": cursor_of(["2024-01-01T00:00:00", str(uuid.uuid4())])}, "INVALID_CURSOR",
         "cursor"),
        ({"cursor": cursor_of(["2024-01-01T00:00:00+00:00", "x"])}, "INVALID_CURSOR", "cursor"),
    ]
    outcomes, expected = {}, {}
    for query, code, field in bad_queries:
        # `status` only exists on the delivery log; the webhook list shares the rest.
        for path in (url,) if "status" in query else (url, "/api/webhooks"):
            r = await client.get(path, params=query, headers=account.auth)
            named = field in (await field_names(r) if r.status >= 400 else [])
            outcomes[(path, json.dumps(query))] = (*await outcome(r), named)
            expected[(path, json.dumps(query))] = (400, code, True)
    assert outcomes == expected


# --- redeliver -----------------------------------------------------------------------------------


async def test_redeliver_on_an_inactive_webhook_is_409_until_it_is_turned_back_on(client, db):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, LOCAL_URL, ["2fa.enabled"])
    delivery_id, (attempt_id,) = await insert_delivery(db, account.id, hook["id"], ["failed"])
    base = f"/api/webhooks/{hook['id']}"
    r = await client.patch(base, json={"active": False}, headers=account.auth)
    assert r.status == 200, await r.text()

    for some_id in (attempt_id, delivery_id):
        r = await client.post(f"{base}/deliveries/{some_id}/redeliver", headers=account.auth)
        assert r.status == 409, await r.text()
        assert await error_code(r) == "WEBHOOK_INACTIVE"
    assert await db.fetchval(
        "SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id
    ) == "failed"

    r = await client.patch(base, json={"active": True}, headers=account.auth)
    assert r.status == 200, await r.text()
    r = await client.post(f"{base}/deliveries/{attempt_id}/redeliver", headers=account.auth)
    assert r.status == 202, await r.text()
    queued = (await r.json())["data"]
    event_id = await db.fetchval(
        "SELECT event_id FROM webhook_deliveries WHERE id = $1", delivery_id
    )
    assert queued == {"queued": True, "eventId": str(event_id), "deliveryId": str(delivery_id)}
    assert await db.fetchval(
        "SELECT status FROM webhook_deliveries WHERE id = $1", delivery_id
    ) == "pending"
    await client.delete(base, headers=account.auth)


async def test_patch_refuses_null_for_fields_that_cannot_be_empty(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, "http://93.184.216.34/hook", ["2fa.enabled"])
    for field in ("url", "events", "active"):
        r = await client.patch(f"/api/webhooks/{hook['id']}", json={field: None}, headers=account.auth)
        assert r.status == 400, field
        body = await r.json()
        assert body["error"]["code"] == "VALIDATION_ERROR"
        assert [f["field"] for f in body["error"]["details"]["fields"]] == [field]
    r = await client.get(f"/api/webhooks/{hook['id']}", headers=account.auth)
    assert (await r.json())["data"]["url"] == "http://93.184.216.34/hook"


async def test_urls_with_line_breaks_or_spaces_are_refused_not_quietly_rewritten(client):
    account = await new_account(client)
    for url in (
        "http://93.184.216.34/x\r\nX-Injected: 1",
        "http://93.184.216.34/x\nHost: evil.example",
        "http://93.184.216.34/a b",
        "http://93.184.216.34/\tx",
    ):
        r = await client.post("/api/webhooks", json={"url": url, "events": ["2fa.enabled"]}, headers=account.auth)
        assert r.status == 400, url
        assert await error_code(r) == "INVALID_WEBHOOK_URL"
