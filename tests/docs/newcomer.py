"""A newcomer's machine for following the README: a clean copy of the repository (the files a
clone would hold, as they are in the working tree, with the checkout's virtualenv linked in, and
no `.env`), in which `make run` runs in the background on this run's own database, Redis key
prefix, broker prefix and free ports, set as variables in the environment (which, as the README
says, override `.env`). Stopped like Ctrl-C; afterwards its database, keys, exchange and queues
are removed."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from shared.broker import Topology
from shared.config import Settings

from tests.conftest import RUN_ID, make_settings, remove_resources
from tests.docs.readme import ROOT
from tests.ports import free_port

READY_TIMEOUT = 60
STOP_TIMEOUT = 30


def clean_copy(dest: Path) -> Path:
    """The repository's files in `dest`: what a clone of the next commit holds (tracked files and
    new ones git does not ignore, as they are now), with modification times kept so that make
    sees the linked virtualenv's install as up to date."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    )
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


@dataclass
class Newcomer:
    """The copy, the environment of the reader's shell, and the services' ports."""

    root: Path
    env: dict[str, str]
    port: int
    health_ports: list[int]

    def health_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}/api/health/ready"] + [
            f"http://127.0.0.1:{p}/health/ready" for p in self.health_ports
        ]


def shell_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment without any setting or make state, plus `overrides`."""
    inherited = {
        k: v for k, v in os.environ.items()
        if k not in Settings.model_fields and k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    }
    return {**inherited, **overrides}


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its start time (to tell it from a later one with its pid)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if stat := _stat(child):
                found[child] = stat[19]
                todo.append(child)
    return found


def still_running(pid: int, started_at: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and stat[19] == started_at


async def _all_ready(urls: list[str], process: asyncio.subprocess.Process, log: Path) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        for _ in range(READY_TIMEOUT * 5):
            assert process.returncode is None, f"make run exited:\n{log.read_text()}"
            try:
                statuses = []
                for url in urls:
                    async with http.get(url) as r:
                        statuses.append(r.status)
                if statuses == [200] * len(urls):
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"make run not ready in {READY_TIMEOUT}s:\n{log.read_text()}")


@asynccontextmanager
async def make_run(extra: dict[str, str]) -> AsyncIterator[Newcomer]:
    """`make run` in a clean copy, ready; on exit Ctrl-C, which must stop every service."""
    overrides = {
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/tfa_readme_{RUN_ID}",
        "REDIS_KEY_PREFIX": f"tfa-test:{RUN_ID}:readme:",
        "BROKER_PREFIX": f"test-{RUN_ID}.readme.",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "NOTIFIER_HEALTH_PORT": str(free_port()),
        "WEBHOOK_DISPATCHER_HEALTH_PORT": str(free_port()),
        "AUDIT_HEALTH_PORT": str(free_port()),
        **extra,
    }
    # Names this run's database, Redis prefix and broker prefix, to remove them afterwards.
    names = make_settings(**{k: overrides[k] for k in ("DATABASE_URL", "REDIS_KEY_PREFIX",
                                                       "BROKER_PREFIX")})
    health = ("NOTIFIER_HEALTH_PORT", "WEBHOOK_DISPATCHER_HEALTH_PORT", "AUDIT_HEALTH_PORT")
    with tempfile.TemporaryDirectory(prefix="readme-") as tmp:
        root = clean_copy(Path(tmp))
        env = shell_environment(overrides)
        # `make run` would reinstall into the shared virtualenv, from the copy, if it were stale.
        stale = subprocess.run(["make", "-q", "install"], cwd=root, env=env).returncode
        assert stale == 0, "the virtualenv is older than pyproject.toml: run `make install` first"
        log = root / "make-run.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                "make", "run", cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started: dict[int, str] = {}
        try:
            ports = [int(overrides[h]) for h in health]
            newcomer = Newcomer(root, env, int(overrides["PORT"]), ports)
            await _all_ready(newcomer.health_urls(), process, log)
            started = descendants(process.pid)
            printed = log.read_text()
            assert "wrote .env with fresh random secrets" in printed, printed
            assert "migration(s) applied, up to date" in printed, printed
            yield newcomer
        finally:
            await _ctrl_c(process, started, log)
            await remove_resources(names, queues(names.BROKER_PREFIX))


def queues(prefix: str) -> list[str]:
    """Every queue the services declare with the default retry delays (`make run` does not
    change them, unlike the test settings)."""
    delays: set[int] = {default("WEBHOOK_DEFER_SECONDS")}
    for name in ("CONSUMER_RETRY_DELAYS", "WEBHOOK_RETRY_DELAYS"):
        delays.update(default(name))
    return Topology(prefix).all_queues(sorted(delays))


def default(name: str) -> Any:
    return Settings.model_fields[name].get_default(call_default_factory=True)


async def _ctrl_c(process: asyncio.subprocess.Process, started: dict[int, str], log: Path) -> None:
    """What Ctrl-C in the reader's terminal does: SIGINT to the foreground process group."""
    if process.returncode is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    left = [pid for pid, at in started.items() if still_running(pid, at)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"Ctrl-C left services running:\n{log.read_text()[-3000:]}"
