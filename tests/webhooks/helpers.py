"""Helpers for webhook tests: a dispatcher per test, and webhooks made through the public API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aiohttp.test_utils import TestClient

from shared import broker
from shared.config import Settings
from shared.consumer import Consumer

import webhook_dispatcher.main

from tests.conftest import BASE_SETTINGS, make_settings


@asynccontextmanager
async def running_dispatcher(**overrides: Any) -> AsyncIterator[Consumer]:
    """A webhook-dispatcher replica in this process, with this run's settings and `overrides`."""
    consumer = webhook_dispatcher.main.build(make_settings(**overrides), health_port=0)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


def settings_env(**overrides: Any) -> dict[str, str]:
    """This run's settings (with `overrides`) as the environment of a service subprocess."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        return str(value)

    return {name: text(value) for name, value in {**BASE_SETTINGS, **overrides}.items()}


async def purge_dispatcher_queues(settings: Settings) -> None:
    """Drop what earlier tests left in the dispatcher's queues (events of owners long gone),
    so a test that times the dispatcher measures its own events only."""
    topology = broker.Topology(settings.BROKER_PREFIX)
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await broker.declare_topology(channel, topology)
        jobs = topology.jobs_queue(broker.WEBHOOK_DISPATCHER)
        await broker.declare_work_queue(channel, jobs, [])
        for name in (topology.queue(broker.WEBHOOK_DISPATCHER), jobs):
            await (await channel.get_queue(name, ensure=False)).purge()


async def create_webhook(
    client: TestClient, headers: dict[str, str], url: str, events: list[str], **fields: Any
) -> dict[str, Any]:
    r = await client.post("/api/webhooks", json={"url": url, "events": events, **fields}, headers=headers)
    assert r.status == 201, await r.text()
    return (await r.json())["data"]


async def delivery_log(
    client: TestClient, headers: dict[str, str], webhook_id: str, **query: Any
) -> list[dict[str, Any]]:
    r = await client.get(f"/api/webhooks/{webhook_id}/deliveries", params=query, headers=headers)
    assert r.status == 200, await r.text()
    return (await r.json())["data"]


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 15, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy; its last value, or a failed test."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met in {timeout}s (last: {value!r})"
        await asyncio.sleep(interval)
