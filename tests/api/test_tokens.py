"""Credentials under attack: forged, confused, expired and revoked tokens and keys are all a 401
with a specific code; request ids, CORS, and secrets kept out of the logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import structlog
from structlog.testing import capture_logs

from shared.logs import REDACTED, processors, redact

from tests.api_client import PASSWORD, create_key, login, new_account, register
from tests.conftest import make_settings

ME = "/api/auth/me"
REFRESH = "/api/auth/refresh"
ORIGIN = "https://app.example"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def hand_made(header: dict[str, Any], claims: dict[str, Any], secret: str | None) -> str:
    """A JWT assembled by hand (as an attacker would), HMAC-SHA256-signed when a secret is given."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    if secret is None:
        return f"{signing_input}."
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def claims_for(account_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": account_id, "typ": "access", "iat": now, "exp": now + 600, **overrides}
    return {k: v for k, v in claims.items() if v is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refused(r: Any, code: str, status: int = 401) -> None:
    text = await r.text()
    assert r.status == status, text
    body = json.loads(text)
    assert body["success"] is False and body["error"]["code"] == code, body


# User tokens


async def test_a_genuine_token_works(client, settings):
    """The baseline the attacks below are measured against: the same claims, honestly signed."""
    account = await new_account(client)
    token = jwt.encode(claims_for(account.id), settings.JWT_ACCESS_SECRET, algorithm="HS256")
    r = await client.get(ME, headers=bearer(token))
    assert r.status == 200, await r.text()


async def test_token_signed_with_another_secret_is_invalid(client):
    account = await new_account(client)
    token = jwt.encode(claims_for(account.id), secrets.token_hex(32), algorithm="HS256")
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_unsigned_alg_none_token_is_invalid(client, alg):
    account = await new_account(client)
    token = hand_made({"alg": alg, "typ": "JWT"}, claims_for(account.id), None)
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


async def test_alg_none_with_the_real_signature_attached_is_invalid(client, settings):
    account = await new_account(client)
    claims = claims_for(account.id)
    genuine = jwt.encode(claims, settings.JWT_ACCESS_SECRET, algorithm="HS256")
    forged = hand_made({"alg": "none", "typ": "JWT"}, claims, None) + genuine.rsplit(".", 1)[1]
    await refused(await client.get(ME, headers=bearer(forged)), "INVALID_TOKEN")


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "HS512", "HS384"])
async def test_algorithm_other_than_hs256_is_refused_even_with_the_right_key(client, settings, alg):
    """HS/RS confusion: the header claims another algorithm, the MAC is made with the server's
    own secret; the algorithm is pinned, so the header is not believed."""
    account = await new_account(client)
    token = hand_made({"alg": alg, "typ": "JWT"}, claims_for(account.id), settings.JWT_ACCESS_SECRET)
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


async def test_tampered_claims_invalidate_the_signature(client):
    """Swapping `sub` to another account keeps the old signature, which no longer matches."""
    victim, attacker = await new_account(client), await new_account(client)
    header, payload, signature = attacker.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = victim.id
    forged = f"{header}.{segment(claims)}.{signature}"
    await refused(await client.get(ME, headers=bearer(forged)), "INVALID_TOKEN")


async def test_expired_token_is_token_expired(client, settings):
    account = await new_account(client)
    now = int(time.time())
    token = jwt.encode(
        claims_for(account.id, iat=now - 3600, exp=now - 60), settings.JWT_ACCESS_SECRET, algorithm="HS256"
    )
    await refused(await client.get(ME, headers=bearer(token)), "TOKEN_EXPIRED")


async def test_expired_token_with_a_bad_signature_does_not_say_expired(client):
    """Only a genuine token learns that it expired; a forgery is just invalid."""
    account = await new_account(client)
    now = int(time.time())
    token = jwt.encode(claims_for(account.id, exp=now - 60), secrets.token_hex(32), algorithm="HS256")
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


async def test_refresh_token_is_not_an_access_token(client):
    account = await new_account(client)
    await refused(await client.get(ME, headers=bearer(account.refresh_token)), "INVALID_TOKEN")


async def test_access_token_is_not_a_refresh_token(client):
    account = await new_account(client)
    r = await client.post(REFRESH, json={"refreshToken": account.access_token})
    await refused(r, "INVALID_TOKEN")


@pytest.mark.parametrize("typ", ["refresh", "temp", "device", "ACCESS", ""])
async def test_token_of_another_type_signed_with_the_access_secret_is_invalid(client, settings, typ):
    account = await new_account(client)
    token = jwt.encode(claims_for(account.id, typ=typ), settings.JWT_ACCESS_SECRET, algorithm="HS256")
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


async def test_access_claims_signed_with_the_refresh_secret_are_not_a_refresh_token(client, settings):
    account = await new_account(client)
    token = jwt.encode(
        claims_for(account.id, jti=str(uuid.uuid4())), settings.JWT_REFRESH_SECRET, algorithm="HS256"
    )
    await refused(await client.post(REFRESH, json={"refreshToken": token}), "INVALID_TOKEN")


@pytest.mark.parametrize("missing", ["typ", "exp", "iat", "sub"])
async def test_token_missing_a_required_claim_is_invalid(client, settings, missing):
    """Without `exp` a token would never expire, without `typ` it could be any kind."""
    account = await new_account(client)
    token = jwt.encode(claims_for(account.id, **{missing: None}), settings.JWT_ACCESS_SECRET, algorithm="HS256")
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


@pytest.mark.parametrize(
    "overrides",
    [{"sub": "not-a-uuid"}, {"sub": 42}, {"sid": "not-a-uuid"}, {"sid": 42}, {"sid": ["x"]},
     {"exp": "tomorrow"}, {"iat": "now"}],
    ids=["sub-text", "sub-number", "sid-text", "sid-number", "sid-list", "exp-text", "iat-text"],
)
async def test_genuine_signature_over_malformed_claims_is_invalid_not_500(client, settings, overrides):
    account = await new_account(client)
    token = jwt.encode(claims_for(account.id, **overrides), settings.JWT_ACCESS_SECRET, algorithm="HS256")
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "a.b", "eyJ.eyJ.", "...", "Bearer", "x" * 4000, "eyJhbGciOiJIUzI1NiJ9.%%%.abc"],
)
async def test_garbage_bearer_tokens_are_invalid(client, token):
    await refused(await client.get(ME, headers=bearer(token)), "INVALID_TOKEN")


# API keys


async def test_revoked_api_key_is_api_key_revoked(client):
    account = await new_account(client)
    key = await create_key(client, account, scopes=["user:read"])
    r = await client.get(ME, headers={"X-API-Key": key["apiKey"]})
    assert r.status == 200, await r.text()
    r = await client.delete(f"/api/api-keys/{key['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    await refused(await client.get(ME, headers={"X-API-Key": key["apiKey"]}), "API_KEY_REVOKED")
    await refused(await client.get(ME, headers=bearer(key["apiKey"])), "API_KEY_REVOKED")


async def test_expired_api_key_is_api_key_expired(client):
    account = await new_account(client)
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    key = await create_key(client, account, scopes=["user:read"], expiresAt=expires.isoformat())
    r = await client.get(ME, headers=bearer(key["apiKey"]))
    assert r.status == 200, await r.text()
    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 0.1)
    await refused(await client.get(ME, headers={"X-API-Key": key["apiKey"]}), "API_KEY_EXPIRED")
    await refused(await client.get(ME, headers=bearer(key["apiKey"])), "API_KEY_EXPIRED")


@pytest.mark.parametrize("key", ["tfa_" + "A" * 43, "tfa_", "tfa_short", "tfa_" + "x" * 4000])
async def test_unknown_api_key_is_invalid_api_key(client, key):
    await refused(await client.get(ME, headers={"X-API-Key": key}), "INVALID_API_KEY")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer   "},
     {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Token abc"}, {"X-API-Key": ""}],
    ids=["none", "empty", "scheme-only", "blank-token", "basic", "other-scheme", "empty-key"],
)
async def test_missing_credentials_are_unauthorized(client, headers):
    await refused(await client.get(ME, headers=headers), "UNAUTHORIZED")


# Request ids


@pytest.mark.parametrize("path", ["/api/health/live", ME, "/api/no-such-route"])
async def test_a_sane_request_id_is_echoed(client, path):
    r = await client.get(path, headers={"X-Request-Id": "req-42_abc.DEF"})
    assert r.headers["X-Request-Id"] == "req-42_abc.DEF"


@pytest.mark.parametrize(
    "incoming",
    ["has spaces", "x" * 129, "<script>alert(1)</script>", "a/b", "ünïcode", "", "id;rm -rf"],
    ids=["spaces", "too-long", "html", "slash", "non-ascii", "empty", "shell"],
)
async def test_an_unsafe_request_id_is_replaced(client, incoming):
    r = await client.get("/api/health/live", headers={"X-Request-Id": incoming})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"]), r.headers["X-Request-Id"]


async def test_a_request_id_is_generated_for_each_request(client):
    first = await client.get("/api/health/live")
    second = await client.get(ME)
    ids = {first.headers["X-Request-Id"], second.headers["X-Request-Id"]}
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


# CORS


async def test_cors_preflight_from_an_allowed_origin_is_204(app_factory):
    client = await app_factory(CORS_ORIGINS=[ORIGIN])
    for path, method in [("/api/auth/login", "POST"), (ME, "GET"), ("/api/api-keys/x", "DELETE")]:
        r = await client.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type, x-api-key",
            },
        )
        assert r.status == 204, await r.text()
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert method in r.headers["Access-Control-Allow-Methods"]
        allowed = r.headers["Access-Control-Allow-Headers"].lower()
        assert {"authorization", "content-type", "x-api-key"} <= {h.strip() for h in allowed.split(",")}
        assert "Origin" in r.headers["Vary"]


async def test_cors_preflight_from_another_origin_gets_no_allow_origin(app_factory):
    client = await app_factory(CORS_ORIGINS=[ORIGIN])
    for origin in ("https://evil.example", "https://app.example.evil.example", "http://app.example", "null"):
        r = await client.options(
            "/api/auth/login", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert r.status != 204
        assert "Access-Control-Allow-Origin" not in r.headers, origin
        assert (await r.json())["success"] is False


async def test_cors_headers_on_responses_only_for_the_allowed_origin(app_factory):
    client = await app_factory(CORS_ORIGINS=[ORIGIN])
    r = await client.get(ME, headers={"Origin": ORIGIN})
    assert r.status == 401
    assert r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Request-Id" in r.headers["Access-Control-Expose-Headers"]
    r = await client.get(ME, headers={"Origin": "https://evil.example"})
    assert r.status == 401
    assert "Access-Control-Allow-Origin" not in r.headers


async def test_no_cors_origins_configured_means_no_cors_headers(client):
    r = await client.options(ME, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = await client.get("/api/health/live", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in r.headers


# Logs


def test_redaction_is_part_of_every_configured_log_pipeline():
    for log_format in ("json", "console"):
        assert redact in processors(make_settings(LOG_FORMAT=log_format))


async def test_secrets_never_reach_the_logs(client, caplog):
    """Register, log in (once wrongly), create a key, use it, refresh: no line holds a secret."""
    caplog.set_level(logging.DEBUG)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars, redact]) as entries:
        user = await register(client)
        r = await client.post(
            "/api/auth/login", json={"emailOrUsername": user["username"], "password": PASSWORD + "x"}
        )
        assert r.status == 401
        session = await login(client, user["username"])
        r = await client.post(
            "/api/api-keys",
            headers=bearer(session["accessToken"]),
            json={"name": "logs", "scopes": ["user:read"]},
        )
        assert r.status == 201, await r.text()
        api_key = (await r.json())["apiKey"]
        r = await client.get(ME, headers={"X-API-Key": api_key})
        assert r.status == 200, await r.text()
        r = await client.post(REFRESH, json={"refreshToken": session["refreshToken"]})
        assert r.status == 200, await r.text()
        rotated = (await r.json())["data"]
    # The capture really saw the requests (so an empty capture cannot pass by accident).
    paths = {e.get("path") for e in entries if e.get("event") == "request"}
    assert {"/api/auth/login", "/api/api-keys", ME, REFRESH} <= paths, entries
    lines = [json.dumps(e, default=str) for e in entries] + caplog.text.splitlines()
    for secret in (
        PASSWORD,
        session["accessToken"],
        session["refreshToken"],
        api_key,
        rotated["accessToken"],
        rotated["refreshToken"],
    ):
        leaks = [line for line in lines if secret in line]
        assert not leaks, leaks


async def test_secrets_logged_by_mistake_are_redacted():
    """A careless log call still cannot leak: secret-named fields and embedded tokens are masked."""
    token = jwt.encode({"sub": "x"}, secrets.token_hex(32), algorithm="HS256")
    api_key = "tfa_" + secrets.token_urlsafe(32)
    log = structlog.get_logger("careless")
    with capture_logs(processors=[redact]) as entries:
        log.warning(
            f"calling with {api_key}",
            password=PASSWORD,
            headers={"Authorization": f"Bearer {token}", "X-API-Key": api_key},
            refreshToken=token,
            note=f"user sent {token}",
            items=[api_key],
        )
    rendered = json.dumps(entries, default=str)
    assert PASSWORD not in rendered and token not in rendered and api_key not in rendered, rendered
    assert entries[0]["log_level"] == "warning"


def test_redaction_copes_with_keys_that_are_not_strings():
    """Dicts keyed by ids or numbers are logged as they are, not turned into a logging error."""
    key_id, api_key = uuid.uuid4(), "tfa_" + secrets.token_urlsafe(32)
    with capture_logs(processors=[redact]) as entries:
        structlog.get_logger("ids").info("flushed", stamps={key_id: 1.5, 7: api_key})
    assert entries[0]["stamps"] == {key_id: 1.5, 7: REDACTED}
