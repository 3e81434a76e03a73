"""The integration guide's Python TwoFactorAuthClient, corrected: it can finish TOTP setup (the
guide's cannot, so 2FA never turns on), lists a user's methods and checks login codes, sets a
timeout, and raises `TwoFactorError` with the service's error code instead of returning the
error body as if it were a result. Methods return the response's `data`."""

from __future__ import annotations

from typing import Any

import requests

TIMEOUT_SECONDS = 10


class TwoFactorError(Exception):
    """The 2FA service refused a call: HTTP status, error code (e.g. INVALID_CODE), message."""

    def __init__(self, status: int, code: str | None, message: str, retry_after: int | None = None):
        super().__init__(f"{code or status}: {message}")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def read_data(response: requests.Response) -> Any:
    """The `data` of a success, or raise the error that the envelope names."""
    try:
        body = response.json()
    except ValueError:  # a proxy in between may answer HTML
        body = {}
    if not response.ok:
        error = body.get("error", {})
        retry_after = response.headers.get("Retry-After")
        raise TwoFactorError(
            response.status_code,
            error.get("code"),
            error.get("message", response.reason),
            int(retry_after) if retry_after else None,
        )
    return body["data"]


class TwoFactorAuthClient:
    """Calls the 2FA service with an API key, for your users (`user_id` is your id for them)."""

    def __init__(self, api_key: str, base_url: str = "http://localhost:3001/api"):
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = api_key

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}{path}"
        return read_data(self.session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs))

    def setup_totp(self, user_id: str) -> dict[str, Any]:
        """Start TOTP setup: {secret, qrCode, otpauthUrl}. 2FA stays off until verify_totp_setup."""
        return self._call("POST", "/2fa/totp/setup", json={"userId": user_id})

    def verify_totp_setup(self, user_id: str, code: str) -> dict[str, Any]:
        """Confirm setup with a first code and turn TOTP on: {backupCodes}."""
        return self._call("POST", "/2fa/totp/verify-setup", json={"userId": user_id, "code": code})

    def methods(self, user_id: str) -> list[dict[str, Any]]:
        """The user's enabled methods, e.g. [{"type": "totp", ...}]; [] without 2FA."""
        return self._call("GET", "/2fa/methods", params={"userId": user_id})

    def verify_code(self, user_id: str, code: str) -> dict[str, Any]:
        """Check a login code (TOTP or backup code): {verified, method}; 401 if it is wrong."""
        return self._call("POST", "/2fa/verify", json={"userId": user_id, "code": code})
