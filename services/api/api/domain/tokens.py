"""JSON Web Tokens: access and refresh tokens, HS256 with separate secrets.

The algorithm is pinned on decode (so `alg: none` and HS/RS confusion are refused), `exp`,
`iat`, `sub` and `typ` are required, and `typ` must match what the caller expects, so a refresh
token can never be used as an access token or the other way round.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from shared.errors import Unauthorized

ALGORITHM = "HS256"
# A password login waiting for its second factor must finish within this time.
TEMP_TTL_SECONDS = 300
TokenType = Literal["access", "refresh", "temp", "device"]
REQUIRED_CLAIMS = ["exp", "iat", "sub", "typ"]


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def as_payload(self) -> dict[str, Any]:
        return {
            "accessToken": self.access_token,
            "refreshToken": self.refresh_token,
            "expiresIn": self.expires_in,
            "tokenType": "Bearer",
        }


def encode(typ: TokenType, subject: str, secret: str, ttl_seconds: int, **claims: Any) -> str:
    """Sign a token of the given type for `subject`, valid for `ttl_seconds`."""
    now = int(time.time())
    payload = {"sub": subject, "typ": typ, "iat": now, "exp": now + ttl_seconds, **claims}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode(token: str, typ: TokenType, secret: str) -> dict[str, Any]:
    """Verify signature, expiry and type; any failure is a 401 with a specific code."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": REQUIRED_CLAIMS}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The token has expired", code="TOKEN_EXPIRED") from None
    except jwt.PyJWTError:
        raise Unauthorized("The token is invalid", code="INVALID_TOKEN") from None
    if claims.get("typ") != typ:
        raise Unauthorized(f"Expected a {typ} token", code="INVALID_TOKEN")
    return claims


def subject_uuid(claims: dict[str, Any], claim: str = "sub") -> uuid.UUID:
    try:
        return uuid.UUID(str(claims[claim]))
    except (KeyError, ValueError):
        raise Unauthorized("The token is invalid", code="INVALID_TOKEN") from None
