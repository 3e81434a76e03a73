"""Typed keys for everything stored on the application and on requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from aiohttp import web

from shared.broker import Publisher
from shared.cache import Cache
from shared.config import Settings
from shared.crypto import SecretBox
from shared.health import Health
from shared.outbox import Relay

from api.deadlines import Deadlines
from api.domain import api_keys, twofa
from api.principal import Principal

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
CACHE = web.AppKey("cache", Cache)
PUBLISHER = web.AppKey("publisher", Publisher)
RELAY = web.AppKey("relay", Relay)
HEALTH = web.AppKey("health", Health)
CPU_POOL = web.AppKey("cpu_pool", ThreadPoolExecutor)
# Runs a CPU-bound function (bcrypt, QR rendering) in CPU_POOL without blocking the loop.
OFFLOAD = web.AppKey("offload", Callable[..., Awaitable[Any]])
DUMMY_HASH = web.AppKey("dummy_hash", bytes)
# route -> Access (declared in routes.py, enforced by auth.auth_middleware)
ACCESS = web.AppKey("access", dict)
DEADLINES = web.AppKey("deadlines", Deadlines)
OPENAPI = web.AppKey("openapi", dict)
TWOFA = web.AppKey("twofa", twofa.Deps)
# Encrypts what must be read back (TOTP secrets, webhook signing secrets); from ENCRYPTION_KEY.
SECRET_BOX = web.AppKey("secret_box", SecretBox)
# API keys this process authenticated lately (API_KEY_CACHE_SECONDS).
KNOWN_KEYS = web.AppKey("known_keys", api_keys.KnownKeys)

PRINCIPAL = web.RequestKey("principal", Principal)
RATE_HEADERS = web.RequestKey("rate_headers", dict)
REQUEST_ID = web.RequestKey("request_id", str)
