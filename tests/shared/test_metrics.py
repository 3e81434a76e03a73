"""Every service answers /metrics in Prometheus' text format with the figures it owns."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.api_client import new_account
from tests.fakes.webhook_receivers import python_receiver
from tests.webhooks.helpers import create_webhook, delivery_log, eventually, running_dispatcher


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_api_counts_requests_by_route_template_and_status(client):
    before = samples(await (await client.get("/metrics")).text())
    account = await new_account(client)
    for _ in range(3):
        await client.get("/api/webhooks/00000000-0000-0000-0000-000000000000", headers=account.auth)
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    after = samples(await r.text())
    key = {"method": "GET", "route": "/api/webhooks/{id}", "status": "404"}
    assert value(after, "tfa_http_requests_total", **key) - value(before, "tfa_http_requests_total", **key) == 3

    async def relayed() -> bool:
        found = samples(await (await client.get("/metrics")).text())
        return value(found, "tfa_events_published_total", type="user.login") >= 1

    await eventually(relayed, timeout=5)


async def test_a_consumer_serves_its_own_metrics_on_its_health_port(client):
    account = await new_account(client)
    async with python_receiver() as rx, running_dispatcher() as dispatcher:
        hook = await create_webhook(client, account.auth, rx.url, ["webhook.test"])
        await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
        await eventually(lambda: delivery_log(client, account.auth, hook["id"]))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{dispatcher.bound_port}/metrics") as r:
                found = samples(await r.text())
    assert value(found, "tfa_webhook_attempts_total", outcome="succeeded") >= 1
    queue = dispatcher.topology.queue("webhook-dispatcher")
    assert value(found, "tfa_messages_consumed_total", queue=queue, outcome="acked") >= 1
