"""Composition root of the webhook-dispatcher: `build(settings)` is used by `__main__` and tests.

It takes events from its own queue (every event type) and delivery jobs (retries, deferrals)
from `<queue>.jobs`; both are acked only after the attempt they cause is recorded.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from shared import broker, db
from shared.config import Settings
from shared.consumer import Consumer, Inbox, Wiring
from shared.crypto import SecretBox
from shared.health import Health

from webhook_dispatcher.dispatcher import DeliveryJob, Dispatcher
from webhook_dispatcher.sender import Sender


def build(settings: Settings, *, health_port: int | None = None) -> Consumer:
    """The webhook-dispatcher consumer with its queues, handlers and health port."""
    topology = broker.Topology(settings.BROKER_PREFIX)
    jobs_queue = topology.jobs_queue(broker.WEBHOOK_DISPATCHER)

    async def setup(stack: AsyncExitStack, health: Health) -> Wiring:
        pool = await stack.enter_async_context(db.create_pool(settings))
        health.register("database", lambda: db.ping(pool))
        sender = Sender(settings)
        await sender.open()
        stack.push_async_callback(sender.close)

        async def publish_job(body: bytes, delay: int | None) -> None:
            await consumer.publish(jobs_queue, body, delay=delay)

        dispatcher = Dispatcher(
            settings, pool, SecretBox(settings.ENCRYPTION_KEY), sender, publish_job
        )
        dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
        jobs = Inbox(
            jobs_queue,
            DeliveryJob.from_bytes,
            dispatcher.on_job,
            delays=[*settings.WEBHOOK_RETRY_DELAYS, settings.WEBHOOK_DEFER_SECONDS],
        )
        return Wiring(on_event=dispatcher.on_event, inboxes=[jobs])

    consumer = Consumer(
        settings,
        broker.WEBHOOK_DISPATCHER,
        setup,
        health_port=settings.WEBHOOK_DISPATCHER_HEALTH_PORT if health_port is None else health_port,
        retry_delays=settings.WEBHOOK_RETRY_DELAYS,
        prefetch=settings.WEBHOOK_MAX_IN_FLIGHT,
    )
    return consumer
