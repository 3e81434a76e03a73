"""Request deadlines, kept by one timer for all requests.

A request still running `REQUEST_TIMEOUT_SECONDS` after it arrived is cancelled and answered
503 (middleware). `asyncio.timeout` per request would do the same with a timer per request,
which under load cost ~0.05 ms of CPU per request here (uvloop; measured with the verify
benchmark: 0.744 against 0.689 ms per request); redis-py's per-command timeouts cost as much,
so the Redis client has none and this deadline bounds a stalled Redis instead. The sweep runs
every `tick` seconds, so a deadline is kept to within a tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadlines:
    def __init__(self, seconds: float, tick: float = 1.0) -> None:
        self.seconds = seconds
        self._tick = min(tick, seconds / 4)
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` in the current task; TimeoutError once the deadline passes."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._due[task] = loop.time() + self.seconds
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._tick, self._sweep)
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Ours alone: a deadline. Someone else's too (the client went away, shutdown), or
            # only theirs: it stays a cancellation, as with asyncio.timeout.
            if task in self._expired and task.cancelling() == 1:
                raise TimeoutError(f"no answer within the request deadline ({self.seconds:g} s)") from None
            raise
        finally:
            self._due.pop(task, None)
            if task in self._expired:  # take our cancellation back, also if it was swallowed
                self._expired.discard(task)
                task.uncancel()

    def lift(self) -> None:
        """No deadline for the rest of the current task's request (a streamed export)."""
        self._due.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
        self._sweeper = loop.call_later(self._tick, self._sweep) if self._due else None
