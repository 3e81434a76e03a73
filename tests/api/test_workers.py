"""`python -m api` with API_WORKERS=2: two processes serve one port, and one signal stops both."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp

from tests.conftest import BASE_SETTINGS
from tests.ports import free_port


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


async def test_workers_share_the_port_and_stop_together(tmp_path):
    port = free_port()
    env = {**os.environ, **{k: str(v) for k, v in BASE_SETTINGS.items() if not isinstance(v, list)}}
    env.update(PORT=str(port), API_WORKERS="2", HOST="127.0.0.1", WEBHOOK_RETRY_DELAYS="1,2")
    proc = subprocess.Popen([sys.executable, "-m", "api"], cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/health/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "API workers did not become ready"
                await asyncio.sleep(0.2)
            statuses = await asyncio.gather(
                *(http.get(f"http://127.0.0.1:{port}/api/health/live") for _ in range(20))
            )
            assert {r.status for r in statuses} == {200}
        workers = children_of(proc.pid)
        assert len(workers) == 2
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        for pid in workers:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        if proc.poll() is None:
            proc.kill()
