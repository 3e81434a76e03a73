"""Deliveries as an integrator sees them: the guide's Express receiver accepts every event type's
signature, Standard Webhooks libraries verify them too, failures are retried through the delay
queues with one X-Webhook-Id, and every attempt is in the delivery log."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared import webhook_signing

from tests.api_client import create_key, new_account
from tests.conftest import RETRY_DELAYS
from tests.fakes.webhook_receivers import express_receiver, python_receiver
from tests.ids import token
from tests.totp_helpers import code_at, enable_totp
from tests.webhooks.helpers import create_webhook, delivery_log, eventually, running_dispatcher

ALL_EVENTS = [
    "2fa.enabled", "2fa.disabled", "2fa.verified", "2fa.failed",
    "user.login", "user.logout", "webhook.test",
]


def body_of(request: dict) -> dict:
    return json.loads(request["rawBody"])


async def test_every_event_type_reaches_the_guides_express_receiver_with_a_valid_signature(client):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    user_id = f"ünïcødé-用户-😀-{token()}"
    async with express_receiver() as rx, running_dispatcher():
        hook = await create_webhook(client, account.auth, rx.url, ALL_EVENTS)
        await rx.configure(secret=hook["secret"])

        secret = (await enable_totp(client, key, user_id))["secret"]  # 2fa.enabled
        r = await client.post("/api/2fa/verify", json={"userId": user_id, "code": "000000"}, headers=key)
        assert r.status == 401  # 2fa.failed
        r = await client.post("/api/2fa/verify", json={"userId": user_id, "code": code_at(secret)}, headers=key)
        assert r.status == 200, await r.text()  # 2fa.verified
        r = await client.delete("/api/2fa/methods/totp", params={"userId": user_id}, headers=key)
        assert r.status == 200, await r.text()  # 2fa.disabled
        r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": account.password})
        tokens = (await r.json())["data"]  # user.login
        r = await client.post("/api/auth/logout", json={"refreshToken": tokens["refreshToken"]},
                              headers={"Authorization": f"Bearer {tokens['accessToken']}"})
        assert r.status == 200, await r.text()  # user.logout
        r = await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        assert r.status == 202  # webhook.test

        arrived = await rx.wait_for(len(ALL_EVENTS))

    by_event = {r["headers"]["x-webhook-event"]: r for r in arrived}
    assert sorted(by_event) == sorted(ALL_EVENTS)
    # 200 is the guide's own code answering: its recomputed signature matched.
    assert [r["status"] for r in arrived] == [200] * len(ALL_EVENTS)
    for event, request in by_event.items():
        body = body_of(request)
        assert list(body) == ["id", "event", "timestamp", "data"]
        assert body["event"] == event == request["headers"]["x-webhook-event"]
        assert body["id"] == request["headers"]["x-webhook-id"]
        expected_user = user_id if event.startswith("2fa.") else account.id
        assert body["data"]["userId"] == expected_user
        # Compact, UTF-8, not escaped: the bytes JSON.stringify produces from the parsed body.
        assert request["rawBody"] == json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    assert "\\u" not in by_event["2fa.enabled"]["rawBody"]
    assert f"User {user_id} enabled 2FA" in rx.log_lines
    assert f"User {user_id} failed 2FA attempt" in rx.log_lines
    assert by_event["2fa.failed"]["headers"]["x-webhook-signature"] == webhook_signing.hex_signature(
        hook["secret"], by_event["2fa.failed"]["rawBody"].encode()
    )


async def test_a_wrong_secret_is_refused_by_the_guides_receiver(client):
    account = await new_account(client)
    async with express_receiver() as rx, running_dispatcher(WEBHOOK_MAX_ATTEMPTS=1):
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        await rx.configure(secret=webhook_signing.new_secret())
        await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        [request] = await rx.wait_for(1)
        assert request["status"] == 401
        log = await eventually(lambda: delivery_log(client, account.auth, hook["id"]))
    assert log[0]["status"] == "failed" and log[0]["statusCode"] == 401


async def test_a_receiver_failing_twice_gets_three_attempts_with_one_webhook_id(client):
    account = await new_account(client)
    async with express_receiver() as rx, running_dispatcher():
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        await rx.configure(secret=hook["secret"], fail_next=2)
        r = await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        event_id = (await r.json())["eventId"]
        arrived = await rx.wait_for(3, timeout=20)
        log = await eventually(
            lambda: _with_length(delivery_log(client, account.auth, hook["id"]), 3)
        )

    assert [r["status"] for r in arrived] == [500, 500, 200]
    assert {r["headers"]["x-webhook-id"] for r in arrived} == {event_id}
    assert len({r["rawBody"] for r in arrived}) == 1  # the same bytes every time
    gaps = [(b["receivedAt"] - a["receivedAt"]) / 1000 for a, b in itertools.pairwise(arrived)]
    assert gaps[0] >= RETRY_DELAYS[0] * 0.9 and gaps[1] >= RETRY_DELAYS[1] * 0.9, gaps

    # Newest first: the success, then the two failures that each scheduled a retry.
    assert [e["attempt"] for e in log] == [3, 2, 1]
    assert [e["status"] for e in log] == ["succeeded", "pending", "pending"]
    assert [e["statusCode"] for e in log] == [200, 500, 500]
    assert {e["eventId"] for e in log} == {event_id} and len({e["deliveryId"] for e in log}) == 1
    assert log[0]["error"] is None and log[1]["error"] == "HTTP 500"
    assert log[0]["nextRetryAt"] is None and log[2]["nextRetryAt"] is not None
    assert all(e["event"] == "webhook.test" and e["latencyMs"] >= 0 for e in log)
    succeeded = await delivery_log(client, account.auth, hook["id"], status="succeeded")
    assert [e["attempt"] for e in succeeded] == [3]


async def _with_length(log_call, n: int):
    log = await log_call
    return log if len(log) >= n else None


async def test_attempts_stop_at_the_maximum_and_the_last_is_failed(client):
    account = await new_account(client)
    async with python_receiver("error") as rx, running_dispatcher(WEBHOOK_MAX_ATTEMPTS=2):
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        log = await eventually(
            lambda: _with_length(delivery_log(client, account.auth, hook["id"]), 2), timeout=10
        )
        await rx.wait_for(2)
        failed = await delivery_log(client, account.auth, hook["id"], status="failed")
    assert [e["status"] for e in log] == ["failed", "pending"]
    assert [e["attempt"] for e in failed] == [2] and failed[0]["nextRetryAt"] is None
    assert len(rx.requests) == 2


async def test_standard_webhooks_libraries_verify_deliveries_and_reject_replays(client):
    account = await new_account(client)
    async with python_receiver() as rx, running_dispatcher():
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        [request] = await rx.wait_for(1)
    headers, raw = request["headers"], request["rawBody"]
    verified = Webhook(hook["secret"]).verify(raw, headers)
    assert verified["event"] == "webhook.test"
    assert headers["webhook-id"] == headers["x-webhook-id"] == verified["id"]
    assert headers["webhook-timestamp"] == headers["x-webhook-timestamp"]

    stale = str(int((datetime.now(UTC) - timedelta(minutes=10)).timestamp()))
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(raw, {**headers, "webhook-timestamp": stale})
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(raw.replace(b"webhook.test", b"2fa.verified"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_signing.new_secret()).verify(raw, headers)


async def test_after_a_rotation_old_and_new_secrets_both_sign_until_the_grace_period_ends(client):
    account = await new_account(client)
    async with python_receiver() as rx, running_dispatcher():
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        old = hook["secret"]
        r = await client.post(f"/api/webhooks/{hook['id']}/rotate-secret", json={}, headers=account.auth)
        new = (await r.json())["secret"]
        await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        [during] = await rx.wait_for(1)

        r = await client.post(f"/api/webhooks/{hook['id']}/rotate-secret",
                              json={"gracePeriodSeconds": 0}, headers=account.auth)
        newest = (await r.json())["secret"]
        await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        after = (await rx.wait_for(2))[1]

    headers, raw = during["headers"], during["rawBody"]
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(raw, headers)
    assert headers["x-webhook-signature"] == webhook_signing.hex_signature(new, raw)
    assert headers["x-webhook-signature-previous"] == webhook_signing.hex_signature(old, raw)

    headers, raw = after["headers"], after["rawBody"]
    assert len(headers["webhook-signature"].split(" ")) == 1
    assert "x-webhook-signature-previous" not in headers
    Webhook(newest).verify(raw, headers)
    for retired in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(retired).verify(raw, headers)


async def test_redeliver_sends_the_same_event_again_and_logs_a_new_attempt(client):
    account = await new_account(client)
    async with python_receiver() as rx, running_dispatcher():
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        [first] = await rx.wait_for(1)
        [entry] = await eventually(lambda: delivery_log(client, account.auth, hook["id"]))
        r = await client.post(
            f"/api/webhooks/{hook['id']}/deliveries/{entry['id']}/redeliver", headers=account.auth
        )
        assert r.status == 202, await r.text()
        assert (await r.json())["deliveryId"] == entry["deliveryId"]
        second = (await rx.wait_for(2))[1]
        log = await eventually(
            lambda: _with_length(delivery_log(client, account.auth, hook["id"]), 2)
        )
    assert second["headers"]["x-webhook-id"] == first["headers"]["x-webhook-id"]
    assert second["rawBody"] == first["rawBody"]
    assert [(e["attempt"], e["status"]) for e in log] == [(2, "succeeded"), (1, "succeeded")]


async def test_the_delivery_log_pages_newest_first_without_gaps(client):
    account = await new_account(client)
    async with python_receiver() as rx, running_dispatcher():
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        for _ in range(5):
            await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        await rx.wait_for(5)
        await eventually(lambda: _with_length(delivery_log(client, account.auth, hook["id"]), 5))
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        r = await client.get(f"/api/webhooks/{hook['id']}/deliveries", params=params, headers=account.auth)
        body = await r.json()
        seen += body["data"]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and len({e["id"] for e in seen}) == 5
    stamps = [e["createdAt"] for e in seen]
    assert stamps == sorted(stamps, reverse=True)
