"""Event handlers of the webhook-dispatcher consumer."""

from __future__ import annotations

import structlog

from shared.events import Event

log = structlog.get_logger(__name__)


async def handle(event: Event) -> None:
    """Acknowledge the event; this service does no work on it yet."""
    log.debug("event received", type=event.type.value)
