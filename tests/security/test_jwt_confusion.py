"""JWT confusion against every kind of token the service issues: access, refresh, temp (login
waiting for its second factor) and device (remembered device). Each attack re-signs or reshapes
the claims of a token the service really issued, so that a check that was skipped would let it
through; each is refused with a 401 and a code (a forged device token is ignored: 2FA is still
required), never a 500. A genuine re-signing of the same claims, sent last, is the control.

tests/api/test_tokens.py holds the detailed access-token cases; this matrix carries the same
attacks to the other three kinds, and adds embedded keys (`jwk`, `jku`, `kid`), an empty HMAC
key, `nbf`/`iat` in the future and the service's own tokens of the other kinds.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.api.test_tokens import hand_made
from tests.api_client import PASSWORD, new_account
from tests.security.helpers import outcome
from tests.totp_helpers import code_at, enable_totp

KINDS = ("access", "refresh", "temp", "device")
SECRET_OF = {
    "access": "JWT_ACCESS_SECRET",
    "refresh": "JWT_REFRESH_SECRET",
    "temp": "JWT_ACCESS_SECRET",
    "device": "DEVICE_TOKEN_SECRET",
}


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def genuine(claims: dict[str, Any], secret: str, **changes: Any) -> str:
    """The claims with `changes` (None removes a claim), honestly signed with `secret`."""
    changed = {k: v for k, v in {**claims, **changes}.items() if v is not None}
    return hand_made({"alg": "HS256", "typ": "JWT"}, changed, secret)


def attacker_signed(claims: dict[str, Any], alg: str) -> str:
    """Signed with the attacker's own asymmetric key, its public half embedded as `jwk`."""
    if alg == "RS256":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return jwt.encode(claims, key, algorithm=alg, headers={"jwk": jwk})


def forgeries(kind: str, real: dict[str, str], settings: Any) -> dict[str, str]:
    """Every attack on a token of `kind`, built from the real one's claims."""
    own = getattr(settings, SECRET_OF[kind])
    claims = claims_of(real[kind])
    now = int(time.time())
    unsigned = hand_made({"alg": "none", "typ": "JWT"}, claims, None)
    attacks = {
        "alg none": unsigned,
        "alg none, genuine signature kept": unsigned + real[kind].rsplit(".", 1)[1],
        "another secret": hand_made({"alg": "HS256"}, claims, secrets.token_hex(32)),
        "empty HMAC key": hand_made({"alg": "HS256"}, claims, ""),
        "kid at /dev/null, empty key": hand_made(
            {"alg": "HS256", "kid": "../../../../dev/null"}, claims, ""),
        "jku to the attacker, another secret": hand_made(
            {"alg": "HS256", "jku": "http://127.0.0.1:9/jwks.json"}, claims, secrets.token_hex(32)),
        "alg RS256 header, HMAC with the right secret": hand_made({"alg": "RS256"}, claims, own),
        "alg HS512 with the right secret": jwt.encode(claims, own, algorithm="HS512"),
        "RS256 by the attacker's key, jwk embedded": attacker_signed(claims, "RS256"),
        "ES256 by the attacker's key, jwk embedded": attacker_signed(claims, "ES256"),
        "expired": genuine(claims, own, iat=now - 7200, exp=now - 60),
        "not yet valid (nbf)": genuine(claims, own, nbf=now + 3600),
        "issued in the future (iat)": genuine(claims, own, iat=now + 3600, exp=now + 7200),
        "garbage": "garbage",
        "three dots": "a.b.c",
        "header only": real[kind].split(".")[0] + "..",
    }
    for name in ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "DEVICE_TOKEN_SECRET"):
        if name != SECRET_OF[kind]:
            attacks[f"signed with {name}"] = genuine(claims, getattr(settings, name))
    for typ in ("access", "refresh", "temp", "device", "ACCESS", ""):
        if typ != kind:
            attacks[f"typ {typ!r}"] = genuine(claims, own, typ=typ)
    for claim in ("typ", "exp", "iat", "sub"):
        attacks[f"no {claim}"] = genuine(claims, own, **{claim: None})
    for other in KINDS:
        if other != kind:
            attacks[f"the service's own {other} token"] = real[other]
    return attacks


async def issued_tokens(client: Any) -> tuple[Any, dict[str, str], dict[str, Any]]:
    """An account with TOTP, and one real token of each kind issued to it."""
    account = await new_account(client)
    enabled = await enable_totp(client, account.auth)
    login = {"emailOrUsername": account.username, "password": PASSWORD}
    r = await client.post("/api/auth/login", json=login)
    temp = (await r.json())["tempToken"]
    body = {"tempToken": temp, "code": code_at(enabled["secret"]), "rememberDevice": True}
    r = await client.post("/api/2fa/verify", json=body)
    assert r.status == 200, await r.text()
    done = await r.json()
    r = await client.post("/api/auth/login", json=login)
    fresh_temp = (await r.json())["tempToken"]
    real = {"access": done["accessToken"], "refresh": done["refreshToken"], "temp": fresh_temp,
            "device": done["deviceToken"]}
    return account, real, enabled


def sender(
    client: Any, kind: str, account: Any, enabled: dict[str, Any]
) -> Callable[[str], Awaitable[Any]]:
    """How a token of `kind` is presented, answering (status, code) or "2FA required"."""
    login = {"emailOrUsername": account.username, "password": PASSWORD}

    async def send(token: str) -> Any:
        if kind == "access":
            r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
            return await outcome(r)
        if kind == "refresh":
            return await outcome(await client.post("/api/auth/refresh", json={"refreshToken": token}))
        if kind == "temp":
            # A right (backup) code: only the token can be what refuses it.
            body = {"tempToken": token, "code": enabled["backupCodes"][0]}
            return await outcome(await client.post("/api/2fa/verify", json=body))
        r = await client.post("/api/auth/login", json={**login, "deviceToken": token})
        data = await r.json()
        assert r.status == 200, data
        return "2FA required" if data.get("requiresTwoFactor") else "logged in without 2FA"

    return send


async def attack(client: Any, settings: Any, kind: str) -> None:
    account, real, enabled = await issued_tokens(client)
    send = sender(client, kind, account, enabled)
    outcomes = {name: await send(token) for name, token in forgeries(kind, real, settings).items()}
    if kind == "device":
        expected = {name: "2FA required" for name in outcomes}
    else:
        expected = {
            name: (401, "TOKEN_EXPIRED" if name == "expired" else "INVALID_TOKEN") for name in outcomes
        }
    assert outcomes == expected
    control = genuine(claims_of(real[kind]), getattr(settings, SECRET_OF[kind]))
    assert await send(control) in {(200, None), "logged in without 2FA"}, "the control gets through"


async def test_forged_access_tokens_are_refused(client, settings):
    await attack(client, settings, "access")


async def test_forged_refresh_tokens_are_refused(client, settings):
    await attack(client, settings, "refresh")


async def test_forged_temp_tokens_are_refused_even_with_a_right_code(client, settings):
    await attack(client, settings, "temp")


async def test_forged_device_tokens_never_skip_2fa(client, settings):
    await attack(client, settings, "device")
