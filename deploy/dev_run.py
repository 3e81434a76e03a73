"""`make run`: prepare a fresh machine and run the API plus the three consumers in the foreground.

Steps: write `.env` with fresh random secrets if there is none; load the settings (the process
environment wins over `.env`); check PostgreSQL, Redis and RabbitMQ, saying in one line each which
one is unreachable and how to start it; create the database if missing; apply migrations; start
the four services with their output prefixed by name. Ctrl-C (or any service dying) stops all.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from pathlib import Path

import aio_pika
import asyncpg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import db  # noqa: E402
from shared.config import Settings, load_settings  # noqa: E402
from shared.migrate import prepare  # noqa: E402

SERVICES = {
    "api": "api",
    "notifier": "notifier",
    "webhook-dispatcher": "webhook_dispatcher",
    "audit": "audit",
}
COLOURS = {"api": "36", "notifier": "35", "webhook-dispatcher": "33", "audit": "32"}
START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    "RabbitMQ": "rabbitmq-server -detached",
}
SECRET_VARIABLES = ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "DEVICE_TOKEN_SECRET", "ENCRYPTION_KEY")


def ensure_env_file(path: Path) -> bool:
    """Write `.env` from `.env.example` with fresh secrets; False when one already exists."""
    if path.exists():
        return False
    example = ROOT / ".env.example"
    lines = example.read_text().splitlines() if example.exists() else []
    out = []
    for line in lines:
        name = line.split("=", 1)[0].strip()
        if name in SECRET_VARIABLES:
            line = f"{name}={secrets.token_hex(64)}"
        out.append(line)
    for name in SECRET_VARIABLES:
        if not any(line.startswith(f"{name}=") for line in out):
            out.append(f"{name}={secrets.token_hex(64)}")
    path.write_text("\n".join(out) + "\n")
    path.chmod(0o600)
    return True


async def _check_postgres(settings: Settings) -> None:
    conn = await asyncpg.connect(db.server_url(settings.DATABASE_URL, "postgres"), timeout=3)
    await conn.close()


async def _check_redis(settings: Settings) -> None:
    client = aioredis.Redis(
        host=settings.REDIS_HOST, port=settings.REDIS_PORT, password=settings.REDIS_PASSWORD,
        socket_connect_timeout=3,
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _check_rabbitmq(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.RABBITMQ_URL, timeout=3)
    await connection.close()


async def check_dependencies(settings: Settings) -> list[str]:
    """One line per unreachable dependency, with the command that starts it."""
    checks = {
        "PostgreSQL": (_check_postgres, settings.DATABASE_URL.rsplit("@", 1)[-1]),
        "Redis": (_check_redis, f"{settings.REDIS_HOST}:{settings.REDIS_PORT}"),
        "RabbitMQ": (_check_rabbitmq, settings.RABBITMQ_URL.rsplit("@", 1)[-1]),
    }
    results = await asyncio.gather(
        *(asyncio.wait_for(fn(settings), 5) for fn, _ in checks.values()), return_exceptions=True
    )
    problems = []
    for (name, (_, where)), result in zip(checks.items(), results, strict=True):
        if isinstance(result, BaseException):
            problems.append(
                f"{name} is not reachable at {where} ({type(result).__name__}); "
                f"start it with: {START_HINTS[name]}"
            )
    return problems


async def _pipe(name: str, stream: asyncio.StreamReader) -> None:
    colour = COLOURS[name] if sys.stdout.isatty() else ""
    label = f"\033[{colour}m{name:<18}|\033[0m " if colour else f"{name:<18}| "
    while line := await stream.readline():
        sys.stdout.write(label + line.decode(errors="replace"))
        sys.stdout.flush()


async def run_services() -> int:
    procs: dict[str, asyncio.subprocess.Process] = {}
    for name, module in SERVICES.items():
        procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            # Own session: Ctrl-C reaches only this launcher, which stops each service once.
            start_new_session=True,
        )
    pipes = [asyncio.create_task(_pipe(n, p.stdout)) for n, p in procs.items() if p.stdout]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waits = {asyncio.create_task(p.wait()): n for n, p in procs.items()}
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
    exited = [waits[t] for t in done if t in waits]
    if exited:
        print(f"{exited[0]} exited; stopping the others", flush=True)
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs.values())), 15)
    except TimeoutError:
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
    await asyncio.gather(*pipes, return_exceptions=True)
    return 1 if exited else 0


async def main() -> int:
    if ensure_env_file(ROOT / ".env"):
        print("wrote .env with fresh random secrets")
    settings = load_settings()
    problems = await check_dependencies(settings)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    applied = await prepare(settings)
    print(f"database {db.database_name(settings.DATABASE_URL)}: {len(applied)} migration(s) applied, up to date")
    if "--prepare-only" in sys.argv:
        return 0
    print(f"starting api on :{settings.PORT} and the notifier, webhook-dispatcher and audit consumers")
    return await run_services()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
