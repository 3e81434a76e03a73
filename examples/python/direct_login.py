"""The guide's Pattern 2 (direct integration), corrected: the user logs in to the 2FA service
itself, with a second step when 2FA is on; failures raise instead of returning None. No API key
is needed (the guide's client sent one; the service ignores it on this call).

Usage: [TFA_BASE_URL=http://localhost:3001/api] python direct_login.py <email or username>
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable

import requests

from tfa_client import TIMEOUT_SECONDS, TwoFactorError, read_data


def _post(url: str, body: dict[str, str]) -> dict:
    # read_data raises on 401 INVALID_CREDENTIALS, 401 INVALID_CODE, 429 TWO_FACTOR_LOCKED ...
    return read_data(requests.post(url, json=body, timeout=TIMEOUT_SECONDS))


def login(
    email_or_username: str,
    password: str,
    get_code: Callable[[list[str]], str],
    base_url: str = "http://localhost:3001/api",
) -> str:
    """Log in and return the access token; `get_code(methods)` asks the user for a code (the
    guide's prompt2FA)."""
    credentials = {"emailOrUsername": email_or_username, "password": password}
    data = _post(f"{base_url}/auth/login", credentials)
    if not data.get("requiresTwoFactor"):
        return data["accessToken"]
    # Only TOTP and backup codes are shown here: a user whose methods are only "sms" or "email"
    # gets a code after POST /2fa/challenge {tempToken, method}.
    code = get_code(data["methods"])
    # The temp token alone authorises this call.
    verified = _post(f"{base_url}/2fa/verify", {"tempToken": data["tempToken"], "code": code})
    return verified["accessToken"]


def ask_code(methods: list[str]) -> str:
    return input(f"2FA code ({', '.join(methods)} or a backup code): ").strip()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python direct_login.py <email or username>")
    base_url = os.getenv("TFA_BASE_URL", "http://localhost:3001/api")
    try:
        access_token = login(sys.argv[1], getpass.getpass(), ask_code, base_url)
    except TwoFactorError as error:
        sys.exit(f"\nLogin failed: {error}")
    print(f"\nLogged in. Access token: {access_token}")
