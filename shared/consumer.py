"""The consumer runtime every consumer service is built on.

A `Consumer` connects to the broker, declares the topology (its queue, dead-letter queue and retry
queues), consumes with a bounded prefetch, and serves the health endpoints on its own port.
Each message is decoded into a typed `Event` and handed to the service's handler; the message is
acked only after the handler returns (the handler commits its own work first). Failure policy:
- undecodable body or `Permanent` error: rejected without requeue, so it lands in `<queue>.dlq`;
- `Transient` error: copied to `<queue>.retry.<delay>` (a TTL queue that dead-letters back into
  the main queue) with the attempt count in a header, then acked; after the last delay, the DLQ.
Redelivery is possible (crash before ack), so handlers must be idempotent by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiohttp import web
from pydantic import ValidationError

from shared import broker
from shared.config import Settings
from shared.errors import Permanent, Transient
from shared.events import Event
from shared.health import Health, health_routes

log = structlog.get_logger(__name__)

ATTEMPT_HEADER = "x-attempt"

Handler = Callable[[Event], Awaitable[None]]
Setup = Callable[[AsyncExitStack, Health], Awaitable[Handler]]


class Consumer:
    """One consumer process: broker subscription, handler, retries, and a health server."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        setup: Setup,
        *,
        health_port: int,
        retry_delays: list[int] | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.topology = broker.Topology(settings.BROKER_PREFIX)
        self.health = Health(component=service, memory_limit_mb=settings.HEALTH_MEMORY_LIMIT_MB)
        self.health_port = health_port
        self.retry_delays = list(retry_delays or [])
        self.handled = 0
        self._setup = setup
        self._stack = AsyncExitStack()
        self._handler: Handler | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self.bound_port: int | None = None

    async def start(self) -> None:
        """Connect, declare, start the health server, then begin consuming."""
        self._handler = await self._setup(self._stack, self.health)
        connection = await self._stack.enter_async_context(
            broker.connect(self.settings, self.service)
        )
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.CONSUMER_PREFETCH)
        self._channel = channel
        await broker.declare_topology(channel, self.topology)
        await self._declare_retry_queues(channel)
        self._queue = await channel.get_queue(self.topology.queue(self.service), ensure=False)
        self.health.register("broker", lambda: _ping_connection(connection))
        await self._start_health_server()
        self._consumer_tag = await self._queue.consume(self._on_message)
        log.info("consumer started", queue=self._queue.name, health_port=self.bound_port)

    async def stop(self) -> None:
        """Stop taking messages, let in-flight ones finish (unacked ones are redelivered), close."""
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._consumer_tag)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=10)
        await self._stack.aclose()
        log.info("consumer stopped", handled=self.handled)

    async def _declare_retry_queues(self, channel: AbstractChannel) -> None:
        for delay in self.retry_delays:
            await channel.declare_queue(
                self.topology.retry_queue(self.service, delay),
                durable=True,
                arguments={
                    "x-message-ttl": delay * 1000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.topology.queue(self.service),
                },
            )

    async def _start_health_server(self) -> None:
        app = web.Application()
        for prefix in ("/health", "/api/health"):
            for suffix, handler in health_routes(self.health):
                app.router.add_get(prefix + suffix, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, self.settings.HOST, self.health_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.health_port

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._process(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        assert self._handler is not None
        structlog.contextvars.bind_contextvars(message_id=message.message_id)
        try:
            try:
                event = Event.from_bytes(message.body)
            except ValidationError as exc:
                log.error("poison message sent to DLQ", errors=exc.error_count())
                await message.reject(requeue=False)
                return
            structlog.contextvars.bind_contextvars(event_id=str(event.id), event_type=event.type)
            try:
                await self._handler(event)
            except Transient as exc:
                await self._retry(message, exc)
                return
            except Permanent as exc:
                log.error("permanent failure; message sent to DLQ", error=str(exc))
                await message.reject(requeue=False)
                return
            except Exception:
                # Unknown failure: requeue once through the retry path rather than lose it.
                log.exception("handler failed")
                await self._retry(message, None)
                return
            await message.ack()
            self.handled += 1
        finally:
            structlog.contextvars.unbind_contextvars("message_id", "event_id", "event_type")

    async def _retry(self, message: AbstractIncomingMessage, exc: Exception | None) -> None:
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 1))
        if attempt > len(self.retry_delays) or self._channel is None:
            log.error("retries exhausted; message sent to DLQ", attempt=attempt, error=repr(exc))
            await message.reject(requeue=False)
            return
        delay = self.retry_delays[attempt - 1]
        copy = aio_pika.Message(
            body=message.body,
            headers={**(message.headers or {}), ATTEMPT_HEADER: attempt + 1},
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            type=message.type,
        )
        await self._channel.default_exchange.publish(
            copy, routing_key=self.topology.retry_queue(self.service, delay)
        )
        log.warning("transient failure; retry scheduled", attempt=attempt, delay=delay, error=repr(exc))
        await message.ack()


async def _ping_connection(connection: Any) -> None:
    if connection.is_closed:
        raise ConnectionError("broker connection is closed")
    channel = await connection.channel()
    await channel.close()


async def serve(consumer: Consumer) -> None:
    """Run a consumer until SIGINT/SIGTERM, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await consumer.start()
    try:
        await stop.wait()
    finally:
        await consumer.stop()


def run_main(service: str, build: Callable[[Settings], Consumer]) -> None:
    """`python -m <service>`: settings, logging, then serve until a signal."""
    from shared.config import load_settings
    from shared.logs import configure_logging

    settings = load_settings()
    configure_logging(settings, service)
    asyncio.run(serve(build(settings)))
