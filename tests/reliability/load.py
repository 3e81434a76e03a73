"""Steady load on the API for the fault runs: a mix of requests that each produce one event,
sent at a fixed rate (bounded in time and count) by one aiohttp client on loopback.

The mix, in every ten requests: seven wrong codes on `POST /api/2fa/verify` (401, `2fa.failed`
for that user), two logins (200, `user.login`), one email setup for a new user (200, a
`notification.email` command for the notifier). Every answer is recorded with its start and end
time. The expected status is an acknowledgement: the API says the event is committed. A 503 or
no answer leaves it open (the event may or may not exist); any other status is a finding.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.api_client import create_key, new_account
from tests.ids import random_email, random_user_id
from tests.totp_helpers import enable_totp, wrong_code

# Event types the tenant's webhook subscribes to: every deliverable type the load produces.
SUBSCRIBED = ["2fa.enabled", "2fa.failed", "user.login"]
MIX = ["verify"] * 7 + ["login"] * 2 + ["email"]
# Per request kind: the status that acknowledges it, and the event it commits.
EXPECTED = {
    "verify": (401, "2fa.failed"),
    "login": (200, "user.login"),
    "email": (200, "notification.email"),
}


@dataclass
class Tenant:
    """One owner account with an API key, TOTP users and a webhook to the receiver."""

    owner_id: str
    login: dict[str, str]
    key: dict[str, str]
    users: list[tuple[str, str]]  # (userId, TOTP secret)
    webhook_id: str

    @classmethod
    async def create(
        cls, session: aiohttp.ClientSession, receiver_url: str, users: int = 10
    ) -> Tenant:
        """Set it up through the public API (`session` has the API's base URL)."""
        account = await new_account(session)  # type: ignore[arg-type]
        key = await create_key(session, account, rateLimit=1_000_000)  # type: ignore[arg-type]
        headers = {"X-API-Key": key["apiKey"]}
        r = await session.post(
            "/api/webhooks", json={"url": receiver_url, "events": SUBSCRIBED}, headers=account.auth
        )
        assert r.status == 201, await r.text()
        webhook_id = (await r.json())["data"]["id"]
        enrolled = []
        for _ in range(users):
            user_id = random_user_id()
            totp = await enable_totp(session, headers, user_id)  # type: ignore[arg-type]
            enrolled.append((user_id, totp["secret"]))
        login = {"emailOrUsername": account.username, "password": account.password}
        return cls(account.id, login, headers, enrolled, webhook_id)


@dataclass(frozen=True)
class Outcome:
    """One request: whose, when it ran, and its status (None: no answer, see `error`)."""

    kind: str
    user_id: str
    started: float
    ended: float
    status: int | None
    error: str | None = None
    email: str | None = None

    @property
    def event(self) -> tuple[str, str]:
        """The event (type, userId) this request commits when it succeeds."""
        return EXPECTED[self.kind][1], self.user_id

    @property
    def acknowledged(self) -> bool:
        return self.status == EXPECTED[self.kind][0]

    @property
    def uncertain(self) -> bool:
        """A 503 or no answer: the event may or may not have been committed."""
        return self.status is None or self.status == 503


@dataclass
class Load:
    """`async with Load(...)`: requests at `rate` per second until the block ends (at most
    `max_seconds`), at most `concurrency` in flight: a stalled API slows the sender down."""

    base_url: str
    tenant: Tenant
    rate: float = 50.0
    concurrency: int = 64
    max_seconds: float = 120.0
    timeout: float = 15.0
    outcomes: list[Outcome] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        pending: set[asyncio.Task[None]] = set()
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        session = aiohttp.ClientSession(self.base_url, connector=connector, timeout=timeout)
        async with session:
            started = time.monotonic()
            n = 0
            while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
                await slots.acquire()
                task = asyncio.create_task(self._one(session, MIX[n % len(MIX)], n, slots))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
                delay = started + n / self.rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._stop.wait()
            if pending:
                await asyncio.wait(pending)

    async def _one(
        self, session: aiohttp.ClientSession, kind: str, n: int, slots: asyncio.Semaphore
    ) -> None:
        path, body, user_id, email = self._request(kind, n)
        headers = {} if kind == "login" else self.tenant.key
        started = time.monotonic()
        status, error = None, None
        try:
            async with session.post(path, json=body, headers=headers) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = type(exc).__name__
        finally:
            slots.release()
        ended = time.monotonic()
        self.outcomes.append(Outcome(kind, user_id, started, ended, status, error, email))

    def _request(self, kind: str, n: int) -> tuple[str, dict[str, Any], str, str | None]:
        if kind == "verify":
            user_id, secret = self.tenant.users[n % len(self.tenant.users)]
            return "/api/2fa/verify", {"userId": user_id, "code": wrong_code(secret)}, user_id, None
        if kind == "login":
            return "/api/auth/login", self.tenant.login, self.tenant.owner_id, None
        user_id, email = random_user_id(), random_email()
        return "/api/2fa/email/setup", {"userId": user_id, "email": email}, user_id, email

    def acknowledged(self) -> Counter[tuple[str, str]]:
        """Acknowledged requests per (event type, userId)."""
        return Counter(o.event for o in self.outcomes if o.acknowledged)

    def uncertain(self) -> Counter[tuple[str, str]]:
        """503s and unanswered requests per (event type, userId)."""
        return Counter(o.event for o in self.outcomes if o.uncertain)
