"""The login-with-2FA scenario: `POST /api/auth/login` answers `{requiresTwoFactor, tempToken}`
for an account with TOTP on, then `POST /api/2fa/verify {tempToken, code}` finishes the login.
One sample is that pair, timed from the login's request to the verify's answer, and counts as
right only if the login answered 200 with a tempToken and the verify 200 with an accessToken.

The accounts are made first, through the API: register, log in, `POST /api/2fa/totp/setup` and
`/totp/verify-setup` with the code of the step before the current one (so the current step is
still unused; as run_bench.Verify enrols end users). The API accepts a TOTP code once per
account and step, so each account logs in once per run: the scenario makes a little more
accounts than the run can use at the measured bcrypt rate, and a worker that runs out stops (the
result then has `exhausted_workers`). Each login's code is computed when its tempToken arrives,
for the current step.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pyotp
from loadgen import Sample, closed_loop, send, session

STEP_SECONDS = 30


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    secret: str


async def _make(http: aiohttp.ClientSession, base: str) -> Account:
    username = f"bench2fa_{secrets.token_hex(5)}"
    password = secrets.token_hex(16)
    email = f"{username}@example.com"
    body = {"email": email, "username": username, "password": password}
    async with http.post(f"{base}/api/auth/register", json=body) as r:
        if r.status != 201:
            raise RuntimeError(f"register: {r.status} {await r.text()}")
    body = {"emailOrUsername": username, "password": password}
    async with http.post(f"{base}/api/auth/login", json=body) as r:
        answer = await r.json(content_type=None)
        if r.status != 200:
            raise RuntimeError(f"login: {r.status} {answer}")
    auth = {"Authorization": f"Bearer {answer['data']['accessToken']}"}
    async with http.post(f"{base}/api/2fa/totp/setup", json={}, headers=auth) as r:
        answer = await r.json(content_type=None)
        if r.status != 200:
            raise RuntimeError(f"TOTP setup: {r.status} {answer}")
    secret = answer["data"]["secret"]
    for attempt in range(3):
        code = pyotp.TOTP(secret).generate_otp(int(time.time() // STEP_SECONDS) - 1)
        path = f"{base}/api/2fa/totp/verify-setup"
        async with http.post(path, json={"code": code}, headers=auth) as r:
            if r.status == 200:
                return Account(username, password, secret)
            # 400: the step moved on between the code and the check; again.
            if r.status != 400 or attempt == 2:
                raise RuntimeError(f"TOTP verify-setup: {r.status} {await r.text()}")
    raise AssertionError("unreachable")


async def make_accounts(base: str, count: int, concurrency: int = 16) -> list[Account]:
    made: list[Account] = []

    async def worker(http: aiohttp.ClientSession, todo: Iterator[int]) -> None:
        for _ in todo:
            made.append(await _make(http, base))

    todo = iter(range(count))
    async with session(concurrency, timeout=120) as http:
        await asyncio.gather(*(worker(http, todo) for _ in range(concurrency)))
    return made


def accounts_needed(bcrypt_per_second: float, seconds: float, connections: int) -> int:
    """Enough for a run at the machine's bcrypt rate, with a quarter to spare."""
    return int(bcrypt_per_second * seconds * 1.25) + connections


async def run(
    base: str, accounts: list[Account], connections: int, seconds: float
) -> tuple[list[Sample], dict[str, Any]]:
    todo = iter(accounts)

    async def login(http: aiohttp.ClientSession) -> Sample | None:
        account = next(todo, None)
        if account is None:
            return None
        body = {"emailOrUsername": account.username, "password": account.password}
        first, answer = await send(http, "login-2fa", "POST", f"{base}/api/auth/login", 200, body)
        data = (answer or {}).get("data") if isinstance(answer, dict) else None
        temp = data.get("tempToken") if isinstance(data, dict) else None
        if not first.ok or not temp:
            first.ok = False
            return first
        body = {"tempToken": temp, "code": pyotp.TOTP(account.secret).now()}
        second, answer = await send(http, "login-2fa", "POST", f"{base}/api/2fa/verify", 200, body)
        data = (answer or {}).get("data") if isinstance(answer, dict) else None
        second.ok = second.ok and isinstance(data, dict) and "accessToken" in data
        second.start = first.start
        return second

    return await closed_loop(login, connections, seconds)
