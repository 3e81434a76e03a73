"""Collision-free test data."""

from __future__ import annotations

import secrets


def token(n: int = 6) -> str:
    return secrets.token_hex(n)


def random_username() -> str:
    return f"user_{token()}"


def random_email() -> str:
    return f"{random_username()}@example.com"


def random_user_id() -> str:
    return f"user-{token()}"
