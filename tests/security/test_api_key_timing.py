"""Guessing API keys: a wrong key gets the same 401, byte for byte, whichever part of it is wrong,
and in the same time, so neither the answer nor its timing says how close a guess came.

Keys are looked up by their SHA-256 digest (`api/domain/api_keys.py`): no prefix lookup followed
by a comparison whose duration depends on the guess. The timing check samples every kind of
guess in shuffled rounds on one keep-alive connection, so that load from elsewhere on the machine
falls on all kinds alike, and compares medians of paired differences with a bound far above the
noise of a busy machine but far below the cost of a password-hash comparison or an extra query
on a slow path.
"""

from __future__ import annotations

import json
import random
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

from tests.api_client import create_key, new_account

ME = "/api/auth/me"
ROUNDS = 150
# A guess whose handling costs one more database round trip or a hash comparison costs well
# over this; scheduling noise on a shared two-core machine, after pairing, stays well under it.
WRONG_VS_WRONG_MS = 0.75
# The right key does more (rate-limit counters, the handler's query): only gross differences,
# such as a deliberate password-hash-cost comparison, would show here.
RIGHT_VS_WRONG_MS = 15.0


MALFORMED = ["tfa_", "tfa_!!", "tfa_" + "A" * 500, "not-a-key", "eyJhbGciOi.x.y"]


def _flip(ch: str) -> str:
    return "A" if ch != "A" else "B"


def guesses(key: str) -> dict[str, Callable[[], str]]:
    """Kinds of wrong key, each a fresh guess per call, from nearly right to nonsense."""
    return {
        "last character wrong": lambda: key[:-1] + _flip(key[-1]),
        "right prefix, wrong secret": lambda: key[:12] + secrets.token_urlsafe(32)[: len(key) - 12],
        "unknown key": lambda: "tfa_" + secrets.token_urlsafe(32),
        "malformed": lambda: random.choice(MALFORMED),
    }


async def timed(client: Any, key: str) -> tuple[float, int, bytes]:
    """Milliseconds from sending to the last byte of the answer, its status and body."""
    started = time.perf_counter()
    r = await client.get(ME, headers={"X-API-Key": key})
    body = await r.read()
    return (time.perf_counter() - started) * 1000, r.status, body


async def test_wrong_keys_get_one_and_the_same_401_whatever_part_is_wrong(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["user:read"]))["apiKey"]
    bodies, outcomes = set(), {}
    for kind, guess in guesses(key).items():
        for n in range(6):
            wrong = guess()
            # A bearer credential without the key prefix is taken for a user token (the contract).
            bearer = n % 2 and wrong.startswith("tfa_")
            headers = {"Authorization": f"Bearer {wrong}"} if bearer else {"X-API-Key": wrong}
            r = await client.get(ME, headers=headers)
            outcomes[(kind, wrong[:16], next(iter(headers)))] = r.status
            bodies.add(await r.read())
            assert "X-RateLimit-Limit" not in r.headers, kind
    assert set(outcomes.values()) == {401}, outcomes
    assert len(bodies) == 1, bodies
    error = json.loads(bodies.pop())["error"]
    assert error == {"code": "INVALID_API_KEY", "message": "The API key is invalid"}


async def test_a_user_token_in_the_api_key_header_is_just_a_wrong_key(client):
    """X-API-Key carries keys only: a token there is looked up as a key (and not found)."""
    account = await new_account(client)
    r = await client.get(ME, headers={"X-API-Key": account.access_token})
    assert (r.status, json.loads(await r.text())["error"]["code"]) == (401, "INVALID_API_KEY")


async def test_response_time_does_not_depend_on_how_close_a_wrong_key_is(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["user:read"], rateLimit=1_000_000))["apiKey"]
    kinds = {"right key": lambda: key, **guesses(key)}
    for make in kinds.values():  # warm-up: connection, statement caches, code paths
        await timed(client, make())
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(ROUNDS):
        order = list(kinds)
        random.shuffle(order)
        for kind in order:
            ms, status, _ = await timed(client, kinds[kind]())
            assert status == (200 if kind == "right key" else 401), kind
            samples[kind].append(ms)

    medians = {kind: round(statistics.median(s), 3) for kind, s in samples.items()}
    wrong = [k for k in kinds if k != "right key"]
    # Paired by round: the difference between two kinds measured moments apart.
    paired = {
        (a, b): statistics.median(x - y for x, y in zip(samples[a], samples[b]))
        for a in wrong for b in wrong if a < b
    }
    assert all(abs(d) <= WRONG_VS_WRONG_MS for d in paired.values()), (medians, paired)
    right_vs_wrong = [
        statistics.median(x - y for x, y in zip(samples["right key"], samples[k])) for k in wrong
    ]
    assert all(abs(d) <= RIGHT_VS_WRONG_MS for d in right_vs_wrong), (medians, right_vs_wrong)
