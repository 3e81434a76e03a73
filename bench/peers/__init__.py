"""Comparison targets for the verify benchmark (issue 8), driven by wrk like the API.

- `peers.privacyidea`: privacyIDEA, installed from PyPI into its own virtualenv, under gunicorn.
- `bench/ceiling.py`: a bare aiohttp handler doing one Redis and one PostgreSQL round trip.

What they share is here: where their files and databases go, and their processes.
Their runtime files (the virtualenv, keys, configuration, logs) live in bench/.peers/ (gitignored).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from shared import db
from shared.config import Settings

BENCH = Path(__file__).resolve().parent.parent
RUNTIME = BENCH / ".peers"
HOST = "127.0.0.1"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore http_proxy


def database_url(name: str) -> str:
    """Database `name` on the benchmark's PostgreSQL server: DATABASE_URL's server part (from the
    environment, as run_bench.py takes it) or the default local one."""
    base = os.environ.get("DATABASE_URL", Settings.model_fields["DATABASE_URL"].default)
    return db.server_url(base, name)


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (gunicorn's workers, the ceiling's forked workers), for
    the benchmark's CPU accounting."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it exited meanwhile
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found = [pid]
    for parent in found:  # grows while it is walked: breadth first
        found.extend(child for child, p in parents.items() if p == parent)
    return found


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def ensure_port_free(port: int) -> None:
    """Refuse to start on a taken port: the readiness check would get the other server's answer."""
    with socket.socket() as s:
        s.settimeout(0.5)
        if s.connect_ex((HOST, port)) == 0:
            raise RuntimeError(f"port {port} on {HOST} is already in use")


def wait_answering(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Poll GET `url` until it answers 200; fail with the log's tail if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            with NO_PROXY.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not answering after {timeout:.0f} s:\n{log_tail(log)}")
        time.sleep(0.3)


def start_server(
    cmd: list[Any], log: Path, ready_url: str, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in a session of its own, output appended to `log`; return once
    `ready_url` answers 200 (the process is stopped again if it never does)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        wait_answering(ready_url, proc, log)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """SIGTERM (the server stops its workers), then SIGKILL to its session if it hangs."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: its own group
        proc.wait()
