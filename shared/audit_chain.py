"""The hash chain of an owner's audit entries: what is hashed, and how a chain is checked.

Entry n's hash is SHA-256 over the previous entry's hash and the canonical JSON of entry n's
content (sorted keys, compact, UTF-8). Changing any field of a stored entry, or removing or
inserting one, changes a hash that the next entry has already committed to. The first entry of
an owner links to 32 zero bytes; after retention has dropped older partitions (the oldest
part of every chain, since partitions are by recording day), checking starts at the oldest
remaining entry and trusts its link to what was dropped.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared import json_codec

GENESIS = bytes(32)
CHAIN_SQL = """
SELECT id, owner_id, chain_seq, event_id, type, user_id, actor_kind, actor_id, ip, user_agent,
       occurred_at, recorded_at, data, prev_hash, hash
FROM audit_log WHERE owner_id = $1 ORDER BY chain_seq
"""


def content(entry: Mapping[str, Any]) -> bytes:
    """The canonical bytes of one entry's content (everything but seq and the hashes)."""
    occurred: datetime = entry["occurred_at"]
    return json_codec.dumps(
        {
            "chainSeq": entry["chain_seq"],
            "id": str(entry["id"]),
            "ownerId": str(entry["owner_id"]),
            "eventId": str(entry["event_id"]),
            "type": entry["type"],
            "userId": entry["user_id"],
            "actor": [entry["actor_kind"], entry["actor_id"]],
            "ip": entry["ip"],
            "userAgent": entry["user_agent"],
            "occurredAt": occurred.astimezone(UTC).isoformat(),
            "recordedAt": entry["recorded_at"].astimezone(UTC).isoformat(),
            "data": entry["data"],
        },
        sort_keys=True,
    )


def link(prev_hash: bytes, entry: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(prev_hash + content(entry)).digest()


@dataclass(frozen=True, slots=True)
class Verdict:
    valid: bool
    checked: int
    first_bad_seq: int | None = None  # chain_seq of the first entry that does not verify
    first_bad_id: str | None = None
    reason: str | None = None


class ChainCheck:
    """Checks entries fed one at a time in chain order (ascending chain_seq)."""

    def __init__(self) -> None:
        self._previous: Mapping[str, Any] | None = None
        self.checked = 0

    def add(self, entry: Mapping[str, Any]) -> Verdict | None:
        """None while the chain holds; the failing verdict at the first bad entry."""
        previous, reason = self._previous, None
        if previous is None:
            if entry["chain_seq"] == 1 and bytes(entry["prev_hash"]) != GENESIS:
                reason = "the first entry does not start the chain"
        elif entry["chain_seq"] != previous["chain_seq"] + 1:
            reason = f"entry {previous['chain_seq'] + 1} is missing"
        elif bytes(entry["prev_hash"]) != bytes(previous["hash"]):
            reason = "its link does not match the previous entry's hash"
        if reason is None and link(bytes(entry["prev_hash"]), entry) != bytes(entry["hash"]):
            reason = "its content does not match its hash"
        if reason is not None:
            return Verdict(False, self.checked, entry["chain_seq"], str(entry["id"]), reason)
        self._previous = entry
        self.checked += 1
        return None

    def result(self) -> Verdict:
        return Verdict(True, self.checked)


def verify(entries: Iterable[Mapping[str, Any]]) -> Verdict:
    check = ChainCheck()
    for entry in entries:
        if (failed := check.add(entry)) is not None:
            return failed
    return check.result()


async def verify_owner(conn: asyncpg.Connection, owner_id: uuid.UUID) -> Verdict:
    """Check one owner's whole chain, read through a cursor in one consistent snapshot."""
    check = ChainCheck()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(CHAIN_SQL, owner_id, prefetch=1000):
            if (failed := check.add(row)) is not None:
                return failed
    return check.result()
