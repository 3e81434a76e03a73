"""The OpenAPI document: valid OpenAPI 3.1, describing exactly the routes the app serves, with
the credentials each one really accepts."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from api.keys import ACCESS

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def fetch_document(client: Any) -> dict[str, Any]:
    r = await client.get("/api/openapi.json")
    assert r.status == 200, await r.text()
    assert r.content_type == "application/json"
    return await r.json()


def served_routes(app: Any) -> dict[tuple[str, str], Any]:
    """(method, path) of every route on the router, except the HEAD that aiohttp adds to GETs."""
    routes = {}
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        routes[(route.method.lower(), route.resource.canonical)] = route
    return routes


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


async def test_document_is_valid_openapi_3_1(client):
    document = await fetch_document(client)
    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)
    validate(document)  # and detected as such without being told


async def test_every_served_route_is_documented_with_its_method_and_path(client):
    document = await fetch_document(client)
    served = served_routes(client.app)
    documented = operations(document)
    assert served, "the router has no routes"
    missing = sorted(set(served) - set(documented))
    assert not missing, f"served but not documented: {missing}"
    extra = sorted(set(documented) - set(served))
    assert not extra, f"documented but not served: {extra}"


async def test_every_path_parameter_is_declared(client):
    document = await fetch_document(client)
    for (method, path), op in operations(document).items():
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        in_path = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        assert declared == in_path, (method, path)


async def test_every_protected_operation_declares_security(client):
    document = await fetch_document(client)
    documented = operations(document)
    schemes = document["components"]["securitySchemes"]
    access = client.app[ACCESS]
    for key, route in served_routes(client.app).items():
        policy = access[route]
        op = documented[key]
        if policy.public:
            assert not op.get("security"), f"{key} is public but declares security"
            continue
        assert op.get("security"), f"{key} is protected but declares no security"
        for requirement in op["security"]:
            assert set(requirement) <= set(schemes), (key, requirement)


async def test_security_offers_only_the_credentials_a_route_accepts(client):
    """A user-token-only route must not advertise the X-API-Key header; a route that takes keys
    advertises both and names the scope a key needs."""
    document = await fetch_document(client)
    documented = operations(document)
    access = client.app[ACCESS]
    for key, route in served_routes(client.app).items():
        policy = access[route]
        if policy.public:
            continue
        offered = {name for requirement in documented[key]["security"] for name in requirement}
        if "apiKey" in policy.kinds:
            assert offered == {"bearerAuth", "apiKeyHeader"}, key
            assert documented[key]["x-required-scope"] == policy.scope, key
        else:
            assert offered == {"bearerAuth"}, key


async def test_every_operation_documents_the_error_envelope(client):
    document = await fetch_document(client)
    assert "ErrorEnvelope" in document["components"]["schemas"]
    for key, op in operations(document).items():
        statuses = {s for s in op["responses"] if s.startswith("4")}
        assert {"400", "404"} <= statuses, key
        if "requestBody" in op:
            assert "415" in statuses, key
        if not op.get("security"):
            continue
        assert {"401", "403"} <= statuses, key


async def test_a_body_is_required_only_when_it_has_required_fields(client):
    """`/auth/logout` takes an optional refresh token: an empty body is fine there."""
    documented = operations(await fetch_document(client))
    assert documented[("post", "/api/auth/logout")]["requestBody"]["required"] is False
    assert documented[("post", "/api/auth/register")]["requestBody"]["required"] is True
    assert documented[("post", "/api/api-keys/{id}/rotate")]["requestBody"]["required"] is False


async def test_the_docs_page_renders_the_spec_with_locally_served_assets(client):
    r = await client.get("/api/docs")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    page = await r.text()
    assert '"/api/openapi.json"' in page and "https://" not in page  # nothing from a CDN
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js"):
        assert f"/api/docs/static/{asset}" in page
        r = await client.get(f"/api/docs/static/{asset}")
        assert r.status == 200 and len(await r.read()) > 1000, asset
    for name in ("../../../etc/passwd", "index.html", "%2e%2e%2fsecrets"):
        r = await client.get(f"/api/docs/static/{name}")
        assert r.status == 404, name
