"""Requests built to exhaust the server: bodies over the limit and 100 000 levels of nesting on
every route that takes JSON (enumerated from the OpenAPI document), and slow clients
(slowloris) that hold a connection open by sending a byte a second.

The server's slow-client limits are settings: `HTTP_KEEPALIVE_SECONDS` (request headers must be
complete within it, and an idle connection is closed after it) and `HTTP_BODY_TIMEOUT_SECONDS`
(the body must arrive within it: 408 `REQUEST_TIMEOUT`). After a 408 aiohttp reads and discards
what is still coming for at most its lingering time (10 s), then closes the connection.
tests/api/test_bad_input.py checks size and nesting in detail on a few routes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from tests.api_client import new_account
from tests.security.helpers import outcome

LIMIT = 256 * 1024  # room for 100 000 levels of nesting, so that they reach the JSON decoder
KEEPALIVE, BODY_TIMEOUT, LINGER = 2, 1, 10
SLACK = 3.0


def json_operations(doc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(method, path with its parameters filled in, needs credentials) of each JSON route."""
    found = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if "requestBody" not in op:
                continue
            filled = path
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    value = "totp" if p["name"] == "type" else str(uuid.uuid4())
                    filled = filled.replace(f"{{{p['name']}}}", value)
            found.append((method.upper(), filled, bool(op.get("security"))))
    return found


async def test_oversized_and_deeply_nested_bodies_are_4xx_on_every_json_route(app_factory):
    api = await app_factory(MAX_BODY_BYTES=LIMIT)
    account = await new_account(api)
    ops = json_operations(await (await api.get("/api/openapi.json")).json())
    assert {"/api/auth/login", "/api/2fa/verify", "/api/webhooks"} <= {path for _, path, _ in ops}

    async def chunked(data: bytes):
        for i in range(0, len(data), 16 * 1024):
            yield data[i : i + 16 * 1024]

    too_big = b'{"x": "' + b"a" * LIMIT + b'"}'
    large, invalid = (413, "PAYLOAD_TOO_LARGE"), (400, "VALIDATION_ERROR")
    bodies = {
        "declared too large": (too_big, large),
        "chunked too large": (None, large),
        "100 000 nested arrays": (b"[" * 100_000, invalid),
        "100 000 nested arrays, closed": (b"[" * 100_000 + b"]" * 100_000, invalid),
        "deep nesting in a field": (b'{"userId": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", invalid),
        "just under the decoder's depth, in a field": (
            b'{"userId": ' + b"[" * 900 + b"]" * 900 + b"}", invalid),
    }
    outcomes, expected = {}, {}
    for method, path, needs_credentials in ops:
        headers = {"Content-Type": "application/json", **(account.auth if needs_credentials else {})}
        for name, (data, answer) in bodies.items():
            payload = chunked(too_big) if data is None else data
            r = await api.request(method, path, data=payload, headers=headers)
            outcomes[(method, path.split("/api/")[1], name)] = await outcome(r)
            expected[(method, path.split("/api/")[1], name)] = answer
    assert outcomes == expected
    r = await api.get("/api/health/live")
    assert r.status == 200


async def _attack(
    host: str, port: int, opening: bytes, trickle: bytes
) -> tuple[float | None, float, bytes]:
    """Send `opening`, then `trickle` a byte a second; returns when the first answer byte came
    (or None) and when the server closed the connection (infinity: not in time), in seconds
    from the connection, and what it answered."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()

    async def drip() -> None:
        writer.write(opening)
        for i in range(len(trickle)):
            await asyncio.sleep(1)
            writer.write(trickle[i : i + 1])
            await writer.drain()

    dripping = asyncio.create_task(drip())
    answered, received = None, b""
    try:
        async with asyncio.timeout(KEEPALIVE + BODY_TIMEOUT + LINGER + 2 * SLACK):
            while chunk := await reader.read(4096):
                answered = answered or time.monotonic() - started
                received += chunk
        closed = time.monotonic() - started
    except ConnectionResetError:
        closed = time.monotonic() - started
    except TimeoutError:
        closed = float("inf")
    dripping.cancel()
    writer.close()
    return answered, closed, received


async def test_slow_clients_are_cut_off_and_others_are_served_meanwhile(app_factory):
    api = await app_factory(HTTP_KEEPALIVE_SECONDS=KEEPALIVE, HTTP_BODY_TIMEOUT_SECONDS=BODY_TIMEOUT)
    host, port = api.server.host, api.server.port
    request_line = b"POST /api/auth/login HTTP/1.1\r\nHost: api\r\n"
    body_headers = request_line + b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    attacks = asyncio.gather(
        _attack(host, port, b"", b""),  # connects and says nothing
        _attack(host, port, request_line, b"X-Slow: " + b"a" * 200),  # headers, a byte a second
        _attack(host, port, body_headers, b'{"emailOrUsername": "' + b"a" * 150),  # body, likewise
    )
    # Meanwhile the server answers everyone else at once.
    for _ in range(3):
        await asyncio.sleep(0.5)
        started = time.monotonic()
        r = await api.get("/api/health/live")
        assert r.status == 200 and time.monotonic() - started < 1
    idle, headers, body = await attacks

    # Silent, or headers a byte a second: closed without an answer once the headers are late.
    for answered, closed, received in (idle, headers):
        assert (answered, received) == (None, b"")
        assert KEEPALIVE - 0.5 <= closed <= KEEPALIVE + SLACK, closed
    # A body a byte a second: 408 once it is late, and the connection closed soon after.
    body_answer, body_closed, body_got = body
    assert body_answer is not None and BODY_TIMEOUT - 0.5 <= body_answer <= BODY_TIMEOUT + SLACK, body
    head, _, payload = body_got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), body_got
    assert json.loads(payload)["error"]["code"] == "REQUEST_TIMEOUT"
    assert body_closed <= BODY_TIMEOUT + LINGER + SLACK, body_closed
