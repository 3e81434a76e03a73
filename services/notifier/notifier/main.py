"""Composition root of the notifier consumer: `build(settings)` is used by `__main__` and tests."""

from __future__ import annotations

from contextlib import AsyncExitStack

from shared import broker
from shared.config import Settings
from shared.consumer import Consumer, Handler
from shared.health import Health

from notifier.handlers import handle


def build(settings: Settings, *, health_port: int | None = None) -> Consumer:
    """The notifier consumer with its queue, handler and health port."""

    async def setup(stack: AsyncExitStack, health: Health) -> Handler:
        return handle

    return Consumer(
        settings,
        broker.NOTIFIER,
        setup,
        health_port=settings.NOTIFIER_HEALTH_PORT if health_port is None else health_port,
    )
