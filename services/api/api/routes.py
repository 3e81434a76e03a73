"""The whole URL map on one screen. Each route declares its access policy and its models; the
auth middleware enforces the former and the OpenAPI document is generated from both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from shared import metrics
from shared.health import health_routes

from api import openapi
from api import schemas as s
from api.auth import PUBLIC, TEMP_TOKEN_OR_KEY, USER_ONLY, Access, either
from api.keys import ACCESS, HEALTH
from api.views import accounts, api_keys, audit, docs, twofa, webhooks

BASE = "/api"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    is_list: bool = False
    # The success body's media types and schemas when it is not the JSON envelope.
    content: dict[str, Any] | None = None
    # Mounted under /api unless it belongs to the process rather than the API (/metrics).
    base: str = BASE


def api_routes() -> list[Route]:
    return [
        Route("POST", "/auth/register", accounts.register, PUBLIC, "Create an account", "auth",
              body=s.RegisterBody, response=s.RegisterResult, status=201),
        Route("POST", "/auth/login", accounts.login, PUBLIC, "Log in with a password", "auth",
              body=s.LoginBody, response=s.LoginResult),
        Route("POST", "/auth/refresh", accounts.refresh, PUBLIC, "Rotate a refresh token", "auth",
              body=s.RefreshBody, response=s.Tokens),
        Route("POST", "/auth/logout", accounts.logout, USER_ONLY, "End the session", "auth",
              body=s.LogoutBody),
        Route("GET", "/auth/me", accounts.me, either("user:read"), "The calling account", "auth",
              response=s.Me),
        Route("POST", "/api-keys", api_keys.create, USER_ONLY, "Create an API key", "api-keys",
              body=s.CreateApiKeyBody, response=s.NewApiKey, status=201),
        Route("GET", "/api-keys", api_keys.list_keys, USER_ONLY, "List API keys", "api-keys",
              query=s.ListQuery, response=s.ApiKey, is_list=True),
        Route("GET", "/api-keys/{id}", api_keys.get, USER_ONLY, "One API key", "api-keys",
              response=s.ApiKey),
        Route("POST", "/api-keys/{id}/rotate", api_keys.rotate, USER_ONLY,
              "Replace the key's secret; the old one works for a grace period", "api-keys",
              body=s.RotateApiKeyBody, response=s.NewApiKey),
        Route("DELETE", "/api-keys/{id}", api_keys.revoke, USER_ONLY, "Revoke an API key",
              "api-keys", response=s.ApiKey),
        Route("GET", "/api-keys/{id}/usage", api_keys.usage, USER_ONLY,
              "Requests and rejections per hour, last 24 hours", "api-keys", response=s.Usage),
        Route("POST", "/2fa/totp/setup", twofa.setup_totp, either("2fa:write"),
              "Start TOTP setup: secret, otpauth URL and QR code", "2fa",
              body=s.UserBody, response=s.TotpSetup),
        Route("POST", "/2fa/totp/verify-setup", twofa.verify_totp_setup, either("2fa:write"),
              "Confirm TOTP with a first code; returns 10 backup codes", "2fa",
              body=s.CodeBody, response=s.BackupCodes),
        Route("POST", "/2fa/sms/setup", twofa.setup_sms, either("2fa:write"),
              "Start SMS setup: a code is texted to phoneNumber (E.164)", "2fa",
              body=s.SmsSetupBody, response=s.CodeSent),
        Route("POST", "/2fa/sms/verify-setup", twofa.verify_sms_setup, either("2fa:write"),
              "Confirm SMS with the texted code", "2fa", body=s.CodeBody, response=s.MethodEnabled),
        Route("POST", "/2fa/email/setup", twofa.setup_email, either("2fa:write"),
              "Start email setup: a code is emailed to email", "2fa",
              body=s.EmailSetupBody, response=s.CodeSent),
        Route("POST", "/2fa/email/verify-setup", twofa.verify_email_setup, either("2fa:write"),
              "Confirm email with the emailed code", "2fa", body=s.CodeBody, response=s.MethodEnabled),
        Route("POST", "/2fa/challenge", twofa.challenge, TEMP_TOKEN_OR_KEY,
              "Send a login code by SMS or email (tempToken at login, or API key + userId)", "2fa",
              body=s.ChallengeBody, response=s.CodeSent),
        Route("POST", "/2fa/verify", twofa.verify, TEMP_TOKEN_OR_KEY,
              "Finish a login (tempToken) or check a user's code (API key + userId)", "2fa",
              body=s.VerifyBody, response=s.Verified),
        Route("GET", "/2fa/methods", twofa.list_methods, either("2fa:read"),
              "The user's enabled methods", "2fa", query=s.UserQuery, response=s.Method, is_list=True),
        Route("DELETE", "/2fa/methods/{type}", twofa.disable_method, either("2fa:write"),
              "Turn a method off", "2fa", body=s.DisableMethodBody, query=s.UserQuery),
        Route("POST", "/2fa/backup-codes", twofa.regenerate_backup_codes, either("2fa:write"),
              "Replace the backup codes with 10 new ones", "2fa",
              body=s.UserBody, response=s.BackupCodes),
        Route("GET", "/2fa/status", twofa.get_status, either("2fa:read"),
              "Whether 2FA is on, and with which methods", "2fa",
              query=s.UserQuery, response=s.TwoFactorStatus),
        Route("POST", "/webhooks", webhooks.create, either("webhooks:write"),
              "Subscribe a URL to events; the signing secret is shown this once", "webhooks",
              body=s.CreateWebhookBody, response=s.NewWebhook, status=201),
        Route("GET", "/webhooks", webhooks.list_webhooks, either("webhooks:read"), "List webhooks",
              "webhooks", query=s.ListQuery, response=s.Webhook, is_list=True),
        Route("GET", "/webhooks/{id}", webhooks.get, either("webhooks:read"), "One webhook",
              "webhooks", response=s.Webhook),
        Route("PATCH", "/webhooks/{id}", webhooks.update, either("webhooks:write"),
              "Change url, events, description or active (true clears the failure streak)",
              "webhooks", body=s.UpdateWebhookBody, response=s.Webhook),
        Route("DELETE", "/webhooks/{id}", webhooks.delete, either("webhooks:write"),
              "Delete a webhook and its delivery log", "webhooks", response=s.Webhook),
        Route("POST", "/webhooks/{id}/test", webhooks.send_test, either("webhooks:write"),
              "Deliver a webhook.test event to this webhook now", "webhooks",
              response=s.Queued, status=202),
        Route("POST", "/webhooks/{id}/rotate-secret", webhooks.rotate_secret,
              either("webhooks:write"),
              "A new signing secret; the old one also signs for the grace period", "webhooks",
              body=s.RotateWebhookSecretBody, response=s.RotatedWebhookSecret),
        Route("GET", "/webhooks/{id}/deliveries", webhooks.deliveries, either("webhooks:read"),
              "The delivery log: one entry per attempt, newest first", "webhooks",
              query=s.DeliveriesQuery, response=s.Delivery, is_list=True),
        Route("POST", "/webhooks/{id}/deliveries/{deliveryId}/redeliver", webhooks.redeliver,
              either("webhooks:write"),
              "Send a delivery again (same event id, fresh retry budget)", "webhooks",
              response=s.Queued, status=202),
        Route("GET", "/audit-logs", audit.list_entries, either("audit:read"),
              "Audit entries, newest first (from <= occurredAt <= to)", "audit",
              query=s.AuditQuery, response=s.AuditEntry, is_list=True),
        Route("GET", "/audit-logs/export", audit.export, either("audit:read"),
              "Audit entries as NDJSON or CSV, oldest first, streamed", "audit",
              query=s.AuditExportQuery, content=openapi.text("application/x-ndjson", "text/csv")),
        Route("GET", "/audit-logs/verify", audit.verify, either("audit:read"),
              "Recompute the hash chain; names the first entry that does not verify", "audit",
              response=s.AuditVerdict),
        Route("GET", "/openapi.json", docs.openapi, PUBLIC, "This document", "meta",
              content=openapi.DOCUMENT),
        Route("GET", "/docs", docs.page, PUBLIC, "This document, rendered (Swagger UI)", "meta",
              content=openapi.text("text/html")),
        Route("GET", "/docs/static/{name}", docs.static, PUBLIC,
              "Swagger UI's files, served locally", "meta",
              content=openapi.binary(*sorted(set(docs.STATIC.values())))),
        Route("GET", "/metrics", metrics.metrics_handler, PUBLIC,
              "Prometheus metrics of this process (scrape it inside the cluster; keep it off the Ingress)",
              "meta", content=openapi.text("text/plain"), base=""),
    ]


def health_api_routes(app: web.Application) -> list[Route]:
    summaries = {"": "Full health report", "/live": "Liveness probe", "/ready": "Readiness probe"}
    return [
        Route("GET", f"/health{suffix}", handler, PUBLIC, summaries[suffix], "health",
              response=s.HealthReport)
        for suffix, handler in health_routes(app[HEALTH])
    ]


def register(app: web.Application) -> list[Route]:
    """Add every route to the router and record its access policy."""
    routes = api_routes() + health_api_routes(app)
    access = app[ACCESS]
    for route in routes:
        registered = app.router.add_route(route.method, route.base + route.path, route.handler)
        access[registered] = route.access
    return routes
