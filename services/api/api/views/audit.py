"""/audit-logs: the owner's audit entries (newest first), streamed exports, chain checks."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from aiohttp import web

from shared import audit_chain
from shared.envelope import dumps, ok, page
from shared.errors import ValidationFailed

from api.domain import audit
from api.keys import DEADLINES, POOL
from api.parsing import parse_query
from api.schemas import AuditExportQuery, AuditFilterQuery, AuditQuery
from api.views.common import context_of

CSV_COLUMNS = [
    "id", "eventId", "type", "userId", "actorKind", "actorId", "ip", "userAgent",
    "occurredAt", "recordedAt", "data",
]
EXPORT_CHUNK_ROWS = 500


def filters_of(query: AuditFilterQuery) -> audit.Filters:
    if query.from_ is not None and query.to is not None and query.from_ > query.to:
        raise ValidationFailed(
            "`from` is after `to`",
            code="INVALID_RANGE",
            details={"fields": [{"field": "from", "message": "must not be after `to`"}]},
        )
    return audit.Filters(query.userId, query.event, query.from_, query.to)


async def list_entries(request: web.Request) -> web.Response:
    query = parse_query(request, AuditQuery)
    filters = filters_of(query)
    async with request.app[POOL].acquire() as conn:
        rows, cursor = await audit.page(conn, context_of(request), filters, query.limit, query.cursor)
    return page([audit.entry_view(r) for r in rows], cursor)


def _csv_cell(value: Any) -> Any:
    # A cell starting like a formula is neutralised, so opening the export in a spreadsheet
    # cannot run what an end user put in their userId or user agent.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_row(entry: dict[str, Any]) -> list[Any]:
    return [
        _csv_cell(v)
        for v in (
            str(entry["id"]), str(entry["eventId"]), entry["type"], entry["userId"],
            entry["actor"]["kind"], entry["actor"]["id"], entry["ip"], entry["userAgent"],
            json.loads(dumps(entry["occurredAt"])), json.loads(dumps(entry["recordedAt"])),
            dumps(entry["data"]).decode(),
        )
    ]


async def export(request: web.Request) -> web.StreamResponse:
    """The matching entries, oldest first, as NDJSON or CSV, streamed as they are read."""
    query = parse_query(request, AuditExportQuery)
    filters = filters_of(query)
    ctx = context_of(request)
    is_csv = query.format == "csv"
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if is_csv else "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="audit-log.{query.format}"',
        }
    )
    async with request.app[POOL].acquire() as conn:
        await audit.check_user(conn, ctx, filters.user_id)
        await response.prepare(request)
        request.app[DEADLINES].lift()  # streaming: as long as the export takes
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            if is_csv:
                writer.writerow(CSV_COLUMNS)
            rows = 0
            async for row in audit.stream(conn, ctx, filters):
                entry = audit.entry_view(row)
                if is_csv:
                    writer.writerow(_csv_row(entry))
                else:
                    buffer.write(dumps(entry).decode() + "\n")
                rows += 1
                if rows % EXPORT_CHUNK_ROWS == 0:
                    await response.write(buffer.getvalue().encode())
                    buffer.seek(0)
                    buffer.truncate()
            await response.write(buffer.getvalue().encode())
    await response.write_eof()
    return response


async def verify(request: web.Request) -> web.Response:
    """Recompute the caller's hash chain and name the first entry that does not verify."""
    ctx = context_of(request)
    async with request.app[POOL].acquire() as conn:
        verdict = await audit_chain.verify_owner(conn, ctx.owner_id)
    bad = None
    if not verdict.valid:
        bad = {"chainSeq": verdict.first_bad_seq, "id": verdict.first_bad_id, "reason": verdict.reason}
    return ok({"valid": verdict.valid, "checked": verdict.checked, "firstBadEntry": bad})
