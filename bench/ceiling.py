"""The ceiling of the verify benchmark (issue 8): a bare aiohttp app whose one handler does the
least a verification needs, and nothing else.

`POST /api/2fa/verify` with `{userId, code}` (the API's path, so bench/lua/verify.lua drives it
unchanged; the X-API-Key header is ignored): one PostgreSQL round trip (the user's secret, by
primary key, with asyncpg's prepared-statement cache, on a pool made by `shared.db.create_pool`
like the API's), one Redis round trip (INCR of the user's attempt counter, with `shared.cache` like
the API's), then the code checked against the current step ±1 (pyotp, microseconds). Answers
200 `{"userId", "valid": true}` for a right code and 401 with `"valid": false` for a wrong one,
like the API's statuses, 404 for an unknown user, 400 for a body it cannot read. No middlewares,
no envelope, no API key, no lockout, no replay guard, no outbox: a right code can be sent again.

It runs the API's worker model (services/api/api/__main__.py): one process, or with `--workers`
W > 1 one listening socket shared by W forked workers, each with its own pool and Redis client.

Its data: database `tfa_bench_ceiling` (table `ceiling_users`) on the benchmark's PostgreSQL
(DATABASE_URL's server part) and Redis keys `tfa-bench-ceiling:*` (REDIS_* from the
environment), made by `setup` and removed by `teardown`.

From run_bench.py:

    from ceiling import Ceiling
    ceiling = Ceiling()
    ceiling.setup([(user_id, base32_secret), ...])
    ceiling.start(3108, workers=1, log=log_dir / "ceiling.log")   # workers: the API's API_WORKERS
    ceiling.pids()             # the process and its workers, for CpuMeter
    # wrk ... -s bench/lua/verify.lua http://127.0.0.1:3108/api/2fa/verify
    ceiling.stop(); ceiling.teardown()

By hand: `.venv/bin/python bench/ceiling.py setup --users 100` (random secrets, kept in
bench/.peers/ceiling-users.tsv), `.venv/bin/python bench/ceiling.py --port 3108 --workers 1`,
`.venv/bin/python bench/ceiling.py teardown`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import pyotp
from aiohttp import web
from peers import (
    HOST,
    RUNTIME,
    database_url,
    ensure_port_free,
    process_tree,
    start_server,
    stop_process,
)

from api.__main__ import serve_workers
from shared import db
from shared.cache import Cache, create_cache
from shared.config import Settings

DATABASE = "tfa_bench_ceiling"
REDIS_KEY_PREFIX = "tfa-bench-ceiling:"
VERIFY_PATH = "/api/2fa/verify"
LIVE_PATH = "/api/health/live"  # also what verify.lua sends when a thread's pairs run out
USERS_FILE = RUNTIME / "ceiling-users.tsv"
REDIS_SETTINGS = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD")
UNUSED_SECRETS = (
    "JWT_ACCESS_SECRET",
    "JWT_REFRESH_SECRET",
    "DEVICE_TOKEN_SECRET",
    "ENCRYPTION_KEY",
)

CREATE_SQL = "CREATE TABLE ceiling_users (user_id text PRIMARY KEY, secret text NOT NULL)"
SECRET_SQL = "SELECT secret FROM ceiling_users WHERE user_id = $1"

POOL = web.AppKey("pool", asyncpg.Pool)
CACHE = web.AppKey("cache", Cache)


def settings() -> Settings:
    """The shared Settings (the API's pool size and Redis client), pointed at the ceiling's
    database and key prefix; the secrets are unused but required."""
    fields: dict[str, Any] = {k: v for k, v in os.environ.items() if k in REDIS_SETTINGS}
    fields |= {name: secrets.token_hex(32) for name in UNUSED_SECRETS}
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        DATABASE_URL=database_url(DATABASE),
        REDIS_KEY_PREFIX=REDIS_KEY_PREFIX,
        **fields,
    )


# --------------------------------------------------------------------------- the app


async def verify(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        user_id, code = str(body["userId"]), str(body["code"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "BAD_REQUEST"}, status=400)
    async with request.app[POOL].acquire() as conn:
        secret = await conn.fetchval(SECRET_SQL, user_id)
    cache = request.app[CACHE]
    await cache.client.incr(cache.key("attempts", user_id))
    if secret is None:
        return web.json_response({"error": "NOT_FOUND"}, status=404)
    valid = pyotp.TOTP(secret).verify(code, valid_window=1)
    return web.json_response({"userId": user_id, "valid": valid}, status=200 if valid else 401)


async def live(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(config: Settings) -> web.Application:
    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with db.create_pool(config) as pool, create_cache(config) as cache:
            app[POOL], app[CACHE] = pool, cache
            yield

    app = web.Application()  # no middlewares
    app.cleanup_ctx.append(resources)
    app.router.add_post(VERIFY_PATH, verify)
    app.router.add_get(LIVE_PATH, live)
    return app


def serve(port: int, workers: int) -> int:
    """As `python -m api` does: one process, or `workers` forked onto one listening socket."""
    config = settings()
    run = {"access_log": None, "print": None, "shutdown_timeout": 10}
    if workers == 1:
        web.run_app(create_app(config), host=HOST, port=port, **run)  # type: ignore[arg-type]
        return 0
    return serve_workers(
        HOST, port, workers, lambda sock: web.run_app(create_app(config), sock=sock, **run)  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- for run_bench.py


class Ceiling:
    """The ceiling's data and process; see the module's docstring."""

    def __init__(self) -> None:
        self.settings = settings()
        self.proc: subprocess.Popen[bytes] | None = None

    def setup(self, users: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """A fresh database holding each (userId, base32 secret); no Redis keys yet."""
        started = time.monotonic()
        rows = list(users)
        asyncio.run(self._setup(rows))
        return {"users": len(rows), "seconds": round(time.monotonic() - started, 1)}

    async def _setup(self, rows: list[tuple[str, str]]) -> None:
        await self._drop()
        await db.ensure_database(self.settings.DATABASE_URL)
        conn = await asyncpg.connect(self.settings.DATABASE_URL, timeout=5)
        try:
            await conn.execute(CREATE_SQL)
            await conn.copy_records_to_table("ceiling_users", records=rows)
            await conn.execute("ANALYZE ceiling_users")
        finally:
            await conn.close()

    def start(self, port: int, workers: int = 1, log: Path | None = None) -> None:
        """Serve on HOST:`port` in a process of its own; returns once it answers."""
        ensure_port_free(port)
        cmd = [sys.executable, __file__, "serve", "--port", str(port), "--workers", str(workers)]
        self.proc = start_server(
            cmd, log or RUNTIME / "ceiling.log", f"http://{HOST}:{port}{LIVE_PATH}"
        )

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def teardown(self) -> None:
        """Stop it, drop its database and delete its Redis keys."""
        self.stop()
        asyncio.run(self._drop())

    async def _drop(self) -> None:
        await db.drop_database(self.settings.DATABASE_URL)
        async with create_cache(self.settings) as cache:
            keys = [
                k async for k in cache.client.scan_iter(match=f"{REDIS_KEY_PREFIX}*", count=1000)
            ]
            for i in range(0, len(keys), 1000):
                await cache.client.delete(*keys[i : i + 1000])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", nargs="?", default="serve", choices=("serve", "setup", "teardown")
    )
    parser.add_argument("--port", type=int, default=3108, help="serve: the port (default 3108)")
    parser.add_argument("--workers", type=int, default=1, help="serve: processes (default 1)")
    parser.add_argument("--users", type=int, default=100, help="setup: users (default 100)")
    args = parser.parse_args()
    if args.command == "serve":
        return serve(args.port, max(1, args.workers))
    if args.command == "setup":
        users = [
            (f"bench-{i:05d}", base64.b32encode(secrets.token_bytes(20)).decode())
            for i in range(args.users)
        ]
        print(Ceiling().setup(users))
        USERS_FILE.parent.mkdir(parents=True, exist_ok=True)
        USERS_FILE.write_text("".join(f"{u}\t{s}\n" for u, s in users))
        print(f"users and secrets: {USERS_FILE}")
        return 0
    Ceiling().teardown()
    USERS_FILE.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
