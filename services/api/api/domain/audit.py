"""Reading the audit log the audit service writes: pages, exports and chain checks.

Entries are the owner's only. Pages are newest first by `seq`, the order entries were recorded
in, so an entry written while someone pages is never inserted among pages already read: no gaps,
no repeats. Filters are appended from fixed SQL fragments, so each combination gets a plan that
uses its own index.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared.errors import NotFound, ValidationFailed

from api.domain.context import Context

COLUMNS = """
seq, id, event_id, type, user_id, actor_kind, actor_id, ip, user_agent, occurred_at,
recorded_at, data, chain_seq
"""
USER_KNOWN_SQL = """
SELECT EXISTS (SELECT 1 FROM end_users WHERE owner_id = $1 AND external_id = $2)
    OR EXISTS (SELECT 1 FROM audit_log WHERE owner_id = $1 AND user_id = $2)
"""
MAX_SEQ = (1 << 63) - 1
# With a `to`, entries recorded more than this long after it (late: the audit service was
# behind) are looked up by occurred_at, the rest newest first by seq (see `page_query`).
LATE_AFTER = timedelta(hours=1)
CURSOR_PREFIX = b"audit:"


@dataclass(frozen=True, slots=True)
class Filters:
    user_id: str | None = None
    event: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None


def _where(filters: Filters, first_param: int) -> tuple[str, list[Any]]:
    """`AND ...` clauses for the filters present, numbered from `first_param`."""
    clauses, params = [], []
    for fragment, value in (
        ("user_id = ${}", filters.user_id),
        ("type = ${}", filters.event),
        # An entry is recorded after its event occurred, so `from` bounds recorded_at too: the
        # partitions (by recording day) before it are never read.
        ("occurred_at >= ${0} AND recorded_at >= ${0}", filters.occurred_from),
        ("occurred_at <= ${}", filters.occurred_to),
    ):
        if value is not None:
            params.append(value)
            clauses.append(" AND " + fragment.format(first_param + len(params) - 1))
    return "".join(clauses), params


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(CURSOR_PREFIX + str(seq).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return MAX_SEQ
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if not raw.startswith(CURSOR_PREFIX):
            raise ValueError("not an audit cursor")
        seq = int(raw[len(CURSOR_PREFIX) :].decode("ascii"))
        if not 0 < seq <= MAX_SEQ:
            raise ValueError("out of range")
        return seq
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValidationFailed(
            "The cursor is not valid",
            code="INVALID_CURSOR",
            details={"fields": [{"field": "cursor", "message": "not a cursor from this API"}]},
        ) from None


def entry_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "eventId": row["event_id"],
        "type": row["type"],
        "userId": row["user_id"],
        "actor": {"kind": row["actor_kind"], "id": row["actor_id"]},
        "ip": row["ip"],
        "userAgent": row["user_agent"],
        "occurredAt": row["occurred_at"],
        "recordedAt": row["recorded_at"],
        "data": row["data"],
    }


async def check_user(conn: asyncpg.Connection, ctx: Context, user_id: str | None) -> None:
    """A `userId` filter must name one of the caller's users (or the account itself)."""
    if user_id is None or user_id == str(ctx.owner_id):
        return
    if not await conn.fetchval(USER_KNOWN_SQL, ctx.owner_id, user_id):
        raise NotFound("No such user among yours", code="USER_NOT_FOUND")


def page_query(
    owner_id: uuid.UUID, filters: Filters, limit: int, cursor: str | None
) -> tuple[str, list[Any]]:
    """The SQL and arguments of a page (`limit` + 1 rows, to tell whether another follows).

    Newest first is a scan of the seq index that stops after `limit` rows. With a `to` in the
    past, that scan would first walk everything recorded after `to` (PostgreSQL expects matches
    to be spread evenly). So then the entries recorded up to `LATE_AFTER` after `to` are read by
    seq in their few partitions, and the late ones after that through the occurred_at index
    (`seq + 0`: sorted, not scanned in seq order); the page is the newest of both. A `to`
    less than `LATE_AFTER` ago has nothing late yet: the plain scan."""
    where, params = _where(filters, 3)
    args = [owner_id, decode_cursor(cursor), *params]
    head = f"SELECT {COLUMNS} FROM audit_log WHERE owner_id = $1 AND seq < $2{where}"
    late_after = filters.occurred_to + LATE_AFTER if filters.occurred_to else None
    if late_after is None or late_after >= datetime.now(UTC):  # nothing can be late yet
        return f"{head} ORDER BY seq DESC LIMIT ${len(args) + 1}", [*args, limit + 1]
    late, n = len(args) + 1, len(args) + 2
    sql = (
        f"({head} AND recorded_at <= ${late} ORDER BY seq DESC LIMIT ${n}) UNION ALL "
        f"({head} AND recorded_at > ${late} ORDER BY seq + 0 DESC LIMIT ${n}) "
        f"ORDER BY seq DESC LIMIT ${n}"
    )
    return sql, [*args, late_after, limit + 1]


async def page(
    conn: asyncpg.Connection, ctx: Context, filters: Filters, limit: int, cursor: str | None
) -> tuple[list[asyncpg.Record], str | None]:
    await check_user(conn, ctx, filters.user_id)
    sql, args = page_query(ctx.owner_id, filters, limit, cursor)
    rows = await conn.fetch(sql, *args)
    if len(rows) <= limit:
        return list(rows), None
    return list(rows[:limit]), encode_cursor(rows[limit - 1]["seq"])


async def stream(
    conn: asyncpg.Connection, ctx: Context, filters: Filters
) -> AsyncIterator[asyncpg.Record]:
    """Every matching entry, oldest first, read through a server-side cursor (the caller holds
    a transaction): memory stays flat however long the range."""
    where, params = _where(filters, 2)
    sql = f"SELECT {COLUMNS} FROM audit_log WHERE owner_id = $1{where} ORDER BY seq"
    async for row in conn.cursor(sql, ctx.owner_id, *params, prefetch=500):
        yield row
