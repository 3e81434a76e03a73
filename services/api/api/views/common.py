"""Small helpers every view uses to reach the composition root's resources."""

from __future__ import annotations

from aiohttp import web

from api.domain.context import Context, Origin
from api.keys import PRINCIPAL, SETTINGS
from api.principal import Principal


def origin_of(request: web.Request) -> Origin:
    ip = request.remote
    if request.app[SETTINGS].TRUST_PROXY_HEADERS:
        forwarded = request.headers.get("X-Forwarded-For", "")
        ip = forwarded.split(",")[0].strip() or ip
    user_agent = request.headers.get("User-Agent")
    return Origin(ip=ip, user_agent=user_agent[:512] if user_agent else None)


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def context_of(request: web.Request) -> Context:
    """The caller's context: its owner, the acting account or key, and the request's origin."""
    principal = request[PRINCIPAL]
    return Context(owner_id=principal.owner_id, actor=principal.actor, origin=origin_of(request))
