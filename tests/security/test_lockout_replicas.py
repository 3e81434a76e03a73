"""Brute force of 2FA codes spread over three API replicas and many connections at once: the
lockout lives in the shared Redis, so no more than `TWOFA_MAX_FAILURES` codes are ever checked,
whichever replica or connection a guess arrives on, and then the right code is refused too."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api_client import PASSWORD, create_key, new_account
from tests.ids import random_user_id
from tests.security.helpers import events_about, one_connection_per_request, outcome, start_replicas
from tests.totp_helpers import code_at, enable_totp

BURST = 60
VERIFY = "/api/2fa/verify"


def wrong_codes(secret: str, count: int) -> list[str]:
    """Distinct six-digit guesses, none of them valid in any step near now."""
    valid = {code_at(secret, step) for step in range(-2, 3)}
    guesses = (f"{n:06d}" for n in range(100_000, 1_000_000, 7919))
    return [c for c, _ in zip((c for c in guesses if c not in valid), range(count))]


Outcome = tuple[int, str | None]
LOGIN = "/api/auth/login"
CHECKED, LOCKED = (401, "INVALID_CODE"), (429, "TWO_FACTOR_LOCKED")


async def burst(
    replicas: list[Any], bodies: list[dict[str, Any]], headers: dict[str, str]
) -> list[Outcome]:
    """Every body at once, round-robin over the replicas, each on its own TCP connection."""
    async with one_connection_per_request() as session:

        async def send(i: int, body: dict[str, Any]) -> Outcome:
            url = replicas[i % len(replicas)].make_url(VERIFY)
            async with session.post(url, json=body, headers=headers) as r:
                return await outcome(r)

        return list(await asyncio.gather(*(send(i, b) for i, b in enumerate(bodies))))


async def assert_locked_everywhere(
    replicas: list[Any], body: dict[str, Any], headers: dict[str, str]
) -> None:
    """The right code is refused on every replica, with the lock's Retry-After."""
    for replica in replicas:
        r = await replica.post(VERIFY, json=body, headers=headers)
        assert await outcome(r) == LOCKED
        assert 0 < int(r.headers["Retry-After"]) <= 900


async def test_api_key_burst_over_replicas_checks_at_most_the_limit_then_locks_everywhere(
    app_factory, settings, db
):
    replicas = await start_replicas(app_factory, 3)
    account = await new_account(replicas[0])
    key = {"X-API-Key": (await create_key(replicas[1], account))["apiKey"]}
    user_id = random_user_id()
    secret = (await enable_totp(replicas[2], key, user_id))["secret"]

    guesses = wrong_codes(secret, BURST)
    outcomes = await burst(replicas, [{"userId": user_id, "code": c} for c in guesses], key)

    assert outcomes.count(CHECKED) == settings.TWOFA_MAX_FAILURES, outcomes
    assert sorted(set(outcomes)) == [CHECKED, LOCKED], outcomes
    # What the API really evaluated: one 2fa.failed event per checked code, no more.
    failed = await events_about(db, "2fa.failed", account.id, user_id)
    assert len(failed) == settings.TWOFA_MAX_FAILURES
    assert len(await events_about(db, "security.lockout", account.id, user_id)) == 1
    await assert_locked_everywhere(replicas, {"userId": user_id, "code": code_at(secret)}, key)
    assert await events_about(db, "2fa.verified", account.id, user_id) == []


async def test_temp_token_burst_over_replicas_checks_at_most_the_limit_then_locks_everywhere(
    app_factory, settings, db
):
    """The login flow: an attacker who knows the password logs in on each replica for temp
    tokens and sprays guesses with all of them at once."""
    replicas = await start_replicas(app_factory, 3)
    account = await new_account(replicas[0])
    secret = (await enable_totp(replicas[0], account.auth))["secret"]
    password_login = {"emailOrUsername": account.username, "password": PASSWORD}
    temps = []
    for replica in replicas * 2:
        r = await replica.post(LOGIN, json=password_login)
        assert r.status == 200, await r.text()
        temps.append((await r.json())["tempToken"])

    guesses = wrong_codes(secret, BURST)
    bodies = [{"tempToken": temps[i % len(temps)], "code": c} for i, c in enumerate(guesses)]
    outcomes = await burst(replicas, bodies, {})

    assert outcomes.count(CHECKED) == settings.TWOFA_MAX_FAILURES, outcomes
    assert sorted(set(outcomes)) == [CHECKED, LOCKED], outcomes
    failed = await events_about(db, "2fa.failed", account.id, account.id)
    assert len(failed) == settings.TWOFA_MAX_FAILURES
    # A fresh login still gets a temp token (the password is right), but no code gets through.
    r = await replicas[2].post(LOGIN, json=password_login)
    fresh = (await r.json())["tempToken"]
    await assert_locked_everywhere(replicas, {"tempToken": fresh, "code": code_at(secret)}, {})
    # Nor does the account's own token turn 2FA off with a code while locked.
    body = {"code": code_at(secret)}
    r = await replicas[1].delete("/api/2fa/methods/totp", json=body, headers=account.auth)
    assert await outcome(r) == LOCKED
    logins = await events_about(db, "user.login", account.id, account.id)
    assert [e for e in logins if e["data"]["method"] == "2fa"] == []


async def test_backup_code_guesses_count_against_the_same_lockout(app_factory, settings):
    """Backup codes are a second guessable secret: guesses at them share the TOTP counter, so
    mixing the two kinds does not double the attempts."""
    replicas = await start_replicas(app_factory, 2)
    account = await new_account(replicas[0])
    key = {"X-API-Key": (await create_key(replicas[0], account))["apiKey"]}
    user_id = random_user_id()
    enabled = await enable_totp(replicas[0], key, user_id)
    letters = "abcdefghjkmnpqrstuvwxyz"  # the backup codes' own alphabet, so each is well-formed
    numeric = wrong_codes(enabled["secret"], 10)
    guesses = [f"{letters[n]}bcd-efgh" if n % 2 else numeric[n // 2] for n in range(20)]
    outcomes = await burst(replicas, [{"userId": user_id, "code": c} for c in guesses], key)
    assert outcomes.count(CHECKED) == settings.TWOFA_MAX_FAILURES, outcomes
    assert sorted(set(outcomes)) == [CHECKED, LOCKED], outcomes
    await assert_locked_everywhere(replicas, {"userId": user_id, "code": enabled["backupCodes"][0]}, key)
