"""Keyset pagination with opaque cursors: `(created_at, id)` of the last row, base64-encoded.

A cursor only says where to continue; queries stay scoped by owner, so a forged cursor can at
worst skip rows of the caller's own. Undecodable cursors are a 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.errors import ValidationFailed

T = TypeVar("T")

START = (datetime(9999, 12, 31, tzinfo=UTC), uuid.UUID(int=(1 << 128) - 1))


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID]:
    if not cursor:
        return START
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not isinstance(row_id, str):
            raise ValueError("not a cursor")
        return created_at.astimezone(UTC), uuid.UUID(row_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError, AttributeError):
        raise ValidationFailed(
            "The cursor is not valid",
            code="INVALID_CURSOR",
            details={"fields": [{"field": "cursor", "message": "not a cursor from this API"}]},
        ) from None


async def fetch_page(
    conn: Any, sql: str, owner_id: uuid.UUID, limit: int, cursor: str | None, *params: Any
) -> tuple[list[Any], str | None]:
    """One page of an owner's rows, newest first: `sql` takes the owner, the cursor's
    (created_at, id), any `params`, and the row limit last; rows carry `created_at` and `id`."""
    created_at, last_id = decode_cursor(cursor)
    rows = await conn.fetch(sql, owner_id, created_at, last_id, *params, limit + 1)
    return split(rows, limit, lambda r: (r["created_at"], r["id"]))


def split(
    rows: Sequence[T], limit: int, position: Callable[[T], tuple[datetime, uuid.UUID]]
) -> tuple[list[T], str | None]:
    """Rows fetched with `limit + 1`: the page, and the cursor of the next one (or None)."""
    page = list(rows[:limit])
    if len(rows) <= limit:
        return page, None
    return page, encode_cursor(*position(page[-1]))

