"""The events exchange from a test: watch it (an exclusive, auto-deleted queue bound to a
pattern), or publish to it straight, as the API's outbox relay does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aio_pika

from shared.broker import Topology, declare_topology
from shared.config import Settings
from shared.events import Event


class EventWatcher:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.raw_ids: list[str] = []

    async def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 15) -> None:
        """Wait until the received events satisfy `predicate` (fails after `timeout`)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {[e.type.value for e in self.events]}")
            await asyncio.sleep(0.05)

    def of_type(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type.value == type_]


async def publish_events(settings: Settings, events: list[Event]) -> None:
    """Publish straight to the events exchange (persistent, confirmed), routing key = type."""
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_topology(channel, Topology(settings.BROKER_PREFIX))
        for event in events:
            await exchange.publish(
                aio_pika.Message(
                    event.to_bytes(),
                    message_id=str(event.id),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=event.type.value,
            )


@asynccontextmanager
async def watch_events(settings: Settings, pattern: str = "#") -> AsyncIterator[EventWatcher]:
    watcher = EventWatcher()
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await declare_topology(channel, Topology(settings.BROKER_PREFIX))
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=pattern)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                watcher.raw_ids.append(message.message_id or "")
                watcher.events.append(Event.from_bytes(message.body))

        await queue.consume(on_message)
        yield watcher
