"""/openapi.json: the machine-readable form of the contract, built once per process."""

from __future__ import annotations

from aiohttp import web

from api.keys import OPENAPI


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])
