"""Webhook URLs as an attacker writes them: header injection (raw, encoded and Unicode line
breaks, spaces), and SSRF by DNS rebinding, where a name that was public when the webhook was
registered points at the service's own network when the delivery is made.

tests/webhooks/test_webhook_api.py covers raw CR/LF and spaces at creation and private targets
at registration; tests/webhooks/test_delivery_faults.py covers names that are private from the
start and redirects. Here: PATCH as well as create, the Unicode and %-encoded variants, what a
receiver actually gets for the URLs that are accepted, and answers that change after registration.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api_client import new_account
from tests.fakes.webhook_receivers import python_receiver
from tests.ids import token
from tests.security.fake_dns import fake_dns
from tests.security.helpers import outcome
from tests.security.raw_receiver import raw_receiver
from tests.webhooks.helpers import create_webhook, delivery_log, eventually, running_dispatcher

PUBLIC_IP = "93.184.216.34"
BASE = f"http://{PUBLIC_IP}"

INJECTIONS = {
    "CRLF then a header": f"{BASE}/x\r\nX-Injected: 1",
    "CR alone": f"{BASE}/x\rX-Injected: 1",
    "LF then Host": f"{BASE}/x\nHost: evil.example",
    "CRLF in the host": "http://evil.example\r\nX-Injected: 1/",
    "CRLF after the port": f"{BASE}:80\r\nX-Injected: 1/",
    "encoded CRLF in the host": "http://evil.example%0d%0aX-Injected:1/",
    "encoded CRLF after the port": f"{BASE}:80%0d%0aX-Injected:1/",
    "encoded dot in the host": "http://evil%2eexample/",
    "IPv6 zone escape": "http://[fe80::1%25eth0]/",
    "space in the path": f"{BASE}/a b",
    "tab": f"{BASE}/\tx",
    "NUL": f"{BASE}/x\x00y",
    "vertical tab": f"{BASE}/x\x0by",
    "NEL (U+0085)": f"{BASE}/x\u0085X-Injected: 1",
    "line separator (U+2028)": f"{BASE}/x\u2028X-Injected: 1",
    "paragraph separator (U+2029)": f"{BASE}/x\u2029X-Injected: 1",
    "no-break space": f"{BASE}/x\u00a0y",
    "ideographic space": f"{BASE}/x\u3000y",
    "zero-width space in the host": "http://exa\u200bmple.com/",
    "backslash confusion": f"http://{PUBLIC_IP}\\@evil.example/",
}


async def test_header_injection_in_webhook_urls_is_refused_at_create_and_patch(client):
    account = await new_account(client)
    hook = await create_webhook(client, account.auth, f"{BASE}/hook", ["2fa.enabled"])
    outcomes = {}
    for name, url in INJECTIONS.items():
        body = {"url": url, "events": ["2fa.enabled"]}
        r = await client.post("/api/webhooks", json=body, headers=account.auth)
        outcomes[("create", name)] = await outcome(r)
        r = await client.patch(f"/api/webhooks/{hook['id']}", json={"url": url}, headers=account.auth)
        outcomes[("patch", name)] = await outcome(r)
    # NUL is refused for every field, before the URL rules are applied.
    expected = {(op, name): (400, "VALIDATION_ERROR" if name == "NUL" else "INVALID_WEBHOOK_URL")
                for op, name in outcomes}
    assert outcomes == expected
    r = await client.get("/api/webhooks", headers=account.auth)
    assert [(h["id"], h["url"]) for h in (await r.json())["data"]] == [(hook["id"], f"{BASE}/hook")]


# Accepted, because %-escapes in a path or query are ordinary URL data; they must reach the
# receiver still escaped, never as header lines. U+560A U+560D are the characters some HTTP
# clients have truncated to LF/CR bytes.
TRICKY_BUT_VALID = {
    "encoded CRLF in the path": "/x%0d%0aX-Injected:%201",
    "encoded CRLF in the query": "/x?a=%0D%0ASet-Cookie:%20stolen=1",
    "CJK lookalikes of LF/CR": "/x\u560a\u560dX-Evil:1",
}


async def test_escaped_line_breaks_reach_the_receiver_as_data_not_as_headers(client):
    account = await new_account(client)
    async with raw_receiver() as rx, running_dispatcher(WEBHOOK_MAX_ATTEMPTS=1):
        for suffix in TRICKY_BUT_VALID.values():
            hook = await create_webhook(client, account.auth, rx.url + suffix, ["webhook.test"])
            r = await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
            assert r.status == 202, await r.text()
        requests = await rx.wait_for(len(TRICKY_BUT_VALID))
        await asyncio.sleep(0.3)  # anything more (a smuggled second request) would show now
    assert len(rx.requests) == len(TRICKY_BUT_VALID)
    targets = set()
    for request in requests:
        assert not {"x-injected", "set-cookie", "x-evil"} & request.header_names, request
        assert request.header("host") == rx.url.removeprefix("http://"), request
        method, target, version = request.request_line.split(b" ")
        assert (method, version) == (b"POST", b"HTTP/1.1"), request.request_line
        targets.add(target.decode("ascii"))
    assert targets == {
        "/x%0D%0AX-Injected:%201",
        "/x?a=%0D%0ASet-Cookie:%20stolen=1",
        "/x%E5%98%8A%E5%98%8DX-Evil:1",
    }


def _refused_for_private(entry: dict[str, Any]) -> bool:
    failed = entry["status"] == "failed" and entry["statusCode"] is None
    return failed and "private" in (entry["error"] or "")


@pytest.mark.parametrize(
    "at_delivery",
    [["127.0.0.1"], ["127.0.0.1", PUBLIC_IP], ["::ffff:127.0.0.1"], ["0.0.0.0"]],
    ids=["loopback", "loopback-first-among-public", "ipv4-mapped-loopback", "unspecified"],
)
async def test_a_name_that_rebinds_to_the_local_network_after_registration_gets_nothing(
    app_factory, monkeypatch, at_delivery
):
    guarded = await app_factory(WEBHOOK_ALLOW_PRIVATE_URLS=False)
    account = await new_account(guarded)
    name = f"rebind-{token()}.test"
    with fake_dns(monkeypatch) as dns:
        async with python_receiver() as rx:
            port = int(rx.url.rsplit(":", 1)[1].split("/")[0])
            url = f"http://{name}:{port}/hook"
            # The registration check does resolve through this DNS: loopback is refused...
            dns.answer(name, ["127.0.0.1"])
            body = {"url": url, "events": ["webhook.test"]}
            r = await guarded.post("/api/webhooks", json=body, headers=account.auth)
            assert await outcome(r) == (400, "WEBHOOK_URL_FORBIDDEN")
            # ...so the attacker answers with a public address until the webhook is registered.
            dns.answer(name, [PUBLIC_IP])
            hook = await create_webhook(guarded, account.auth, url, ["webhook.test"])
            dns.answer(name, at_delivery)
            asked_before = len(dns.asked)
            async with running_dispatcher(WEBHOOK_ALLOW_PRIVATE_URLS=False, WEBHOOK_MAX_ATTEMPTS=1):
                r = await guarded.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
                assert r.status == 202, await r.text()
                [entry] = await eventually(lambda: delivery_log(guarded, account.auth, hook["id"]))
            assert rx.requests == []
    assert name in dns.asked[asked_before:], "the dispatcher must resolve the name again at delivery"
    assert _refused_for_private(entry), entry
