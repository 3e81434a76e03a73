"""The webhook receiver fakes themselves: the guide's Express receiver checks signatures as the guide
says and obeys its control endpoint, and the Python receiver misbehaves as asked and survives it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import aiohttp
import pytest

from tests.fakes.webhook_receivers import HUGE_LENGTH, express_receiver, python_receiver

SECRET = "whsec-test-secret"
USER_ID = "ünï-中文-😀"
EVENT = {
    "id": "x",
    "event": "2fa.enabled",
    "timestamp": "2026-01-01T00:00:00.000Z",
    "data": {"userId": USER_ID},
}
BODY = json.dumps(EVENT, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


async def deliver(session: aiohttp.ClientSession, url: str, signature: str) -> int:
    headers = {
        "Content-Type": "application/json",
        "X-Webhook-Signature": signature,
        "X-Webhook-Event": "2fa.enabled",
    }
    async with session.post(url, data=BODY, headers=headers) as r:
        await r.read()
        return r.status


async def test_express_receiver_accepts_a_correctly_signed_compact_utf8_body():
    async with express_receiver() as rx, aiohttp.ClientSession() as session:
        await rx.configure(secret=SECRET)
        assert await deliver(session, rx.url, sign(BODY)) == 200

        [request] = await rx.wait_for(1)
        assert request["status"] == 200
        assert request["rawBody"].encode("utf-8") == BODY
        assert request["headers"]["x-webhook-signature"] == sign(BODY)
        assert request["headers"]["x-webhook-event"] == "2fa.enabled"
        assert f"User {USER_ID} enabled 2FA" in rx.log_lines


async def test_express_receiver_rejects_a_bad_signature_with_401():
    async with express_receiver() as rx, aiohttp.ClientSession() as session:
        await rx.configure(secret=SECRET)
        assert await deliver(session, rx.url, sign(BODY, "another-secret")) == 401

        [request] = await rx.wait_for(1)
        assert request["status"] == 401
        assert rx.log_lines == []


async def test_express_receiver_fails_the_next_n_deliveries_then_recovers():
    async with express_receiver() as rx, aiohttp.ClientSession() as session:
        await rx.configure(secret=SECRET, fail_next=2)
        statuses = [await deliver(session, rx.url, sign(BODY)) for _ in range(3)]

        assert statuses == [500, 500, 200]
        assert [r["status"] for r in await rx.wait_for(3)] == [500, 500, 200]


async def test_wait_for_names_what_arrived_when_too_little_did():
    async with python_receiver() as rx, aiohttp.ClientSession() as session:
        async with session.post(rx.url, data=b"first") as r:
            assert r.status == 200, await r.text()
        with pytest.raises(AssertionError, match="(?s)got 1.*first"):
            await rx.wait_for(2, timeout=0.1)


async def test_python_receiver_survives_a_client_that_reads_1_mib_of_a_huge_body():
    async with python_receiver("huge") as rx, aiohttp.ClientSession() as session:
        received = 0
        async with session.post(rx.url, data=BODY) as r:
            assert r.status == 200
            assert r.content_length == HUGE_LENGTH
            async for chunk in r.content.iter_chunked(64 * 1024):
                received += len(chunk)
                if received >= 1 << 20:
                    break
            r.close()
        assert received >= 1 << 20
        async with asyncio.timeout(2):
            while rx.in_flight:
                await asyncio.sleep(0.01)

        rx.behaviour = "ok"
        async with session.post(rx.url, data=BODY) as r:
            assert r.status == 200, await r.text()
        assert [r["rawBody"] for r in await rx.wait_for(2)] == [BODY, BODY]


async def test_python_receiver_misbehaves_as_asked():
    """fail_next wins over the behaviour; close drops the connection; hang never answers."""
    async with python_receiver("redirect") as rx, aiohttp.ClientSession() as session:
        rx.fail_next = 1
        async with session.post(rx.url, data=BODY, allow_redirects=False) as r:
            assert r.status == 500
        async with session.post(rx.url, data=BODY, allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == "http://169.254.169.254/latest/meta-data/"

        rx.behaviour = "close"
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.post(rx.url, data=BODY) as r:
                await r.read()

        rx.behaviour = "hang"
        with pytest.raises(TimeoutError):
            async with session.post(rx.url, data=BODY, timeout=aiohttp.ClientTimeout(total=0.2)):
                pass

        requests = await rx.wait_for(4)
        assert [r["behaviour"] for r in requests] == ["fail", "redirect", "close", "hang"]
        assert {r["path"] for r in requests} == {"/hook"}
