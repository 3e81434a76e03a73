"""Phone numbers and email addresses as 2FA factors: validation, masking, storage.

A destination is stored encrypted (bound to owner, user and kind) beside a masked form that
lists show. A factor is pending until its first code is confirmed (`enabled_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import asyncpg
import phonenumbers

from shared.crypto import SecretBox
from shared.db import Statement
from shared.errors import ValidationFailed

from api.domain.end_users import EndUser

Kind = Literal["sms", "email"]

UPSERT_PENDING_SQL = """
INSERT INTO contact_factors (owner_id, end_user_id, kind, destination, masked)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (owner_id, end_user_id, kind) DO UPDATE
SET destination = EXCLUDED.destination, masked = EXCLUDED.masked, created_at = now()
WHERE contact_factors.enabled_at IS NULL
RETURNING 1
"""
GET_SQL = """
SELECT destination, masked, enabled_at FROM contact_factors
WHERE owner_id = $1 AND end_user_id = $2 AND kind = $3
"""
ENABLE_SQL = """
UPDATE contact_factors SET enabled_at = now()
WHERE owner_id = $1 AND end_user_id = $2 AND kind = $3 AND enabled_at IS NULL
RETURNING 1
"""
USED_SQL = """
UPDATE contact_factors SET last_used_at = now()
WHERE owner_id = $1 AND end_user_id = $2 AND kind = $3 AND enabled_at IS NOT NULL
RETURNING 1
"""
DELETE_SQL = """
DELETE FROM contact_factors WHERE owner_id = $1 AND end_user_id = $2 AND kind = $3
RETURNING enabled_at
"""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where codes go: the full value (E.164 or address), its masked form, and for phones the
    country calling code."""

    value: str
    masked: str
    calling_code: int | None = None


def _invalid(field: str, message: str, code: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, details={"fields": [{"field": field, "message": message}]})


def phone(raw: str) -> Destination:
    """An E.164 number (`+14155552671`), or a 400 `INVALID_PHONE_NUMBER`."""
    message = "must be a valid phone number in E.164 form, e.g. +14155552671"
    if not raw.startswith("+") or not raw[1:].isdigit():
        raise _invalid("phoneNumber", message, "INVALID_PHONE_NUMBER")
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise _invalid("phoneNumber", message, "INVALID_PHONE_NUMBER") from None
    if not phonenumbers.is_valid_number(number):
        raise _invalid("phoneNumber", message, "INVALID_PHONE_NUMBER")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    national = str(number.national_number)
    masked = f"+{number.country_code} {'*' * max(len(national) - 4, 0)}{national[-4:]}"
    return Destination(e164, masked, number.country_code)


def email(address: str) -> Destination:
    """An address already checked by the request model; only masked here."""
    local, _, domain = address.rpartition("@")
    return Destination(address, f"{local[:1]}***@{domain}")


def _aad(user: EndUser, kind: Kind) -> bytes:
    return f"{user.owner_id}:{user.id}:contact:{kind}".encode()


async def start(
    conn: asyncpg.Connection, box: SecretBox, user: EndUser, kind: Kind, destination: Destination
) -> bool:
    """Record a pending destination; False when the method is already enabled."""
    sealed = box.encrypt(destination.value.encode(), _aad(user, kind))
    return bool(
        await conn.fetchval(UPSERT_PENDING_SQL, user.owner_id, user.id, kind, sealed, destination.masked)
    )


@dataclass(frozen=True, slots=True)
class Factor:
    kind: Kind
    destination: Destination
    enabled: bool


async def load(conn: asyncpg.Connection, box: SecretBox, user: EndUser, kind: Kind) -> Factor | None:
    row = await conn.fetchrow(GET_SQL, user.owner_id, user.id, kind)
    if row is None:
        return None
    value = box.decrypt(row["destination"], _aad(user, kind)).decode()
    destination = phone(value) if kind == "sms" else Destination(value, row["masked"])
    return Factor(kind, destination, row["enabled_at"] is not None)


async def enable(conn: asyncpg.Connection, user: EndUser, kind: Kind) -> bool:
    return await conn.fetchval(ENABLE_SQL, user.owner_id, user.id, kind) is not None


def mark_used(user: EndUser, kind: Kind) -> Statement:
    """Notes the use; returns no row when the method is no longer enabled (its code must not
    count)."""
    return Statement(USED_SQL, (user.owner_id, user.id, kind))


async def delete(conn: asyncpg.Connection, user: EndUser, kind: Kind) -> bool:
    """Remove the factor; True when it was enabled."""
    return await conn.fetchval(DELETE_SQL, user.owner_id, user.id, kind) is not None
