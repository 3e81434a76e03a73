"""TOTP end to end: setup, confirmation, login with 2FA, API-key verification, attacks."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse

import asyncpg
import jwt
import pyotp
import pytest

from shared.crypto import DecryptionFailed, SecretBox
from shared.events import Event

from api.domain import totp

from tests.api_client import PASSWORD, create_key, error_code, new_account
from tests.conftest import BASE_SETTINGS
from tests.event_watch import watch_events
from tests.ids import random_user_id
from tests.totp_helpers import code_at, enable_totp, wrong_code

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(
    ("unix_time", "eight_digits"),
    [(59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
     (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130")],
)
def test_rfc6238_sha1_test_vectors(unix_time, eight_digits):
    """RFC 6238 Appendix B (SHA-1); we issue 6-digit codes, the low 6 digits of the same HOTP value."""
    assert pyotp.TOTP(RFC_SECRET, digits=8).at(unix_time) == eight_digits
    assert totp.matching_step(RFC_SECRET, eight_digits[-6:], now=unix_time) == unix_time // 30
    assert totp.matching_step(RFC_SECRET, eight_digits[-6:], now=unix_time + 30) == unix_time // 30
    assert totp.matching_step(RFC_SECRET, eight_digits[-6:], now=unix_time + 90) is None


async def test_setup_returns_secret_otpauth_url_and_local_qr_code(client, settings):
    account = await new_account(client)
    r = await client.post("/api/2fa/totp/setup", headers=account.auth)
    body = await r.json()
    assert r.status == 200, body
    assert body["qrCode"].startswith("data:image/png;base64,")
    base64.b64decode(body["qrCode"].split(",", 1)[1], validate=True)
    url = urllib.parse.urlparse(body["otpauthUrl"])
    assert url.scheme == "otpauth" and url.netloc == "totp"
    params = urllib.parse.parse_qs(url.query)
    assert params["secret"] == [body["secret"]]
    assert params["issuer"] == [settings.TOTP_ISSUER]
    assert account.email in urllib.parse.unquote(url.path)
    assert body["data"]["secret"] == body["secret"]
    # Pending until confirmed.
    r = await client.get("/api/2fa/status", headers=account.auth)
    assert (await r.json())["enabled"] is False


async def test_verify_setup_enables_totp_and_returns_ten_backup_codes(client, settings):
    account = await new_account(client)
    async with watch_events(settings, pattern="2fa.enabled") as watcher:
        enabled = await enable_totp(client, account.auth)
        await watcher.wait_for(lambda evs: any(e.userId == account.id for e in evs))
    assert len(enabled["backupCodes"]) == 10 and len(set(enabled["backupCodes"])) == 10
    event = next(e for e in watcher.events if e.userId == account.id)
    assert event.data == {"userId": account.id, "method": "totp"}
    r = await client.get("/api/2fa/status", headers=account.auth)
    assert await r.json() == {**(body := await r.json()), "enabled": True, "methods": ["totp"]}
    assert body["backupCodesRemaining"] == 10
    r = await client.get("/api/auth/me", headers=account.auth)
    assert (await r.json())["twoFactor"] == {"enabled": True, "methods": ["totp"]}
    r = await client.get("/api/2fa/methods", headers=account.auth)
    listed = await r.json()
    assert [m["type"] for m in listed["data"]] == ["totp"]
    assert "type" not in listed  # a list payload is not copied to the top level


async def test_totp_secret_is_encrypted_at_rest_and_bound_to_its_row(client, settings):
    account = await new_account(client)
    enabled = await enable_totp(client, account.auth)
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        row = await conn.fetchrow(
            "SELECT f.secret_ciphertext, f.owner_id, f.end_user_id FROM totp_factors f "
            "JOIN end_users u ON u.id = f.end_user_id WHERE u.external_id = $1", account.id)
        codes = await conn.fetch(
            "SELECT code_hash FROM backup_codes b JOIN end_users u ON u.id = b.end_user_id WHERE u.external_id = $1",
            account.id)
    finally:
        await conn.close()
    blob = bytes(row["secret_ciphertext"])
    assert enabled["secret"].encode() not in blob
    assert base64.b32decode(enabled["secret"]) not in blob
    box = SecretBox(settings.ENCRYPTION_KEY)
    own_aad = f"{row['owner_id']}:{row['end_user_id']}".encode()
    assert box.decrypt(blob, own_aad).decode() == enabled["secret"]
    with pytest.raises(DecryptionFailed):  # the same ciphertext in another user's row
        box.decrypt(blob, f"{row['owner_id']}:00000000-0000-0000-0000-000000000000".encode())
    stored = {bytes(c["code_hash"]) for c in codes}
    assert not any(code.encode() in h for code in enabled["backupCodes"] for h in stored)


async def test_login_with_2fa_needs_a_code_then_issues_tokens(client, settings):
    account = await new_account(client)
    enabled = await enable_totp(client, account.auth)
    r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": PASSWORD})
    body = await r.json()
    assert r.status == 200, body
    assert body["requiresTwoFactor"] is True and body["methods"] == ["totp"]
    assert "accessToken" not in body
    async with watch_events(settings, pattern="user.login") as watcher:
        r = await client.post("/api/2fa/verify", json={"tempToken": body["tempToken"], "code": code_at(enabled["secret"])})
        done = await r.json()
        assert r.status == 200, done
        # The account's earlier password login may still be on its way through the outbox.
        await watcher.wait_for(lambda evs: any(e.userId == account.id and e.data["method"] == "2fa" for e in evs))
    assert done["accessToken"] and done["refreshToken"] and done["expiresIn"] == 900
    login = next(e for e in watcher.events if e.userId == account.id and e.data["method"] == "2fa")
    assert login.data["twoFactorMethod"] == "totp"
    r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {done['accessToken']}"})
    assert r.status == 200
    # The temp token dies after success.
    r = await client.post("/api/2fa/verify", json={"tempToken": body["tempToken"], "code": enabled["backupCodes"][0]})
    assert r.status == 401
    assert await error_code(r) == "TOKEN_USED"


async def test_temp_token_is_not_an_access_token_and_other_credentials_are_ignored(client):
    account = await new_account(client)
    enabled = await enable_totp(client, account.auth)
    key = await create_key(client, account)
    r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": PASSWORD})
    temp = (await r.json())["tempToken"]
    r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {temp}"})
    assert r.status == 401
    # The guide's clients send their API key along; the temp token alone decides.
    r = await client.post("/api/2fa/verify", headers={"X-API-Key": key["apiKey"]},
                          json={"tempToken": temp, "code": code_at(enabled["secret"])})
    assert r.status == 200, await r.text()
    assert "accessToken" in await r.json()


async def test_remember_device_skips_2fa_until_2fa_is_disabled(client):
    account = await new_account(client)
    enabled = await enable_totp(client, account.auth)
    r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": PASSWORD})
    temp = (await r.json())["tempToken"]
    r = await client.post("/api/2fa/verify", json={"tempToken": temp, "code": code_at(enabled["secret"]), "rememberDevice": True})
    device = (await r.json())["deviceToken"]
    login = {"emailOrUsername": account.username, "password": PASSWORD, "deviceToken": device}
    r = await client.post("/api/auth/login", json=login)
    assert "accessToken" in await r.json(), await r.text()
    # Disable 2FA (with the password), enable it again: the old device token no longer skips it.
    r = await client.delete("/api/2fa/methods/totp", json={"password": PASSWORD}, headers=account.auth)
    assert r.status == 200, await r.text()
    await enable_totp(client, account.auth)
    r = await client.post("/api/auth/login", json=login)
    assert (await r.json())["requiresTwoFactor"] is True


async def test_api_key_verifies_its_end_users_codes(client, settings):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    user_id = random_user_id()
    enabled = await enable_totp(client, key, user_id)
    async with watch_events(settings, pattern="2fa.*") as watcher:
        r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": code_at(enabled["secret"])})
        assert r.status == 200, await r.text()
        assert (await r.json())["data"] == {"verified": True, "method": "totp", "userId": user_id}
        r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": "000000"})
        assert r.status == 401
        assert await error_code(r) == "INVALID_CODE"
        await watcher.wait_for(lambda evs: {e.type.value for e in evs} >= {"2fa.verified", "2fa.failed"})
    failed = watcher.of_type("2fa.failed")[0]
    assert failed.data["userId"] == user_id and failed.data["method"] == "totp"
    assert failed.data["reason"] in {"invalid_code", "clock_skew"}
    assert failed.actor.kind == "apiKey"


async def test_a_code_is_accepted_once_even_under_20_concurrent_requests(app_factory, settings):
    """Two API replicas sharing Redis and PostgreSQL; 20 identical requests: exactly one 200,
    and exactly one `2fa.verified` event (the code's use and its event are one statement)."""
    shared_redis = f"{BASE_SETTINGS['REDIS_KEY_PREFIX']}replicas-{random_user_id()}:"
    first = await app_factory(REDIS_KEY_PREFIX=shared_redis)
    second = await app_factory(REDIS_KEY_PREFIX=shared_redis)
    account = await new_account(first)
    key = {"X-API-Key": (await create_key(first, account))["apiKey"]}
    user_id = random_user_id()
    enabled = await enable_totp(first, key, user_id)
    code = code_at(enabled["secret"])
    body = {"userId": user_id, "code": code}
    responses = await asyncio.gather(
        *((first if i % 2 else second).post("/api/2fa/verify", headers=key, json=body) for i in range(20))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 401, 429}
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        bodies = await conn.fetch("SELECT body FROM outbox WHERE type = '2fa.verified'")
    finally:
        await conn.close()
    verified = [e for e in (Event.from_bytes(r["body"]) for r in bodies) if e.data["userId"] == user_id]
    assert len(verified) == 1, verified


async def test_five_failures_lock_the_user_whatever_is_sent(client):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    user_id = random_user_id()
    enabled = await enable_totp(client, key, user_id)
    for _ in range(5):
        r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": "000000"})
        assert r.status == 401
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": code_at(enabled["secret"])})
    assert r.status == 429
    assert await error_code(r) == "TWO_FACTOR_LOCKED"
    assert 0 < int(r.headers["Retry-After"]) <= 900
    # Password logins are counted apart: the account can still log in with its password.
    r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": PASSWORD})
    assert r.status == 200


async def test_parallel_wrong_codes_cannot_slip_past_the_lockout(client):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    user_id = random_user_id()
    await enable_totp(client, key, user_id)
    responses = await asyncio.gather(*(
        client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": f"{i:06d}"}) for i in range(30)
    ))
    statuses = [r.status for r in responses]
    assert statuses.count(401) <= 5, statuses
    assert statuses.count(429) >= 25


async def _attempts_left_after_a_wrong_code(client, key, user_id, secret) -> int:
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": wrong_code(secret)})
    assert r.status == 401, await r.text()
    return (await r.json())["error"]["details"]["attemptsRemaining"]


async def test_only_checked_codes_count_towards_the_lockout(client):
    """The attempt is counted with the API key's rate limit, before the user is read: calls
    refused before any code is checked must not count (a key without the scope, a key over its
    hourly limit, a user id without 2FA yet)."""
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    read_only = {"X-API-Key": (await create_key(client, account, scopes=["2fa:read"]))["apiKey"]}
    limited = {"X-API-Key": (await create_key(client, account, rateLimit=1))["apiKey"]}
    user_id = random_user_id()
    for _ in range(7):  # more than TWOFA_MAX_FAILURES (5), before the user has 2FA
        r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": "123456"})
        assert r.status == 400 and await error_code(r) == "TWO_FACTOR_NOT_ENABLED"
    enabled = await enable_totp(client, key, user_id)
    assert await _attempts_left_after_a_wrong_code(client, key, user_id, enabled["secret"]) == 4
    for _ in range(7):
        r = await client.post("/api/2fa/verify", headers=read_only, json={"userId": user_id, "code": "123456"})
        assert r.status == 403
    assert await _attempts_left_after_a_wrong_code(client, limited, user_id, enabled["secret"]) == 3
    for _ in range(7):
        r = await client.post("/api/2fa/verify", headers=limited, json={"userId": user_id, "code": "123456"})
        assert r.status == 429 and await error_code(r) == "RATE_LIMITED"
    assert await _attempts_left_after_a_wrong_code(client, key, user_id, enabled["secret"]) == 2
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": code_at(enabled["secret"])})
    assert r.status == 200, await r.text()
    # A right code ends the run of failures.
    assert await _attempts_left_after_a_wrong_code(client, key, user_id, enabled["secret"]) == 4


async def test_a_locked_user_is_refused_with_a_user_token_too(client):
    """The lock is the end user's, whichever credential the code comes with: an account locked
    through its tempToken logins stays locked when its own token asks."""
    account = await new_account(client)
    enabled = await enable_totp(client, account.auth)
    for _ in range(5):
        r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": PASSWORD})
        temp = (await r.json())["tempToken"]
        r = await client.post("/api/2fa/verify", json={"tempToken": temp, "code": wrong_code(enabled["secret"])})
        assert r.status == 401
    r = await client.post("/api/2fa/verify", headers=account.auth, json={"code": code_at(enabled["secret"])})
    assert r.status == 429 and await error_code(r) == "TWO_FACTOR_LOCKED"


async def test_backup_code_works_once(client):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    user_id = random_user_id()
    enabled = await enable_totp(client, key, user_id)
    code = enabled["backupCodes"][3].upper().replace("-", " ")  # case and separators don't matter
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": code})
    assert r.status == 200, await r.text()
    assert (await r.json())["method"] == "backup_code"
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": code})
    assert r.status == 401
    r = await client.get("/api/2fa/status", headers=key, params={"userId": user_id})
    assert (await r.json())["backupCodesRemaining"] == 9
    r = await client.post("/api/2fa/backup-codes", headers=key, json={"userId": user_id})
    fresh = (await r.json())["backupCodes"]
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": enabled["backupCodes"][0]})
    assert r.status == 401  # old codes are void
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": fresh[0]})
    assert r.status == 200


async def test_a_code_from_a_skewed_clock_is_refused_with_the_skew(client):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    user_id = random_user_id()
    enabled = await enable_totp(client, key, user_id)
    r = await client.post("/api/2fa/verify", headers=key, json={"userId": user_id, "code": code_at(enabled["secret"], -4)})
    body = await r.json()
    assert r.status == 401
    assert "clock" in body["error"]["message"]
    assert body["error"]["details"]["clockSkewSeconds"] == -120


async def test_end_users_are_isolated_per_owner(client):
    alice, bob = await new_account(client), await new_account(client)
    alice_key = {"X-API-Key": (await create_key(client, alice))["apiKey"]}
    bob_key = {"X-API-Key": (await create_key(client, bob))["apiKey"]}
    enabled = await enable_totp(client, alice_key, "user-123")
    r = await client.get("/api/2fa/status", headers=bob_key, params={"userId": "user-123"})
    assert (await r.json())["enabled"] is False
    r = await client.post("/api/2fa/verify", headers=bob_key, json={"userId": "user-123", "code": code_at(enabled["secret"])})
    assert 400 <= r.status < 500
    r = await client.delete("/api/2fa/methods/totp", headers=bob_key, params={"userId": "user-123"})
    assert r.status == 404
    r = await client.get("/api/2fa/status", headers=alice_key, params={"userId": "user-123"})
    assert (await r.json())["enabled"] is True


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/2fa/verify", {"userId": "u-1", "code": "12345"}, 400, "VALIDATION_ERROR"),
        ("/api/2fa/verify", {"userId": "u-1", "code": "abcdef"}, 400, "VALIDATION_ERROR"),
        ("/api/2fa/verify", {"code": "123456"}, 400, "VALIDATION_ERROR"),
        ("/api/2fa/totp/verify-setup", {"userId": "never-set-up", "code": "123456"}, 409, "SETUP_NOT_STARTED"),
        ("/api/2fa/verify", {"userId": "never-set-up", "code": "123456"}, 400, "TWO_FACTOR_NOT_ENABLED"),
    ],
)
async def test_bad_2fa_input_gets_a_clear_4xx(client, path, body, status, code):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    r = await client.post(path, headers=key, json=body)
    assert r.status == status, await r.text()
    assert await error_code(r) == code


async def test_user_id_is_refused_with_a_user_token_and_required_with_a_key(client):
    account = await new_account(client)
    r = await client.post("/api/2fa/totp/setup", headers=account.auth, json={"userId": "x"})
    assert r.status == 400
    assert (await r.json())["error"]["details"]["fields"][0]["field"] == "userId"
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    r = await client.get("/api/2fa/methods", headers=key)  # the guide's Pattern 1, uncorrected
    assert r.status == 400
    assert "userId" in (await r.json())["error"]["message"]


async def test_setup_twice_replaces_a_pending_secret_but_not_an_enabled_one(client):
    account = await new_account(client)
    r1 = await client.post("/api/2fa/totp/setup", headers=account.auth)
    r2 = await client.post("/api/2fa/totp/setup", headers=account.auth)
    assert (await r1.json())["secret"] != (await r2.json())["secret"]
    await enable_totp(client, account.auth)
    r = await client.post("/api/2fa/totp/setup", headers=account.auth)
    assert r.status == 409
    assert await error_code(r) == "ALREADY_ENABLED"
    r = await client.delete("/api/2fa/methods/sms", headers=account.auth, json={"password": PASSWORD})
    assert r.status == 404


async def test_disabling_needs_the_password_or_a_code_with_a_user_token(client):
    account = await new_account(client)
    await enable_totp(client, account.auth)
    r = await client.delete("/api/2fa/methods/totp", headers=account.auth, json={})
    assert r.status == 400
    r = await client.delete("/api/2fa/methods/totp", headers=account.auth, json={"password": "wrong-password"})
    assert r.status == 401
    r = await client.delete("/api/2fa/methods/totp", headers=account.auth, json={"password": PASSWORD})
    assert r.status == 200
    r = await client.delete("/api/2fa/methods/totp", headers=account.auth, json={"password": PASSWORD})
    assert r.status == 404
    assert await error_code(r) == "METHOD_NOT_ENABLED"


async def test_an_expired_temp_token_is_refused(client, settings):
    account = await new_account(client)
    enabled = await enable_totp(client, account.auth)
    expired = jwt.encode(
        {"sub": account.id, "typ": "temp", "iat": int(time.time()) - 600, "exp": int(time.time()) - 300, "jti": "x"},
        settings.JWT_ACCESS_SECRET, algorithm="HS256",
    )
    r = await client.post("/api/2fa/verify", json={"tempToken": expired, "code": code_at(enabled["secret"])})
    assert r.status == 401
    assert await error_code(r) == "TOKEN_EXPIRED"


async def test_a_temp_token_only_accepts_its_own_accounts_code(client):
    alice, bob = await new_account(client), await new_account(client)
    await enable_totp(client, alice.auth)
    bobs = await enable_totp(client, bob.auth)
    r = await client.post("/api/auth/login", json={"emailOrUsername": alice.username, "password": PASSWORD})
    alice_temp = (await r.json())["tempToken"]
    for code in (code_at(bobs["secret"]), bobs["backupCodes"][0]):
        r = await client.post("/api/2fa/verify", json={"tempToken": alice_temp, "code": code})
        assert r.status == 401
        assert await error_code(r) == "INVALID_CODE"


async def test_disabling_emits_2fa_disabled_with_the_apps_user_id(client, settings):
    account = await new_account(client)
    key = {"X-API-Key": (await create_key(client, account))["apiKey"]}
    user_id = random_user_id()
    await enable_totp(client, key, user_id)
    async with watch_events(settings, pattern="2fa.disabled") as watcher:
        r = await client.delete("/api/2fa/methods/totp", headers=key, params={"userId": user_id})
        assert r.status == 200, await r.text()
        await watcher.wait_for(lambda evs: any(e.userId == user_id for e in evs))
    assert watcher.events[-1].data == {"userId": user_id, "method": "totp"}
    r = await client.get("/api/2fa/status", headers=key, params={"userId": user_id})
    assert await r.json() == {**(body := await r.json()), "enabled": False, "methods": []}
    assert body["backupCodesRemaining"] == 0
