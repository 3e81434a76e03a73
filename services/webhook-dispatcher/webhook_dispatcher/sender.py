"""One HTTP attempt at a webhook URL, bounded in every direction.

The client connects only to addresses the SSRF guard allows (checked again at every delivery),
never follows a redirect, gives up after `WEBHOOK_TIMEOUT_SECONDS`, and reads at most
`MAX_RESPONSE_BYTES` of the answer: a receiver that hangs, redirects, hangs up or streams a
gigabyte costs one failed attempt and nothing else. Requests to one endpoint (scheme, host,
port) are limited per dispatcher, so a slow endpoint cannot take every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from yarl import URL

from shared import url_guard
from shared.config import Settings

MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None


class EndpointLimiter:
    """At most `limit` requests in flight to one endpoint, and at most `WAITING * limit` more
    waiting; a delivery beyond that is handed back (False) to wait in a delay queue instead, so
    one slow endpoint holds a bounded share of the dispatcher's in-flight messages."""

    WAITING = 4

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._queued: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, endpoint: str) -> AsyncIterator[bool]:
        """Yields True inside a slot, or False at once when the endpoint is saturated."""
        queued = self._queued.get(endpoint, 0)
        if queued >= (1 + self.WAITING) * self._limit:
            yield False
            return
        semaphore = self._semaphores.setdefault(endpoint, asyncio.Semaphore(self._limit))
        self._queued[endpoint] = queued + 1
        try:
            async with semaphore:
                yield True
        finally:
            self._queued[endpoint] -= 1
            if not self._queued[endpoint]:
                del self._queued[endpoint]
                self._semaphores.pop(endpoint, None)


def endpoint_of(url: URL) -> str:
    return f"{url.scheme}://{url.host}:{url.port}"


class Sender:
    """The dispatcher's HTTP client. `open()` before use, `close()` after."""

    def __init__(self, settings: Settings) -> None:
        self._allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
        self._timeout = aiohttp.ClientTimeout(total=settings.WEBHOOK_TIMEOUT_SECONDS)
        self._timeout_seconds = settings.WEBHOOK_TIMEOUT_SECONDS
        self._connections = settings.WEBHOOK_MAX_IN_FLIGHT
        self._per_host = settings.WEBHOOK_ENDPOINT_CONCURRENCY
        self.limiter = EndpointLimiter(settings.WEBHOOK_ENDPOINT_CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=url_guard.GuardedResolver(allow_private=self._allow_private),
            limit=self._connections,
            limit_per_host=self._per_host,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,  # no proxy from the environment: the guard must see the real target
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        assert self._session is not None, "Sender.open() was not called"
        started = time.perf_counter()

        def outcome(ok: bool, status: int | None, error: str | None) -> Outcome:
            return Outcome(ok, status, round((time.perf_counter() - started) * 1000), error)

        try:
            target = URL(url)
            if not self._allow_private:
                url_guard.refuse_private_literal(target)
            async with self._session.post(
                target, data=body, headers=headers, allow_redirects=False, timeout=self._timeout
            ) as response:
                status = response.status
                # A short answer is read, so the keep-alive connection can be reused; a longer
                # (or unannounced) one is cut off by closing the connection.
                length = response.content_length
                if length is not None and length <= MAX_RESPONSE_BYTES:
                    await response.read()
                else:
                    response.close()
        except url_guard.UrlRefused as exc:
            return outcome(False, None, f"refused: {exc.message}")
        except TimeoutError:
            return outcome(False, None, f"timed out after {self._timeout_seconds:g}s")
        except aiohttp.ClientConnectorError as exc:
            return outcome(False, None, f"connection failed: {exc}"[:500])
        except aiohttp.ServerDisconnectedError:
            return outcome(False, None, "the receiver closed the connection without answering")
        except aiohttp.ClientResponseError as exc:
            return outcome(False, exc.status or None, f"invalid response: {exc.message}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= status < 300:
            return outcome(True, status, None)
        if 300 <= status < 400:
            return outcome(False, status, f"redirect ({status}) not followed")
        return outcome(False, status, f"HTTP {status}")
