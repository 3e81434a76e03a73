"""Health endpoints shared by every service: `/health`, `/health/live`, `/health/ready`.

Each resource registers a ping when it is created; the sub-app runs them concurrently with a
timeout. `/health` answers the guide's JSON (status, timestamp, service, version, uptime, checks),
503 when a dependency is down; `/health/ready` is 200 only when every dependency answers;
`/health/live` is 200 while the process can answer at all.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from shared.envelope import status_report

SERVICE_NAME = "2FA Authentication Service"
VERSION = "1.0.0"
PING_TIMEOUT_SECONDS = 2.0

Ping = Callable[[], Awaitable[object]]


@dataclass
class Health:
    """The pings of one process and the facts its health answers report."""

    component: str
    memory_limit_mb: int = 1024
    pings: dict[str, Ping] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def register(self, name: str, ping: Ping) -> None:
        self.pings[name] = ping

    async def _check(self, ping: Ping) -> dict[str, object]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(ping(), PING_TIMEOUT_SECONDS)
        except Exception as exc:  # any failure means "down"; the reason is for operators
            return {"status": "down", "error": type(exc).__name__}
        return {"status": "up", "responseTime": round((time.perf_counter() - started) * 1000)}

    async def dependencies(self) -> dict[str, dict[str, object]]:
        names = list(self.pings)
        results = await asyncio.gather(*(self._check(self.pings[n]) for n in names))
        return dict(zip(names, results, strict=True))

    def memory(self) -> dict[str, object]:
        rss_mb = _rss_mb()
        return {
            "status": "up" if rss_mb < self.memory_limit_mb else "degraded",
            "heapUsed": rss_mb,
            "heapTotal": self.memory_limit_mb,
            "rssMb": rss_mb,
            "maxRssMb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }

    async def report(self) -> tuple[int, dict[str, object]]:
        checks: dict[str, dict[str, object]] = dict(await self.dependencies())
        checks["memory"] = self.memory()
        if any(c["status"] == "down" for c in checks.values()):
            status, http = "unhealthy", 503
        elif any(c["status"] != "up" for c in checks.values()):
            status, http = "degraded", 200
        else:
            status, http = "healthy", 200
        return http, {
            "status": status,
            "timestamp": _now_iso(),
            "service": SERVICE_NAME,
            "component": self.component,
            "version": VERSION,
            "uptime": round(time.monotonic() - self.started),
            "checks": checks,
        }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rss_mb() -> int:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * resource.getpagesize() / 1024 / 1024)
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def health_routes(health: Health) -> list[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
    """(path suffix, handler) pairs, mounted by each service under its health prefix."""

    async def full(_: web.Request) -> web.StreamResponse:
        http, body = await health.report()
        return status_report(body, http)

    async def live(_: web.Request) -> web.StreamResponse:
        uptime = round(time.monotonic() - health.started)
        return status_report({"status": "healthy", "timestamp": _now_iso(), "uptime": uptime}, 200)

    async def ready(_: web.Request) -> web.StreamResponse:
        checks = await health.dependencies()
        up = all(c["status"] == "up" for c in checks.values())
        body = {"status": "ready" if up else "unavailable", "timestamp": _now_iso(), "checks": checks}
        return status_report(body, 200 if up else 503)

    return [("", full), ("/live", live), ("/ready", ready)]
