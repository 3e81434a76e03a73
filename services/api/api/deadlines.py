"""Deadlines for the API's requests (the whole request, and reading its body), kept by one
sweeping timer for all of them.

`asyncio.timeout` would start a timer per use, which under load cost ~0.05 ms of CPU per request
here (uvloop; the verify benchmark: 0.744 against 0.689 ms of API CPU per request); redis-py's
per-command timeouts cost as much, so the Redis client has none and the request deadline bounds
a stalled Redis instead. The sweep runs every `tick` seconds, so a deadline is kept to within a
tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Deadlines:
    def __init__(self, tick: float = 1.0) -> None:
        self._tick = tick
        # One entry per `run` in progress (a request's task may run one inside another).
        self._due: dict[object, tuple[asyncio.Task[object], float]] = {}
        self._expired: set[object] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def run(self, awaitable: Awaitable[T], seconds: float) -> T:
        """Await `awaitable` in the current task; TimeoutError once `seconds` have passed."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        token = object()
        self._due[token] = (task, loop.time() + seconds)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._tick, self._sweep)
        try:
            return await awaitable
        except asyncio.CancelledError:
            # Ours alone: a deadline. Someone else's too (the client went away, shutdown), or
            # only theirs: it stays a cancellation, as with asyncio.timeout.
            if token in self._expired and task.cancelling() == 1:
                raise TimeoutError(f"no answer within the deadline ({seconds:g} s)") from None
            raise
        finally:
            self._due.pop(token, None)
            if token in self._expired:  # take our cancellation back, also if it was swallowed
                self._expired.discard(token)
                task.uncancel()

    def lift(self) -> None:
        """No deadline for the rest of the current task's request (a streamed export)."""
        task = asyncio.current_task()
        for token in [t for t, (owner, _) in self._due.items() if owner is task]:
            del self._due[token]

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for token, (task, due) in list(self._due.items()):
            if due <= now:
                del self._due[token]
                self._expired.add(token)
                task.cancel()
        self._sweeper = loop.call_later(self._tick, self._sweep) if self._due else None
