"""Backup codes: 10 single-use codes, stored only as keyed hashes (HMAC under a key derived from
`ENCRYPTION_KEY`). A code is 8 characters from a 31-letter alphabet without look-alikes
(about 40 bits), shown as `xxxx-xxxx`; input is normalised (case, spaces, dashes) before hashing.
"""

from __future__ import annotations

import re
import secrets

import asyncpg

from shared.crypto import SecretBox
from shared.db import Statement

from api.domain.end_users import EndUser

COUNT = 10
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no i, l, o, 0, 1
PATTERN = re.compile(rf"^[{ALPHABET}]{{8}}$")

DELETE_ALL_SQL = "DELETE FROM backup_codes WHERE owner_id = $1 AND end_user_id = $2"
INSERT_SQL = "INSERT INTO backup_codes (owner_id, end_user_id, code_hash) VALUES ($1, $2, $3)"
CONSUME_SQL = """
UPDATE backup_codes SET used_at = now()
WHERE owner_id = $1 AND end_user_id = $2 AND code_hash = $3 AND used_at IS NULL
RETURNING 1
"""


def normalise(code: str) -> str:
    return re.sub(r"[\s\-]", "", code).lower()


def looks_like_backup_code(code: str) -> bool:
    return bool(PATTERN.match(normalise(code)))


def _new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


async def regenerate(conn: asyncpg.Connection, box: SecretBox, user: EndUser) -> list[str]:
    """Replace all of the user's codes with 10 new ones (in the caller's transaction)."""
    codes = [_new_code() for _ in range(COUNT)]
    await conn.execute(DELETE_ALL_SQL, user.owner_id, user.id)
    await conn.executemany(
        INSERT_SQL, [(user.owner_id, user.id, box.keyed_hash(normalise(c))) for c in codes]
    )
    return codes


def consume(box: SecretBox, user: EndUser, code: str) -> Statement:
    """Uses a code once; returns no row when it is unknown or already used (atomic under races)."""
    return Statement(CONSUME_SQL, (user.owner_id, user.id, box.keyed_hash(normalise(code))))


async def delete_all(conn: asyncpg.Connection, user: EndUser) -> None:
    await conn.execute(DELETE_ALL_SQL, user.owner_id, user.id)
