"""Helpers for TOTP tests: codes from pyotp, and enabling TOTP through the public API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pyotp
from aiohttp.test_utils import TestClient


def code_at(secret: str, offset_steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset_steps * 30)


def wrong_code(secret: str) -> str:
    """A well-formed code that is valid in none of the steps the service accepts now."""
    valid = {code_at(secret, step) for step in (-2, -1, 0, 1, 2)}
    return next(digit * 6 for digit in "0123456789" if digit * 6 not in valid)


async def enable_totp(client: TestClient, headers: dict[str, str], user_id: str | None = None) -> dict[str, Any]:
    """Set up and confirm TOTP; returns {secret, backupCodes}. The confirming code uses the
    previous step so that the current step is still free for the test's own first code."""
    body = {"userId": user_id} if user_id else {}
    r = await client.post("/api/2fa/totp/setup", json=body, headers=headers)
    assert r.status == 200, await r.text()
    secret = (await r.json())["secret"]
    # Near the end of a step the previous step's code would be two steps old on arrival.
    remaining = 30 - time.time() % 30
    if remaining < 1.5:
        await asyncio.sleep(remaining + 0.05)
    r = await client.post("/api/2fa/totp/verify-setup", json={**body, "code": code_at(secret, -1)}, headers=headers)
    assert r.status == 200, await r.text()
    return {"secret": secret, "backupCodes": (await r.json())["backupCodes"]}
