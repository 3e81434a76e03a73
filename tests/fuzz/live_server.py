"""The API on a real port, served by an event loop in its own thread, for synchronous clients
(schemathesis calls it with `requests` from plain test functions, while pytest-asyncio's loop
is idle). It gets its own database, Redis prefix and broker names, removed when it stops, so the
fuzzer's accounts and events never reach the other suites' consumers."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from shared.config import Settings
from shared.migrate import prepare

from api.app import create_app
from tests.conftest import BASE_SETTINGS, make_settings, remove_resources

T = TypeVar("T")
START_TIMEOUT = 60


def isolated_settings(**overrides: Any) -> Settings:
    """This run's settings with a database, key prefix and broker names of their own."""
    tag = f"fz{secrets.token_hex(3)}"
    return make_settings(
        DATABASE_URL=f"{BASE_SETTINGS['DATABASE_URL']}_{tag}",
        REDIS_KEY_PREFIX=f"{BASE_SETTINGS['REDIS_KEY_PREFIX']}{tag}:",
        BROKER_PREFIX=f"{BASE_SETTINGS['BROKER_PREFIX']}{tag}.",
        **overrides,
    )


class LiveServer:
    """`start()` creates the resources and serves the app; `stop()` undoes both."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-api", daemon=True)
        self._runner: web.AppRunner | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(START_TIMEOUT)

    async def _serve(self) -> str:
        await prepare(self.settings)
        self._runner = web.AppRunner(create_app(self.settings))
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await remove_resources(self.settings)

    def start(self) -> LiveServer:
        self._thread.start()
        self.url = self._run(self._serve())
        return self

    def stop(self) -> None:
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT)
            self._loop.close()
