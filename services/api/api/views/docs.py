"""/openapi.json (the machine-readable contract, built once per process) and /docs (it, rendered
by Swagger UI, whose files are served from the installed `swagger-ui-bundle`: no CDN, works
offline and behind a strict firewall)."""

from __future__ import annotations

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from shared.errors import NotFound

from api.keys import OPENAPI

# The only files /docs/static serves (never a path taken from the request).
STATIC = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
    "favicon-32x32.png": "image/png",
}
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>2FA Authentication Service API</title>
  <link rel="stylesheet" href="/api/docs/static/swagger-ui.css">
  <link rel="icon" href="/api/docs/static/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/static/swagger-ui-bundle.js"></script>
  <script src="/api/docs/static/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/api/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    });
  </script>
</body>
</html>
"""


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise NotFound("No such file")
    body = (swagger_ui_path / name).read_bytes()
    return web.Response(
        body=body,
        headers={"Content-Type": STATIC[name], "Cache-Control": "public, max-age=86400"},
    )
