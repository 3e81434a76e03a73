"""RabbitMQ: names, topology, connection and confirmed publishing.

One durable topic exchange carries every event with routing key = event type. Each consumer
service has one durable queue bound to the types it handles, a `<queue>.dlq` for poison
messages, and (for those that retry) `<queue>.retry.<seconds>` TTL queues that dead-letter back
into the main queue. All names come from `Topology`, which takes a prefix so test runs sharing a
broker never see each other. Every producer declares the whole topology, so events published
before a consumer first starts wait in its queue instead of being dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from shared.config import Settings

NOTIFIER = "notifier"
WEBHOOK_DISPATCHER = "webhook-dispatcher"
AUDIT = "audit"

# Routing-key patterns each consumer's queue is bound with.
BINDINGS: dict[str, tuple[str, ...]] = {
    NOTIFIER: ("notification.#",),
    WEBHOOK_DISPATCHER: ("#",),
    AUDIT: ("#",),
}


@dataclass(frozen=True, slots=True)
class Topology:
    """Every exchange and queue name, derived from one prefix."""

    prefix: str = ""

    @property
    def exchange(self) -> str:
        return f"{self.prefix}tfa.events"

    def queue(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def dlq(self, service: str) -> str:
        return f"{self.queue(service)}.dlq"

    def retry_queue(self, service: str, delay_seconds: int) -> str:
        return f"{self.queue(service)}.retry.{delay_seconds}"

    def all_queues(self, retry_delays: Iterable[int] = ()) -> list[str]:
        names = []
        for service in BINDINGS:
            names += [self.queue(service), self.dlq(service)]
            names += [self.retry_queue(service, d) for d in retry_delays]
        return names


@asynccontextmanager
async def connect(settings: Settings, name: str) -> AsyncIterator[AbstractRobustConnection]:
    """A robust connection: it reconnects by itself after a broker restart."""
    connection = await aio_pika.connect_robust(
        settings.RABBITMQ_URL,
        timeout=5,
        reconnect_interval=1,
        client_properties={"connection_name": name},
    )
    try:
        yield connection
    finally:
        await connection.close()


async def declare_topology(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the exchange and every consumer queue with its bindings and dead-letter queue."""
    exchange = await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    for service, patterns in BINDINGS.items():
        await channel.declare_queue(topology.dlq(service), durable=True)
        queue = await channel.declare_queue(
            topology.queue(service),
            durable=True,
            arguments={
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": topology.dlq(service),
            },
        )
        for pattern in patterns:
            await queue.bind(exchange, routing_key=pattern)
    return exchange


class Publisher:
    """Publishes raw event bodies to the events exchange and waits for the broker's confirm."""

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def _exchange_ready(self) -> AbstractExchange:
        if self._exchange is None or self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await declare_topology(self._channel, self._topology)
        return self._exchange

    async def publish(self, event_id: str, routing_key: str, body: bytes) -> None:
        """Publish one persistent message; returns only once the broker has confirmed it."""
        exchange = await self._exchange_ready()
        message = aio_pika.Message(
            body=body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_id,
            type=routing_key,
        )
        await exchange.publish(message, routing_key=routing_key, timeout=10)

    async def ping(self) -> None:
        if self._connection.is_closed:
            raise ConnectionError("broker connection is closed")
        await self._exchange_ready()
