"""Remembered devices: a signed token (DEVICE_TOKEN_SECRET, 30 days) that lets the next login of
the same account skip 2FA. It carries the user's device generation, which disabling 2FA bumps,
so every remembered device dies with it."""

from __future__ import annotations

from shared.config import Settings
from shared.errors import Unauthorized

from api.domain import tokens
from api.domain.end_users import EndUser

TTL_SECONDS = 30 * 24 * 3600


def issue(settings: Settings, user: EndUser) -> str:
    return tokens.encode(
        "device", user.external_id, settings.DEVICE_TOKEN_SECRET, TTL_SECONDS,
        gen=user.device_generation, own=str(user.owner_id),
    )


def is_valid(settings: Settings, token: str | None, user: EndUser) -> bool:
    """True when the token was issued to this user under its current device generation."""
    if not token:
        return False
    try:
        claims = tokens.decode(token, "device", settings.DEVICE_TOKEN_SECRET)
    except Unauthorized:
        return False
    return (
        claims.get("sub") == user.external_id
        and claims.get("own") == str(user.owner_id)
        and claims.get("gen") == user.device_generation
    )
