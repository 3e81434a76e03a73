"""Health endpoints exactly as the guide shows them, and 503 when a dependency is down."""

from __future__ import annotations

import time

from tests.api_client import create_key, new_account
from tests.fakes.tcp_proxy import TcpProxy


async def test_health_reports_the_guides_shape(client):
    r = await client.get("/api/health")
    body = await r.json()
    assert r.status == 200, body
    assert body["status"] == "healthy"
    assert body["service"] == "2FA Authentication Service"
    assert body["version"] == "1.0.0"
    assert isinstance(body["uptime"], int)
    assert body["timestamp"].endswith("Z")
    for name in ("database", "redis", "broker"):
        assert body["checks"][name]["status"] == "up"
        assert isinstance(body["checks"][name]["responseTime"], int)
    assert {"status", "heapUsed", "heapTotal"} <= set(body["checks"]["memory"])
    assert body["data"]["checks"] == body["checks"]


async def test_live_and_ready_are_200_when_everything_answers(client):
    assert (await client.get("/api/health/live")).status == 200
    r = await client.get("/api/health/ready")
    assert r.status == 200, await r.text()


async def test_redis_down_makes_health_and_ready_503_but_not_live(app_factory):
    client = await app_factory(REDIS_PORT=1)  # nothing listens on port 1
    r = await client.get("/api/health")
    body = await r.json()
    assert r.status == 503
    assert body["status"] == "unhealthy"
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["database"]["status"] == "up"
    assert (await client.get("/api/health/ready")).status == 503
    assert (await client.get("/api/health/live")).status == 200


async def test_a_request_needing_redis_gets_503_not_500_when_it_is_down(app_factory):
    client = await app_factory(REDIS_PORT=1)
    r = await client.post("/api/auth/login", json={"emailOrUsername": "someone", "password": "whatever1"})
    assert r.status == 503, await r.text()
    assert (await r.json())["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert "Retry-After" in r.headers


async def test_a_stalled_redis_gets_503_at_the_request_deadline_and_service_resumes(app_factory):
    """Redis accepts and never answers (no per-command timeout in the client): the request
    deadline answers 503 instead of hanging, and once Redis answers again so does the API."""
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    try:
        client = await app_factory(REDIS_PORT=proxy.port, REQUEST_TIMEOUT_SECONDS=1)
        account = await new_account(client)
        key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
        status = {"userId": "someone"}
        assert (await client.get("/api/2fa/status", headers=key, params=status)).status == 200
        proxy.stall()
        started = time.monotonic()
        r = await client.get("/api/2fa/status", headers=key, params=status)  # the key's rate limit
        waited = time.monotonic() - started
        assert r.status == 503, await r.text()
        assert (await r.json())["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert r.headers["Retry-After"] == "5"
        assert 0.9 < waited < 3, waited
        proxy.resume()
        r = await client.get("/api/2fa/status", headers=key, params=status)
        assert r.status == 200, await r.text()
    finally:
        await proxy.stop()
