"""What a webhook delivery looks like on the wire: its body, its secret, its signature headers.

The body is compact JSON, key order as built, non-ASCII not escaped and no floats, so the guide's
Express receiver, which re-serialises the parsed body with `JSON.stringify(req.body)` and signs
that, gets the same bytes we signed. Two signatures are sent with one secret:
- `X-Webhook-Signature`: lowercase hex HMAC-SHA256 of the body, keyed with the secret string's
  UTF-8 bytes (the guide's receiver);
- `webhook-id` / `webhook-timestamp` / `webhook-signature` (Standard Webhooks): base64 HMAC-SHA256
  of `id.timestamp.body`, keyed with the base64-decoded part of the `whsec_` secret, one `v1,`
  entry per live secret (two during a rotation's grace period).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.envelope import dumps

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_aad(owner_id: uuid.UUID, webhook_id: uuid.UUID) -> bytes:
    """Associated data binding an encrypted secret to its webhook (see `SecretBox`)."""
    return b"webhook-secret:" + owner_id.bytes + webhook_id.bytes


def body(event_id: uuid.UUID, event_type: str, occurred_at: datetime, data: dict[str, Any]) -> bytes:
    """The delivery body of the contract, as the exact bytes that are signed and sent."""
    return dumps(
        {"id": event_id, "event": event_type, "timestamp": _iso_millis(occurred_at), "data": data}
    )


def _iso_millis(moment: datetime) -> str:
    """`2026-01-31T12:00:00.123Z`: the form JavaScript's `Date.toISOString()` prints."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hex_signature(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def standard_signature(secret: str, message_id: str, timestamp: int, payload: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + payload
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(
    *, event_id: str, event_type: str, payload: bytes, secrets_newest_first: Sequence[str], now: int
) -> dict[str, str]:
    """Every header of one attempt. The first secret is the current one; any others are in
    their grace period after a rotation and sign too (`X-Webhook-Signature-Previous`)."""
    current, *previous = secrets_newest_first
    result = {
        "Content-Type": "application/json",
        "User-Agent": "2fa-service-webhooks/1",
        "X-Webhook-Event": event_type,
        "X-Webhook-Id": event_id,
        "X-Webhook-Timestamp": str(now),
        "X-Webhook-Signature": hex_signature(current, payload),
        "webhook-id": event_id,
        "webhook-timestamp": str(now),
        "webhook-signature": " ".join(
            standard_signature(s, event_id, now, payload) for s in secrets_newest_first
        ),
    }
    if previous:
        result["X-Webhook-Signature-Previous"] = ",".join(hex_signature(s, payload) for s in previous)
    return result
