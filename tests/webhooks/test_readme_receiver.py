"""The Python receiver printed in the README, run as printed, accepts real deliveries and
refuses forged ones."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp

from shared import webhook_signing

from tests.api_client import new_account
from tests.ports import free_port
from tests.webhooks.helpers import create_webhook, delivery_log, eventually, running_dispatcher

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver() -> str:
    text = README.read_text()
    section = text[text.index("A Python receiver that checks") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


async def test_the_readme_python_receiver_verifies_deliveries(client, tmp_path):
    account = await new_account(client)
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/2fa"
    hook = await create_webhook(client, account.auth, url, ["webhook.test"])
    script = tmp_path / "receiver.py"
    script.write_text(readme_receiver())
    env = {**os.environ, "WEBHOOK_SECRET": hook["secret"], "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            async def up() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/") as r:
                        return r.status in (404, 405)
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(up, timeout=10)
            body = b'{"id":"x","event":"webhook.test","timestamp":"t","data":{"userId":"u"}}'
            forged = {"X-Webhook-Signature": webhook_signing.hex_signature("whsec_wrong", body),
                      "X-Webhook-Timestamp": "0", "X-Webhook-Id": "x"}
            async with http.post(url, data=body, headers=forged) as r:
                assert r.status == 401

        async with running_dispatcher():
            await client.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
            [entry] = await eventually(lambda: delivery_log(client, account.auth, hook["id"]))
        assert entry["status"] == "succeeded" and entry["statusCode"] == 200
        printed = []
        while not printed or not printed[-1].startswith("webhook.test"):  # after aiohttp's banner
            printed.append((await asyncio.wait_for(proc.stdout.readline(), timeout=5)).decode())
        assert printed[-1].split() == ["webhook.test", account.id]
    finally:
        proc.terminate()
        await proc.wait()
