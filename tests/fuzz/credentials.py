"""Credentials for the fuzzer, made through the public API with `requests`: a fresh account (and,
for API keys, a fresh key with every scope) per operation, so that what one operation's cases do
to their caller (a failure streak, a lockout, a used-up rate limit) never reaches another's."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from tests.api_client import PASSWORD
from tests.ids import random_email, random_username

TIMEOUT = 30
# Operations whose success ends the caller's session: each of their cases logs in anew.
SESSION_ENDING = frozenset({"POST /api/auth/logout"})


def _data(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["data"]


@dataclass
class Credentials:
    """Authorization headers of one kind ("user" or "apiKey") for each operation."""

    kind: str
    base_url: str
    session: requests.Session
    _usernames: dict[str, str] = field(default_factory=dict)
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def _post(self, path: str, body: dict, status: int, **kwargs) -> dict:
        url = f"{self.base_url}/api{path}"
        response = self.session.post(url, json=body, timeout=TIMEOUT, **kwargs)
        return _data(response, status)

    def _login(self, username: str) -> dict[str, str]:
        tokens = self._post("/auth/login", {"emailOrUsername": username, "password": PASSWORD}, 200)
        return {"Authorization": f"Bearer {tokens['accessToken']}"}

    def _new(self, label: str) -> dict[str, str]:
        body = {"email": random_email(), "username": random_username(), "password": PASSWORD}
        username = self._post("/auth/register", body, 201)["user"]["username"]
        self._usernames[label] = username
        user_auth = self._login(username)
        if self.kind == "user":
            return user_auth
        key = self._post(
            "/api-keys",
            {"name": f"fuzz {label}", "scopes": ["*"], "rateLimit": 1_000_000},
            201,
            headers=user_auth,
        )
        return {"X-API-Key": key["apiKey"]}

    def accepted(self, headers: dict[str, str]) -> bool:
        """Whether the API still takes these credentials."""
        url = f"{self.base_url}/api/auth/me"
        return self.session.get(url, headers=headers, timeout=TIMEOUT).status_code == 200

    def current(self, label: str) -> dict[str, str]:
        """The headers last handed out for `label`."""
        return dict(self._headers.get(label, {}))

    def headers_for(self, label: str) -> dict[str, str]:
        """The headers for one case of the operation `label` (e.g. "GET /api/auth/me")."""
        if label not in self._headers:
            self._headers[label] = self._new(label)
        elif self.kind == "user" and label in SESSION_ENDING:
            self._headers[label] = self._login(self._usernames[label])
        return dict(self._headers[label])
