"""Who is calling: an account with its user token, or an API key acting for its owner.

Every domain query is scoped by `owner_id`, which only ever comes from here: from the verified
token's subject or from the key's row. Nothing a client sends can choose the owner.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from shared.events import Actor

ALL_SCOPES = frozenset(
    {"*", "2fa:read", "2fa:write", "user:read", "webhooks:read", "webhooks:write", "audit:read"}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    kind: Literal["user", "apiKey"]
    owner_id: uuid.UUID
    scopes: frozenset[str]
    api_key_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None

    @property
    def actor(self) -> Actor:
        if self.kind == "apiKey":
            return Actor(kind="apiKey", id=str(self.api_key_id))
        return Actor(kind="user", id=str(self.owner_id))

    def has_scope(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes
