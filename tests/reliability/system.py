"""The whole system as `make run` starts it (the API and the three consumers, each `python -m
<package>`), pointed at the private servers of `dependencies.py`, with its processes at hand to
`kill -9` and start again, and its readiness (`/api/health/ready` of every service) to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from shared.config import Settings
from shared.migrate import prepare

from tests.conftest import make_settings
from tests.fakes.smtp_server import FakeSmtp, smtp_server
from tests.ports import free_port
from tests.reliability.dependencies import Dependencies
from tests.webhooks.helpers import settings_env

MODULES = {
    "api": "api",
    "notifier": "notifier",
    "webhook-dispatcher": "webhook_dispatcher",
    "audit": "audit",
}
HEALTH_PORT_SETTING = {
    "api": "PORT",
    "notifier": "NOTIFIER_HEALTH_PORT",
    "webhook-dispatcher": "WEBHOOK_DISPATCHER_HEALTH_PORT",
    "audit": "AUDIT_HEALTH_PORT",
}
# Retries cover an outage of half a minute (production's defaults cover minutes), so a message
# that met a stopped database is retried, not dead-lettered, and the runs stay short.
RETRY_DELAYS = [1, 2, 4, 8, 15]
READY_TIMEOUT = 60.0


def system_settings(deps: Dependencies, **overrides: Any) -> dict[str, Any]:
    """Setting overrides that point every service at the private servers."""
    return {
        "DATABASE_URL": f"{deps.postgres.url}/tfa",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": deps.redis.port,
        "REDIS_KEY_PREFIX": "tfa:",
        "RABBITMQ_URL": deps.rabbitmq.url,
        "BROKER_PREFIX": "",
        "HOST": "127.0.0.1",
        "BCRYPT_ROUNDS": 4,
        "OUTBOX_POLL_SECONDS": 1.0,
        "CONSUMER_RETRY_DELAYS": RETRY_DELAYS,
        "WEBHOOK_RETRY_DELAYS": RETRY_DELAYS,
        "WEBHOOK_TIMEOUT_SECONDS": 5,
        "WEBHOOK_ALLOW_PRIVATE_URLS": True,
        # The load sends wrong codes to a few users all along: no lockout gets in the way.
        "TWOFA_MAX_FAILURES": 1_000_000_000,
        "LOG_LEVEL": "WARNING",
        **{setting: free_port() for setting in HEALTH_PORT_SETTING.values()},
        **overrides,
    }


class Service:
    """One service process; its output goes to `<name>.<n>.log` in the run's directory."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.env = env
        self.logs = logs
        self.port = int(env[HEALTH_PORT_SETTING[name]])
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/health/ready"

    async def start(self) -> None:
        log = open(self.logs / f"{self.name}.{self.starts}.log", "wb")  # noqa: SIM115
        self.starts += 1
        with log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", MODULES[self.name], env=self.env, cwd=self.logs,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )

    async def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean stop) or SIGKILL (`kill -9`), and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    def unhandled_errors(self, context: int = 40) -> list[str]:
        """Each "unhandled error" the service logged (it answered 500), with its traceback."""
        found = []
        for log in sorted(self.logs.glob(f"{self.name}.*.log")):
            lines = log.read_text(errors="replace").splitlines()
            found += [
                "\n".join(lines[i:i + context])
                for i, line in enumerate(lines) if "unhandled error" in line
            ]
        return found

    def log_tail(self, lines: int = 20) -> str:
        log = self.logs / f"{self.name}.{self.starts - 1}.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class System:
    """The four services on the private servers; `start`, `ready`, `stop`."""

    def __init__(self, deps: Dependencies, logs: Path, **overrides: Any) -> None:
        self.deps = deps
        values = system_settings(deps, PORT=free_port(), **overrides)
        self.settings: Settings = make_settings(**values)
        inherited = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
        env = {**inherited, **settings_env(**values), "PYTHONUNBUFFERED": "1"}
        self.services = {name: Service(name, env, logs) for name in MODULES}
        self.api_url = f"http://127.0.0.1:{self.settings.PORT}"

    async def start(self) -> None:
        await prepare(self.settings)
        for service in self.services.values():
            await service.start()
        await self.ready(READY_TIMEOUT)

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.services.values()))

    async def ready(self, timeout: float) -> float:
        """Wait until every service answers 200 on its readiness probe; the seconds it took.
        Fails naming the services that did not, with the end of their logs."""
        started = time.monotonic()
        pending = set(self.services)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            while pending and time.monotonic() - started < timeout:
                exited = [n for n in pending if self.services[n].proc is None
                          or self.services[n].proc.returncode is not None]
                if exited:
                    tails = "\n".join(f"--- {n}:\n{self.services[n].log_tail()}" for n in exited)
                    raise AssertionError(f"not running: {exited}\n{tails}")
                answers = await asyncio.gather(
                    *(self._is_ready(session, self.services[n]) for n in sorted(pending))
                )
                pending -= {n for n, ok in zip(sorted(pending), answers, strict=True) if ok}
                if pending:
                    await asyncio.sleep(0.2)
        if pending:
            tails = "\n".join(f"--- {n}:\n{self.services[n].log_tail()}" for n in sorted(pending))
            raise AssertionError(f"not ready within {timeout:.0f} s: {sorted(pending)}\n{tails}")
        return time.monotonic() - started

    @staticmethod
    async def _is_ready(session: aiohttp.ClientSession, service: Service) -> bool:
        try:
            async with session.get(service.ready_url) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@dataclass
class Stack:
    """What a fault run works on: the private servers, the system on them, its SMTP server."""

    deps: Dependencies
    system: System
    smtp: FakeSmtp


@asynccontextmanager
async def running_stack(**overrides: Any) -> AsyncIterator[Stack]:
    """Private servers in a temporary directory, an SMTP server, and the system on them (with
    setting `overrides`); all stopped, and the directory removed, when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="tfa-reliability-"))
    (root / "logs").mkdir()
    deps = Dependencies(root)
    try:
        await deps.start()
        async with smtp_server() as smtp:
            system = System(deps, root / "logs", **{**smtp.settings(), **overrides})
            try:
                await system.start()
                yield Stack(deps, system, smtp)
            finally:
                await system.stop()
    finally:
        await deps.stop()
        shutil.rmtree(root, ignore_errors=True)
