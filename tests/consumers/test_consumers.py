"""The three consumer services start, take events from their own durable queues, answer health
on their own port, send poison messages to their DLQ, retry transient failures through the delay
queues, and stop cleanly."""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import aiohttp
import pytest

from shared import broker
from shared.consumer import Consumer
from shared.errors import Transient
from shared.events import Actor, Event, EventType

import audit.main
import notifier.main
import webhook_dispatcher.main

from tests.conftest import RETRY_DELAYS


def login_event() -> Event:
    owner = uuid.uuid4()
    return Event.build(
        EventType.USER_LOGIN,
        {"userId": str(owner)},
        ownerId=owner,
        userId=str(owner),
        actor=Actor(kind="user", id=str(owner)),
    )


async def publish(settings, routing_key: str, body: bytes) -> None:
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await broker.declare_topology(channel, broker.Topology(settings.BROKER_PREFIX))
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=routing_key,
        )


async def queue_depth(settings, name: str) -> int:
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0


async def until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("build", "routing_key"),
    [
        (audit.main.build, "user.login"),
        (webhook_dispatcher.main.build, "user.login"),
        (notifier.main.build, "notification.sms"),
    ],
    ids=["audit", "webhook-dispatcher", "notifier"],
)
async def test_consumer_starts_consumes_serves_health_and_stops(settings, build, routing_key):
    consumer = build(settings, health_port=0)
    await consumer.start()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/health/live", "/health/ready", "/api/health"):
                async with http.get(f"http://127.0.0.1:{consumer.bound_port}{path}") as r:
                    assert r.status == 200, await r.text()
            async with http.get(f"http://127.0.0.1:{consumer.bound_port}/health") as r:
                body = await r.json()
                assert body["checks"]["broker"]["status"] == "up"
                assert body["status"] == "healthy"
        before = consumer.handled
        await publish(settings, routing_key, login_event().to_bytes())
        await until(lambda: _true(consumer.handled > before))
    finally:
        await consumer.stop()
    assert consumer._stack is not None  # stopped without raising


async def _true(value: bool) -> bool:
    return value


async def test_poison_message_goes_to_the_dead_letter_queue(settings):
    consumer = audit.main.build(settings, health_port=0)
    topology = broker.Topology(settings.BROKER_PREFIX)
    await consumer.start()
    try:
        before = await queue_depth(settings, topology.dlq(broker.AUDIT))
        await publish(settings, "user.login", b'{"not": "an event"}')
        await until(lambda: _gt(queue_depth(settings, topology.dlq(broker.AUDIT)), before))
    finally:
        await consumer.stop()


async def _gt(depth, before: int) -> bool:
    return (await depth) > before


async def test_transient_failure_is_retried_through_the_delay_queue(settings):
    """The handler fails once with `Transient`; the message comes back via `<queue>.retry.1`."""
    attempts: list[float] = []
    event = login_event()

    async def setup(stack, health):
        async def handle(received: Event) -> None:
            if received.id != event.id:
                return  # left in the shared queue by earlier tests
            attempts.append(time.monotonic())
            if len(attempts) == 1:
                raise Transient("provider timed out")

        return handle

    consumer = Consumer(
        settings, broker.WEBHOOK_DISPATCHER, setup, health_port=0, retry_delays=RETRY_DELAYS
    )
    await consumer.start()
    try:
        await publish(settings, "user.login", event.to_bytes())
        await until(lambda: _true(len(attempts) >= 2), timeout=15)
    finally:
        await consumer.stop()
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= RETRY_DELAYS[0] * 0.9


async def test_a_consumer_that_stops_consuming_is_not_ready(settings):
    # The broker connection is fine, but the subscription is gone (as when a reconnect failed
    # to subscribe again): readiness must say so, or nothing would restart the process.
    consumer = audit.main.build(settings, health_port=0)
    await consumer.start()
    try:
        ready = f"http://127.0.0.1:{consumer.bound_port}/health/ready"
        async with aiohttp.ClientSession() as http:
            async with http.get(ready) as r:
                assert r.status == 200, await r.text()
            queue, tag = consumer._subscriptions[0]
            await queue.cancel(tag)
            async with http.get(ready) as r:
                assert r.status == 503, await r.text()
                body = await r.json()
        assert body["data"]["checks"]["consuming"]["status"] == "down"
        assert body["data"]["checks"]["broker"]["status"] == "up"
    finally:
        await consumer.stop()
