"""The login storm (issue 8): a mix of the API's busiest requests at once, while the webhook
dispatcher and the audit consumer must keep up, and the health endpoint must stay fast.

- `connections` closed-loop workers (bench/loadgen.py) each pick their next request by weight:
  80% `POST /api/2fa/verify` with the API key and a right code (the large pool's users, each
  once, codes for one step as run_bench.Verify.right_pairs makes them), 15% `POST
  /api/auth/login` of the bench account (no 2FA, BCRYPT_ROUNDS=12: one bcrypt check each), 5%
  `POST /api/2fa/totp/setup` for a new userId (a new secret and its QR code). Latency and
  errors are kept per kind.
- Meanwhile `GET /api/health/live` is sent open-loop at `health_rate` per second (20) from the
  same event loop: its p99 is the issue's "health under 20 ms during a login storm".
- The bench account has a webhook (2fa.verified, 2fa.failed, user.login) to the receiver of
  bench/webhooks_bench.py, created just before the storm, so the dispatcher delivers every
  verify and login. Every 0.5 s the outbox rows not yet relayed and the messages waiting in the
  dispatcher's and the audit consumer's queues are sampled. After the storm (`settle`, called
  once the API has finished the requests the workers abandoned at the end), the script waits
  until the backlogs are empty and the receiver has every event of those types written since
  the storm began (at most `drain_limit` s after its end), and reports how long that took.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from itertools import count
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import loadgen
import run_bench as rb
import webhooks_bench as wb

from shared.config import Settings

WEIGHTS = {"verify": 0.80, "login": 0.15, "setup": 0.05}
EVENTS = ("2fa.verified", "2fa.failed", "user.login")
EVENTS_SQL = "SELECT count(*) FROM outbox WHERE type = ANY($1::text[]) AND created_at >= $2"


class Storm:
    """The receiver, the webhook and the run; see the module's docstring."""

    def __init__(self, base: str, settings: Settings, log_dir: Path) -> None:
        self.base = base
        self.settings = settings
        self.log_dir = log_dir
        self.receiver: wb.Receiver | None = None

    def prepare(self, token: str) -> None:
        self.receiver = wb.Receiver(self.log_dir)
        hook = {"url": f"{self.receiver.url}{wb.HOOK_PATH}", "events": list(EVENTS)}
        auth = {"Authorization": f"Bearer {token}"}
        status, body = rb.http("POST", f"{self.base}/api/webhooks", hook, headers=auth)
        if status != 201:
            raise RuntimeError(f"webhook creation failed: {status} {body}")

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None

    def run(
        self,
        *,
        api_key: str,
        account: dict[str, str],
        pairs: list[tuple[str, str]],
        connections: int,
        seconds: float,
        health_rate: float = 20,
        weights: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        assert self.receiver is not None
        self.receiver.reset(keep_bodies=False)
        work = self._run(
            api_key, account, pairs, connections, seconds, health_rate, weights or WEIGHTS
        )
        return asyncio.run(work)

    def settle(self, run: dict[str, Any], limit: float = 60) -> dict[str, Any]:
        """Wait until the backlogs are empty and every event of the storm has reached the
        receiver, at most `limit` s after the storm's end; what was left, and when."""
        return asyncio.run(self._settle(run, limit))

    async def _run(
        self,
        api_key: str,
        account: dict[str, str],
        pairs: list[tuple[str, str]],
        connections: int,
        seconds: float,
        health_rate: float,
        weights: dict[str, float],
    ) -> dict[str, Any]:
        base, key = self.base, {"X-API-Key": api_key}
        todo = iter(pairs)
        setups = count()
        prefix = f"storm-{secrets.token_hex(3)}"
        login_body = {"emailOrUsername": account["username"], "password": account["password"]}
        kinds, shares = list(weights), list(weights.values())

        async def one(http: aiohttp.ClientSession) -> loadgen.Sample | None:
            kind = random.choices(kinds, weights=shares)[0]
            if kind == "verify":
                pair = next(todo, None)
                if pair is None:
                    return None  # the pairs ran out: this worker stops (reported)
                body: dict[str, str] = {"userId": pair[0], "code": pair[1]}
                url, headers = f"{base}/api/2fa/verify", key
            elif kind == "login":
                body, url, headers = login_body, f"{base}/api/auth/login", {}
            else:
                body = {"userId": f"{prefix}-{next(setups)}"}
                url, headers = f"{base}/api/2fa/totp/setup", key
            sample, _ = await loadgen.send(http, kind, "POST", url, 200, body, headers)
            return sample

        conn = await asyncpg.connect(self.settings.DATABASE_URL)
        try:
            began = await conn.fetchval("SELECT now()")
            stop = asyncio.Event()
            watcher = asyncio.create_task(self._watch(conn, stop))
            health = asyncio.create_task(
                loadgen.open_loop("health", f"{base}/api/health/live", health_rate, stop)
            )
            samples, run = await loadgen.closed_loop(one, connections, seconds)
            ended = time.monotonic()
            stop.set()
            backlog, health_samples = await watcher, await health
        finally:
            await conn.close()
        at_end = backlog[-1] if backlog else {}
        summary = loadgen.summarise(samples, run["seconds"])
        keys = [k for k in backlog[0] if k != "t"] if backlog else []
        return {
            "began_db": began,
            "ended": ended,
            "weights": weights,
            "connections": connections,
            "seconds": round(run["seconds"], 2),
            "pairs": len(pairs),
            "exhausted_workers": run["exhausted_workers"],
            "result": summary,
            "by_kind": loadgen.by_kind(samples, run["seconds"]),
            "health": loadgen.summarise(health_samples, run["seconds"]),
            "health_rate": health_rate,
            "backlog": {
                "max": {k: max(s[k] for s in backlog) for k in keys},
                "at_end": {k: at_end.get(k) for k in keys},
                "by_second": [
                    {k: s[k] for k in keys} | {"second": round(s["t"] - run["started"], 1)}
                    for s in backlog[::2]
                ],
            },
        }

    async def _settle(self, run: dict[str, Any], limit: float) -> dict[str, Any]:
        assert self.receiver is not None
        conn = await asyncpg.connect(self.settings.DATABASE_URL)
        try:
            while True:
                left = await rb.event_backlog(self.settings)
                events = await conn.fetchval(EVENTS_SQL, list(EVENTS), run["began_db"])
                received = self.receiver.stats()
                waited = time.monotonic() - run["ended"]
                done = not any(left.values()) and received["distinct"] >= events
                if done or waited > limit:
                    break
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        return {
            "drain_seconds": round(waited, 1),
            "drained": done,
            "left": left,
            "webhooks": {
                "events": events,
                "received_distinct": received["distinct"],
                "received_requests": received["requests"],
            },
        }

    async def _watch(self, conn: asyncpg.Connection, stop: asyncio.Event) -> list[dict[str, Any]]:
        """A sample of the backlogs every 0.5 s until `stop`."""
        samples = []
        connection = await aio_pika.connect(self.settings.RABBITMQ_URL, timeout=5)
        try:
            channel = await connection.channel()
            while not stop.is_set():
                found: dict[str, Any] = {"t": time.monotonic()}
                found["outbox"] = await conn.fetchval(rb.UNSENT_SQL)
                for name, queue in rb.EVENT_QUEUES.items():
                    try:
                        declared = await channel.declare_queue(queue, passive=True)
                        found[name] = declared.declaration_result.message_count or 0
                    except aio_pika.exceptions.ChannelClosed:
                        channel = await connection.channel()
                        found[name] = 0  # not declared (yet)
                samples.append(found)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
        finally:
            await connection.close()
        return samples
