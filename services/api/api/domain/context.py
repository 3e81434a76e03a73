"""The context a domain verb runs in: whose data (owner), who acts, and from where.

Domain functions take a `Context` instead of loose ids, and build their events through it, so
every event carries the same owner, actor, ip and user agent as the request that caused it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from shared.events import Actor, Event, EventType


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Context:
    owner_id: uuid.UUID
    actor: Actor
    origin: Origin = Origin()

    @classmethod
    def for_account(cls, account_id: uuid.UUID, origin: Origin) -> Context:
        """The account acting on its own data (a user token, or a login in progress)."""
        return cls(owner_id=account_id, actor=Actor(kind="user", id=str(account_id)), origin=origin)

    def with_owner(self, owner_id: uuid.UUID) -> Context:
        return replace(self, owner_id=owner_id)

    def event(self, type: EventType, data: Any, user_id: str | None) -> Event:
        return Event.build(
            type,
            data,
            ownerId=self.owner_id,
            userId=user_id,
            actor=self.actor,
            ip=self.origin.ip,
            userAgent=self.origin.user_agent,
        )
