"""The consumer runtime every consumer service is built on.

A `Consumer` connects to the broker, declares the topology (its queue, dead-letter queue and retry
queues), consumes with a bounded prefetch, and serves the health endpoints on its own port.
Each message is decoded into a typed `Event` and handed to the service's handler; the message is
acked only after the handler returns (the handler commits its own work first). Failure policy:
- undecodable body or `Permanent` error: rejected without requeue, so it lands in `<queue>.dlq`;
- `Transient` error: copied to `<queue>.retry.<delay>` (a TTL queue that dead-letters back into
  the main queue) with the attempt count in a header, then acked; after the last delay, the DLQ.
  A handler that records outcomes reads `current_delivery()` to know whether this is the last try.
Redelivery is possible (crash before ack), so handlers must be idempotent by event id.

A service that keeps work items of its own (the webhook dispatcher's deliveries to retry) returns
extra `Inbox`es from its setup: each is a queue of its own with the same ack and failure policy,
and `publish` (publisher-confirmed) puts items on it, now or after a delay.

A service that stores what it consumes (the audit log) hands over a `Batched` handler instead:
the runtime gathers up to `max_batch` messages (or what arrived within `max_wait`), calls it once
with all their items, and acks them together after it returns; if it fails, each message takes
the failure path above on its own. Each inbox consumes on its own channel, and acks go out many
per frame (`shared.acking`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import structlog
import uvloop
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiohttp import web
from pydantic import ValidationError

from shared import broker, metrics
from shared.acking import Acks
from shared.batching import Batcher
from shared.config import Settings
from shared.errors import Permanent, Transient
from shared.events import Event
from shared.health import Health, health_routes

log = structlog.get_logger(__name__)

ATTEMPT_HEADER = "x-attempt"

Handler = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class Batched:
    """A handler of whole batches: `handle(items)` stores them all, or raises for all."""

    handle: Callable[[list[Any]], Awaitable[None]]
    max_batch: int
    max_wait: float


@dataclass(frozen=True)
class Delivery:
    """Which delivery of a message a handler is running on: `attempt` counts from 1 (+1 per
    retry through a delay queue); when `final`, a `Transient` sends it to the DLQ, not a retry."""

    attempt: int = 1
    final: bool = False


_delivery: ContextVar[Delivery] = ContextVar("delivery", default=Delivery())


def current_delivery() -> Delivery:
    """The delivery the running handler is on (each message is handled in its own task)."""
    return _delivery.get()


@dataclass(frozen=True)
class Inbox:
    """A queue of the service's own work items: decoded with `decode` (a pydantic
    `ValidationError` sends the message to the DLQ), handled by `handle` one at a time (many
    concurrently) or in batches. `delays` are the delay queues `publish(..., delay=)` may use."""

    queue: str
    decode: Callable[[bytes], Any]
    handle: Callable[[Any], Awaitable[None]] | Batched
    delays: Sequence[int] = field(default_factory=tuple)


@dataclass(frozen=True)
class Wiring:
    """What a service's setup returns when it has more than the event handler."""

    on_event: Handler | Batched
    inboxes: Sequence[Inbox] = ()


Setup = Callable[[AsyncExitStack, Health], Awaitable[Handler | Batched | Wiring]]


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
        prefetch: int | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.topology = broker.Topology(settings.BROKER_PREFIX)
        self.health = Health(component=service, memory_limit_mb=settings.HEALTH_MEMORY_LIMIT_MB)
        self.health_port = health_port
        self.retry_delays = list(retry_delays or [])
        self.prefetch = prefetch or settings.CONSUMER_PREFETCH
        self.handled = 0
        self._setup = setup
        self._stack = AsyncExitStack()
        self._publish_channel: AbstractChannel | None = None
        self._subscriptions: list[tuple[AbstractQueue, str]] = []
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._batchers: list[Batcher[Any, None]] = []
        self._acks = Acks()
        self.bound_port: int | None = None

    async def start(self) -> None:
        """Connect, declare, start the health server, then begin consuming."""
        wiring = await self._setup(self._stack, self.health)
        if not isinstance(wiring, Wiring):
            wiring = Wiring(on_event=wiring)
        events = Inbox(self.topology.queue(self.service), Event.from_bytes, wiring.on_event)
        connection = await self._stack.enter_async_context(
            broker.connect(self.settings, self.service)
        )
        channel = await connection.channel()
        self._publish_channel = await connection.channel(publisher_confirms=True)
        await broker.declare_topology(channel, self.topology)
        # The events queue itself is declared with the topology; here its delay queues.
        await broker.declare_work_queue(channel, events.queue, self.retry_delays)
        for inbox in wiring.inboxes:
            await broker.declare_work_queue(
                channel, inbox.queue, [*self.retry_delays, *inbox.delays]
            )
        self.health.register("broker", lambda: _ping_connection(connection))
        self.health.register("consuming", self._check_consuming)
        await self._start_health_server()
        for inbox in (events, *wiring.inboxes):
            # A channel per inbox: its own prefetch window and its own delivery tags to ack.
            inbox_channel = await connection.channel()
            await inbox_channel.set_qos(prefetch_count=self.prefetch)
            # Declared (passively) rather than `get_queue(ensure=False)`: only a declared queue
            # is known to the robust channel, which re-subscribes it after a broker restart.
            queue = await inbox_channel.declare_queue(inbox.queue, passive=True)
            tag = await queue.consume(self._receiver(inbox))
            self._subscriptions.append((queue, tag))
        log.info("consumer started", queue=events.queue, health_port=self.bound_port)

    async def stop(self) -> None:
        """Stop taking messages, let in-flight ones finish (unacked ones are redelivered), close."""
        for queue, tag in self._subscriptions:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=10)
        for batcher in self._batchers:
            await batcher.drain(timeout=10)
            await batcher.stop(RuntimeError("the consumer stopped"))
        await self._acks.drain()
        await self._stack.aclose()
        log.info("consumer stopped", handled=self.handled)

    async def publish(
        self,
        queue: str,
        body: bytes,
        *,
        delay: int | None = None,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Put a message on one of this service's queues (after `delay` seconds, through its
        delay queue), and return once the broker has confirmed it."""
        if self._publish_channel is None:
            raise RuntimeError("the consumer has not started")
        target = broker.delay_queue(queue, delay) if delay else queue
        message = aio_pika.Message(
            body=body,
            headers=headers or {},
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
        )
        await self._publish_channel.default_exchange.publish(message, routing_key=target, timeout=10)

    async def _check_consuming(self) -> None:
        """Every queue this process subscribed to still has its subscription on the broker
        (after a broker restart the robust channel must have subscribed it again)."""
        for queue, tag in self._subscriptions:
            channel = await queue.channel.get_underlay_channel()
            if tag not in channel.consumers:
                raise ConnectionError(f"not consuming from {queue.name}")

    async def _start_health_server(self) -> None:
        app = web.Application()
        for prefix in ("/health", "/api/health"):
            for suffix, handler in health_routes(self.health):
                app.router.add_get(prefix + suffix, handler)
        app.router.add_get("/metrics", metrics.metrics_handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, self.settings.HOST, self.health_port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.health_port

    def _receiver(self, inbox: Inbox) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        """The broker's callback for one inbox (aio-pika runs each call in a task of its own):
        the message is handled in that task, or added to the inbox's next batch."""
        handle = inbox.handle
        if isinstance(handle, Batched):
            batcher: Batcher[Any, None] = Batcher(
                functools.partial(self._handle_batch, inbox, handle),
                max_batch=handle.max_batch,
                max_wait=handle.max_wait,
                name=f"batch:{inbox.queue}",
            )
            batcher.start()
            self._batchers.append(batcher)

            async def receive_into_batch(message: AbstractIncomingMessage) -> None:
                batcher.add((message, self._acks.delivered(message)))

            return receive_into_batch

        async def receive(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._in_flight.add(task)
            try:
                await self._process(inbox, message, self._acks.delivered(message))
            finally:
                if task is not None:
                    self._in_flight.discard(task)

        return receive

    async def _process(self, inbox: Inbox, message: AbstractIncomingMessage, entry: list[Any]) -> None:
        structlog.contextvars.bind_contextvars(message_id=message.message_id)
        try:
            item = _decode(inbox, message)
            if item is _POISON:
                await self._dead_letter(inbox, message, entry)
                return
            if isinstance(item, Event):
                structlog.contextvars.bind_contextvars(event_id=str(item.id), event_type=item.type)
            attempt = _attempt(message)
            _delivery.set(Delivery(attempt, final=attempt > len(self.retry_delays)))
            try:
                await inbox.handle(item)  # type: ignore[operator]
            except Exception as exc:
                await self._failed(inbox, [(message, entry)], exc)
                return
            self._acked(inbox, entry)
        finally:
            structlog.contextvars.unbind_contextvars("message_id", "event_id", "event_type")

    async def _handle_batch(
        self, inbox: Inbox, batched: Batched, received: list[tuple[AbstractIncomingMessage, list[Any]]]
    ) -> list[None]:
        """One batch: decode each, hand the items over together, then ack them together. Never
        raises: a failure sends each message down its own failure path."""
        decoded = []
        for message, entry in received:
            item = _decode(inbox, message)
            if item is _POISON:
                await self._dead_letter(inbox, message, entry)
            else:
                decoded.append((message, entry, item))
        if decoded:
            try:
                await batched.handle([item for _, _, item in decoded])
            except Exception as exc:
                await self._failed(inbox, [(message, entry) for message, entry, _ in decoded], exc)
            else:
                for _, entry, _ in decoded:
                    self._acked(inbox, entry)
        return [None] * len(received)

    async def _failed(
        self, inbox: Inbox, received: list[tuple[AbstractIncomingMessage, list[Any]]], exc: Exception
    ) -> None:
        """The handler failed on these messages (one, or a batch): Permanent sends them to the
        DLQ; Transient, or an unknown failure, retries them rather than lose them."""
        if isinstance(exc, Permanent):
            log.error("permanent failure; sent to DLQ", error=str(exc), size=len(received))
            for message, entry in received:
                await self._dead_letter(inbox, message, entry)
            return
        if not isinstance(exc, Transient):
            log.exception("handler failed", size=len(received))
        for message, entry in received:
            await self._retry(inbox, message, entry, exc)

    def _acked(self, inbox: Inbox, entry: list[Any]) -> None:
        self._acks.finished(entry)
        metrics.MESSAGES_CONSUMED.labels(inbox.queue, "acked").inc()
        self.handled += 1

    async def _dead_letter(self, inbox: Inbox, message: AbstractIncomingMessage, entry: list[Any]) -> None:
        try:
            with contextlib.suppress(Exception):  # a closed channel: the broker redelivers it
                await message.reject(requeue=False)  # the queue dead-letters it into <queue>.dlq
        finally:
            # Only once the reject is sent: until then no `multiple` ack may cover its tag.
            self._acks.settled(entry)
        metrics.MESSAGES_CONSUMED.labels(inbox.queue, "dead_lettered").inc()

    async def _retry(
        self, inbox: Inbox, message: AbstractIncomingMessage, entry: list[Any], exc: Exception
    ) -> None:
        attempt = _attempt(message)
        if attempt > len(self.retry_delays):
            log.error("retries exhausted; message sent to DLQ", attempt=attempt, error=repr(exc))
            await self._dead_letter(inbox, message, entry)
            return
        delay = self.retry_delays[attempt - 1]
        await self.publish(
            inbox.queue,
            message.body,
            delay=delay,
            headers={**(message.headers or {}), ATTEMPT_HEADER: attempt + 1},
            message_id=message.message_id,
        )
        log.warning("transient failure; retry scheduled", attempt=attempt, delay=delay, error=repr(exc))
        self._acks.finished(entry)
        metrics.MESSAGES_CONSUMED.labels(inbox.queue, "retried").inc()


_POISON = object()


def _decode(inbox: Inbox, message: AbstractIncomingMessage) -> Any:
    """The message's item, or `_POISON` for a body that does not decode (it goes to the DLQ)."""
    try:
        return inbox.decode(message.body)
    except ValidationError as exc:
        log.error("poison message sent to DLQ", errors=exc.error_count(), message_id=message.message_id)
        return _POISON


def _attempt(message: AbstractIncomingMessage) -> int:
    return int((message.headers or {}).get(ATTEMPT_HEADER, 1))


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
    uvloop.run(serve(build(settings)))
