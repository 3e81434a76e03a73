"""RabbitMQ: names, topology, connection and confirmed publishing.

One durable topic exchange carries every event with routing key = event type. Each consumer
service has one durable queue bound to the types it handles, a `<queue>.dlq` for poison
messages, and (for those that retry) `<queue>.retry.<seconds>` TTL queues that dead-letter back
into the main queue. All names come from `Topology`, which takes a prefix so test runs sharing a
broker never see each other. Every producer declares the whole topology, so events published
before a consumer first starts wait in its queue instead of being dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from shared.config import Settings

NOTIFIER = "notifier"
WEBHOOK_DISPATCHER = "webhook-dispatcher"
AUDIT = "audit"

# Domain events (audited, deliverable) as opposed to notification commands (notification.#).
DOMAIN_EVENTS = ("2fa.#", "user.#", "apikey.#", "webhook.#", "security.#")
# Routing-key patterns each consumer's queue is bound with.
BINDINGS: dict[str, tuple[str, ...]] = {
    NOTIFIER: ("notification.#",),
    WEBHOOK_DISPATCHER: DOMAIN_EVENTS,
    AUDIT: DOMAIN_EVENTS,
}
# Bindings earlier versions made, removed when the topology is declared.
RETIRED_BINDINGS = ("#",)
# Services that also keep a queue of their own work items (not events), e.g. one message per
# webhook delivery to attempt again; it has its own dead-letter and delay queues.
JOB_QUEUES = (WEBHOOK_DISPATCHER,)


@dataclass(frozen=True, slots=True)
class Topology:
    """Every exchange and queue name, derived from one prefix."""

    prefix: str = ""

    @property
    def exchange(self) -> str:
        return f"{self.prefix}tfa.events"

    def queue(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def jobs_queue(self, service: str) -> str:
        return f"{self.queue(service)}.jobs"

    def dlq(self, service: str) -> str:
        return dead_letter_queue(self.queue(service))

    def retry_queue(self, service: str, delay_seconds: int) -> str:
        return delay_queue(self.queue(service), delay_seconds)

    def all_queues(self, retry_delays: Iterable[int] = ()) -> list[str]:
        delays = list(retry_delays)
        inputs = [self.queue(s) for s in BINDINGS] + [self.jobs_queue(s) for s in JOB_QUEUES]
        names = []
        for queue in inputs:
            names += [queue, dead_letter_queue(queue)]
            names += [delay_queue(queue, d) for d in delays]
        return names


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def delay_queue(queue: str, delay_seconds: int) -> str:
    """A TTL queue whose messages, after `delay_seconds`, dead-letter back into `queue`."""
    return f"{queue}.retry.{delay_seconds}"


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
        for pattern in RETIRED_BINDINGS:
            if pattern not in patterns:
                await queue.unbind(exchange, routing_key=pattern)
    return exchange


async def declare_work_queue(channel: AbstractChannel, queue: str, delays: Iterable[int]) -> None:
    """A durable queue with its dead-letter queue and its delay queues."""
    await channel.declare_queue(dead_letter_queue(queue), durable=True)
    await channel.declare_queue(
        queue,
        durable=True,
        arguments={
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letter_queue(queue),
        },
    )
    for delay in sorted(set(delays)):
        await channel.declare_queue(
            delay_queue(queue, delay),
            durable=True,
            arguments={
                "x-message-ttl": delay * 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            },
        )


class Publisher:
    """Publishes raw event bodies to the events exchange and waits for the broker's confirm."""

    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self._topology = topology
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._opening = asyncio.Lock()

    def _open(self) -> bool:
        return self._exchange is not None and self._channel is not None and not self._channel.is_closed

    async def ready(self) -> AbstractExchange:
        """The exchange on the one channel every publish uses, opened first if needed (by one
        caller; the others wait for it rather than each opening a channel). Publishes started
        together after this returns leave in the order they were started: the outbox relay
        calls it before each batch."""
        if not self._open():
            async with self._opening:
                if not self._open():
                    self._channel = await self._connection.channel(publisher_confirms=True)
                    self._exchange = await declare_topology(self._channel, self._topology)
        assert self._exchange is not None
        return self._exchange

    async def publish(self, event_id: str, routing_key: str, body: bytes) -> None:
        """Publish one persistent message; returns only once the broker has confirmed it.

        Through aiormq's channel with `wait=False`: it still waits for the confirm, but not for
        the message's frames to be written first, as aio-pika's `Exchange.publish` does. That
        wait holds the channel's lock for an event-loop turn per message, so a batch of 200
        took 200 turns; under load (a turn ~1.5 ms) the relay fell behind at ~700 events/s."""
        exchange = await self.ready()
        assert self._channel is not None
        message = aio_pika.Message(
            body=body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event_id,
            type=routing_key,
        )
        channel = await self._channel.get_underlay_channel()
        await channel.basic_publish(
            message.body,
            exchange=exchange.name,
            routing_key=routing_key,
            properties=message.properties,
            mandatory=True,
            timeout=10,
            wait=False,
        )

    async def ping(self) -> None:
        if self._connection.is_closed:
            raise ConnectionError("broker connection is closed")
        await self.ready()
