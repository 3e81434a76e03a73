"""Prometheus metrics: every metric of every service, defined once, served at `/metrics`.

Each process exposes its own registry (a service only moves the metrics it owns; the others stay
at zero). Labels are bounded: routes are route templates (`/api/webhooks/{id}`), never raw paths.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "tfa_http_requests_total", "API requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "tfa_http_request_duration_seconds",
    "API request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_PUBLISHED = Counter(
    "tfa_events_published_total", "Events relayed from the outbox to the broker", ["type"]
)
OUTBOX_LAG = Gauge(
    "tfa_outbox_lag_seconds", "Age of the oldest event in the last relayed batch (0 when idle)"
)
MESSAGES_CONSUMED = Counter(
    "tfa_messages_consumed_total",
    "Broker messages a consumer finished with",
    ["queue", "outcome"],  # outcome: acked | retried | dead_lettered
)
WEBHOOK_ATTEMPTS = Counter(
    "tfa_webhook_attempts_total", "Webhook delivery attempts", ["outcome"]  # succeeded | pending | failed
)
WEBHOOK_LATENCY = Histogram(
    "tfa_webhook_attempt_duration_seconds",
    "Time to the receiver's answer (or the failure)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
NOTIFICATIONS = Counter(
    "tfa_notifications_total", "Notifications handled", ["channel", "outcome"]  # sent | retrying | failed
)
AUDIT_ENTRIES = Counter("tfa_audit_entries_written_total", "Audit entries written")


async def metrics_handler(request: web.Request) -> web.Response:
    """The Prometheus text exposition of this process's metrics."""
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
