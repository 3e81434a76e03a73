"""Acks in delivery order, many per frame.

A consumer that acks every message with its own `basic.ack` pays a frame, a socket write and
aiormq's bookkeeping per message, and so does the broker. `Acks` collects the messages a
consumer has finished and, once per turn of the event loop, acks the longest run of delivered
messages that are all finished with one `basic.ack multiple` on the last of them. A finished
message behind one still in flight waits up to `HOLD` seconds for it (to be covered by the same
frame), then is acked on its own: a slow neighbour (a hanging webhook, say) never holds an ack
back for long, so the prefetch window does not fill with finished work.

Delivery tags belong to a channel, so there is one queue per channel; a robust connection's
reopened channel starts a new one, and the acks of a closed channel are dropped (the broker
redelivers those messages, which every handler tolerates).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage

log = structlog.get_logger(__name__)

IN_FLIGHT, FINISHED, SETTLED = 0, 1, 2
HOLD = 0.05


class _Channel:
    """One channel's delivered, not yet acked messages, oldest first."""

    __slots__ = ("order",)

    def __init__(self) -> None:
        self.order: deque[list[Any]] = deque()  # [message, state, finished at]


class Acks:
    def __init__(self) -> None:
        self._channels: dict[int, tuple[Any, _Channel]] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._held: asyncio.TimerHandle | None = None
        # Flushes send in the order they were made: an ack of one message sent after a later
        # `multiple` ack that already covered it would be an unknown tag, and the broker
        # closes the channel for that.
        self._sending = asyncio.Lock()

    def delivered(self, message: AbstractIncomingMessage) -> list[Any]:
        """Register a message as it arrives; returns its entry for `finished`/`settled`."""
        channel = self._channel(message)
        entry = [message, IN_FLIGHT, 0.0]
        channel.order.append(entry)
        return entry

    def finished(self, entry: list[Any]) -> None:
        """The message's work is done: ack it within this turn of the loop."""
        if entry[1] == IN_FLIGHT:
            entry[1] = FINISHED
            entry[2] = asyncio.get_running_loop().time()
            self._schedule()

    def settled(self, entry: list[Any]) -> None:
        """The message was settled another way (rejected): never ack it."""
        if entry[1] == IN_FLIGHT:
            entry[1] = SETTLED
            self._schedule()

    async def drain(self) -> None:
        """Send every pending ack now (before the channel closes)."""
        self._flush(hold=0)
        if self._flushing:
            await asyncio.wait(self._flushing)

    def _channel(self, message: AbstractIncomingMessage) -> _Channel:
        try:
            amqp_channel = message.channel
        except Exception:  # closed already: its ack could not be sent anyway
            return _Channel()
        found = self._channels.get(id(amqp_channel))
        if found is not None and found[0] is amqp_channel:
            return found[1]
        # A new (or reopened) channel: forget the closed ones and their tags.
        for key, (old, _) in list(self._channels.items()):
            if old.is_closed:
                del self._channels[key]
        queue = _Channel()
        self._channels[id(amqp_channel)] = (amqp_channel, queue)
        return queue

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self, hold: float = HOLD) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        held_until = None
        to_ack: list[tuple[AbstractIncomingMessage, bool]] = []
        for _, channel in self._channels.values():
            order = channel.order
            last = None
            while order and order[0][1] != IN_FLIGHT:
                message, state, _ = order.popleft()
                if state == FINISHED:
                    last = message
            if last is not None:
                to_ack.append((last, True))
            # Finished behind one still in flight: on their own once they have waited `hold`.
            for entry in order:
                if entry[1] == FINISHED:
                    due = entry[2] + hold
                    if due <= loop.time():
                        to_ack.append((entry[0], False))
                        entry[1] = SETTLED
                    elif held_until is None or due < held_until:
                        held_until = due
        if held_until is not None and self._held is None:
            self._held = loop.call_at(held_until, self._release_held)
        if to_ack:
            task = loop.create_task(self._send(to_ack))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    def _release_held(self) -> None:
        self._held = None
        self._flush()

    async def _send(self, acks: list[tuple[AbstractIncomingMessage, bool]]) -> None:
        async with self._sending:
            for message, multiple in acks:
                # A closed channel cannot take the ack; the broker redelivers those messages.
                with contextlib.suppress(Exception):
                    await message.ack(multiple=multiple)
