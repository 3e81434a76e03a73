"""privacyIDEA as the verify benchmark's peer (issue 8): the same end users with the same TOTP
secrets, verified with `POST /validate/check` (bench/lua/privacyidea_verify.lua).

What it runs, and why:

- **privacyIDEA 3.14** (the newest release; it supports Python 3.10-3.14) from PyPI, in its own
  virtualenv bench/.peers/privacyidea-venv made with this Python, plus gunicorn and
  psycopg2-binary, every version pinned by privacyidea-constraints.txt. Reused when present.
- **Its own database `pi_bench`** on the benchmark's PostgreSQL (DATABASE_URL's server part),
  created fresh by `setup`, dropped by `teardown`. pi.cfg follows privacyIDEA's sample production
  configuration: shared SQLAlchemy engines (`PI_ENGINE_REGISTRY_CLASS = "shared"`, without which
  every resolver lookup makes a new connection), the SQL audit log in the same database, signed
  with a fresh RSA key pair (privacyIDEA's default, and our API also records every verification,
  through its outbox and audit consumer), signed responses (the default), `PI_LOGLEVEL` WARNING.
  `extra_config` adds or overrides pi.cfg settings, e.g. `{"PI_NO_RESPONSE_SIGN": True}`.
- **Users**: realm `bench` over an internal SQL resolver (`pi-manage config resolver
  create_internal`: a users table in the same database), one row per userId. **Tokens**: one TOTP
  token per user (SHA-1, 6 digits, 30 s, the secret given) whose serial is the userId, enrolled
  with privacyIDEA's `init_token` (privacyidea_enrol.py). Defaults kept: the ±180 s window
  (`timeWindow`), no PIN (so `pass` is the code), and a code is accepted once per step, for a step
  after the last one used, as by our API. `DefaultMaxFailCount` is raised so wrong codes are
  checked, not refused by a locked token (our benchmark's API runs with TWOFA_MAX_FAILURES raised).
  A wrong-code check by user made 44 SQL statements (by serial 47: it looks up the token's
  owner), 10 of them the resolver reflecting its table (it is rebuilt for every request).
- **Serving**: gunicorn with `workers` sync workers (privacyIDEA's own Docker image runs sync
  workers, nproc*2+1 of them up to 4), or gthread workers with `threads` > 1.

From run_bench.py:

    from peers.privacyidea import PrivacyIdea
    pi = PrivacyIdea()
    pi.setup([(user_id, base32_secret), ...])      # venv if missing, database, config, tokens
    pi.start(3107, workers=2, log=log_dir / "privacyidea.log")
    pi.pids()                                       # gunicorn master + workers, for CpuMeter
    # wrk ... -s bench/lua/privacyidea_verify.lua http://127.0.0.1:3107/validate/check
    #   with verify.lua's environment plus pi.wrk_env()
    pi.stop(); pi.teardown()

By hand: `.venv/bin/python bench/peers/privacyidea.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `peers` (in bench/) importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from peers import (
    HOST,
    RUNTIME,
    database_url,
    ensure_port_free,
    process_tree,
    start_server,
    stop_process,
)
from shared import db

VERSION = "3.14"
HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "privacyidea-constraints.txt"
ENROL = HERE / "privacyidea_enrol.py"
VENV = RUNTIME / "privacyidea-venv"
WORKDIR = RUNTIME / "privacyidea"
DATABASE = "pi_bench"
RESOLVER = "benchusers"
REALM = "bench"
VERIFY_PATH = "/validate/check"
LUA_SCRIPT = "privacyidea_verify.lua"
WARNING = 30  # logging.WARNING, for pi.cfg
SERIAL = re.compile(r"[0-9a-zA-Z_-]{1,40}")  # privacyIDEA's serials; 40: its users table's limit


def installed_version() -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('privacyIDEA'))"],
        check=False,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_venv() -> dict[str, Any]:
    """The virtualenv with privacyIDEA VERSION, gunicorn and psycopg2-binary; made (or remade, if
    it holds another version) with this Python. Returns whether it was installed and how long
    that took."""
    if installed_version() == VERSION:
        return {"installed": False, "seconds": 0.0, "version": VERSION}
    started = time.monotonic()
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    pip = [VENV / "bin" / "pip", "install", "-q", "--disable-pip-version-check"]
    out = subprocess.run(
        [*pip, "-c", CONSTRAINTS, f"privacyIDEA=={VERSION}", "gunicorn", "psycopg2-binary"],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        noise = "WARNING: Location"  # this machine's pip configuration, harmless
        lines = [x for x in (out.stdout + out.stderr).splitlines() if not x.startswith(noise)]
        raise RuntimeError("installing privacyIDEA failed:\n" + "\n".join(lines[-30:]))
    return {"installed": True, "seconds": round(time.monotonic() - started, 1), "version": VERSION}


class PrivacyIdea:
    """privacyIDEA's database, configuration and gunicorn process; see the module's docstring."""

    def __init__(self, workdir: Path = WORKDIR, extra_config: dict[str, Any] | None = None):
        self.workdir = workdir
        self.config = workdir / "pi.cfg"
        self.database_url = database_url(DATABASE)
        self.extra_config = extra_config or {}
        self.proc: subprocess.Popen[bytes] | None = None

    # ----- set-up

    def setup(self, users: Iterable[tuple[str, str]], processes: int = 2) -> dict[str, Any]:
        """Install privacyIDEA if needed, then a fresh database, configuration and keys, the
        realm's users and one TOTP token per (userId, base32 secret). Returns the timings."""
        users = list(users)
        if not users:
            raise ValueError("no users to enrol")
        bad = [user_id for user_id, _ in users if not SERIAL.fullmatch(user_id)]
        if bad:  # the userId is also the token's serial
            raise ValueError(f"userIds must match {SERIAL.pattern}: {bad[:3]}")
        venv = ensure_venv()
        started = time.monotonic()
        self.teardown()  # leftovers of an earlier run
        self.workdir.mkdir(parents=True)
        users_file = self.workdir / "users.tsv"
        users_file.write_text("".join(f"{user_id}\t{secret}\n" for user_id, secret in users))
        self.config.write_text(self.pi_cfg())
        asyncio.run(db.ensure_database(self.database_url))
        for command in (
            ["setup", "create_enckey"],
            ["setup", "create_audit_keys"],
            ["setup", "create_tables"],
            ["admin", "add", "admin", "-p", secrets.token_urlsafe(16)],
            ["config", "resolver", "create_internal", RESOLVER],
            ["config", "realm", "create", REALM, RESOLVER],
            ["config", "realm", "set_default", REALM],
        ):
            self.run([VENV / "bin" / "pi-manage", *command])
        configured = time.monotonic() - started
        # privacyIDEA commits a dozen times per token: without waiting for each WAL flush the
        # enrolment is about twice as fast. Only for the enrolment's connections.
        asyncio.run(self.sql(f"ALTER DATABASE {DATABASE} SET synchronous_commit = off"))
        try:
            out = self.run(
                [VENV / "bin" / "python", "-P", ENROL, users_file, RESOLVER, REALM, str(processes)]
            )
        finally:
            asyncio.run(self.sql(f"ALTER DATABASE {DATABASE} RESET synchronous_commit"))
        asyncio.run(self.sql("ANALYZE"))
        enrolment = json.loads(out.strip().splitlines()[-1])
        return {
            "venv": venv,
            "configure_seconds": round(configured, 1),
            "enrol_seconds": enrolment["seconds"],
            "enrol_processes": enrolment["processes"],
            "users": enrolment["tokens"],
            "tokens_per_second": round(enrolment["tokens"] / enrolment["seconds"], 1),
            "seconds": round(time.monotonic() - started, 1),
        }

    def pi_cfg(self) -> str:
        settings: dict[str, Any] = {
            "SQLALCHEMY_DATABASE_URI": self.database_url.replace(
                "postgresql://", "postgresql+psycopg2://", 1
            ),
            "SECRET_KEY": secrets.token_hex(32),
            "PI_PEPPER": secrets.token_hex(16),
            "PI_ENCFILE": str(self.workdir / "enckey"),
            "PI_AUDIT_KEY_PRIVATE": str(self.workdir / "private.pem"),
            "PI_AUDIT_KEY_PUBLIC": str(self.workdir / "public.pem"),
            "PI_AUDIT_SQL_TRUNCATE": True,
            "PI_ENGINE_REGISTRY_CLASS": "shared",
            "PI_AUDIT_POOL_SIZE": 20,
            "PI_LOGLEVEL": WARNING,
            "PI_LOGFILE": str(self.workdir / "privacyidea.log"),
            "PI_NODE": "bench",
            "PI_NODE_UUID": str(uuid.uuid4()),  # else it looks in /etc/privacyidea/uuid.txt
            "PI_BASE_URL": f"http://{HOST}",
            "SUPERUSER_REALM": ["super"],
            **self.extra_config,
        }
        return "".join(f"{name} = {value!r}\n" for name, value in settings.items())

    def env(self) -> dict[str, str]:
        """privacyIDEA's processes get only this: their config file and their virtualenv."""
        return {"PRIVACYIDEA_CONFIGFILE": str(self.config), "PATH": f"{VENV / 'bin'}:/usr/bin:/bin"}

    def run(self, cmd: list[Any]) -> str:
        out = subprocess.run(
            cmd, cwd=self.workdir, env=self.env(), check=False, capture_output=True, text=True
        )
        if out.returncode != 0:
            shown = " ".join(str(c) for c in cmd[:4])
            raise RuntimeError(f"{shown} ... failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return out.stdout

    async def sql(self, statement: str) -> None:
        conn = await asyncpg.connect(self.database_url, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    # ----- serving

    def start(self, port: int, workers: int = 2, threads: int = 1, log: Path | None = None) -> None:
        """gunicorn on HOST:`port` with `workers` sync workers (gthread with `threads` each if
        `threads` > 1); returns once privacyIDEA answers its liveness check."""
        ensure_port_free(port)
        log = log or self.workdir / "gunicorn.log"
        app = (
            f'privacyidea.app:create_app(config_name="production", '
            f'config_file="{self.config}", silent=True)'
        )
        cmd: list[Any] = [VENV / "bin" / "gunicorn", "--workers", str(workers)]
        if threads > 1:
            cmd += ["--worker-class", "gthread", "--threads", str(threads)]
        cmd += [
            "--bind", f"{HOST}:{port}",
            "--worker-tmp-dir", "/dev/shm",
            "--no-control-socket",  # else every gunicorn of this user shares ~/.gunicorn/
            "--log-level", "warning",
            app,
        ]  # fmt: skip
        self.proc = start_server(
            cmd, log, f"http://{HOST}:{port}/healthz/livez", cwd=self.workdir, env=self.env()
        )

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def wrk_env(self, by: str = "user") -> dict[str, str]:
        """privacyidea_verify.lua's settings, besides verify.lua's (BENCH_PAIRS, ...). `by`:
        "user" asks with user + realm (privacyIDEA looks the user up in its resolver, then the
        user's tokens), "serial" with the token's serial (it still looks the owner up: about the
        same cost)."""
        return {"BENCH_PI_REALM": REALM, "BENCH_PI_BY": by}

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def teardown(self) -> None:
        """Stop it, drop the database and remove the work directory (the virtualenv stays)."""
        self.stop()
        asyncio.run(db.drop_database(self.database_url))
        shutil.rmtree(self.workdir, ignore_errors=True)


def stop_on_signal(signum: int, _: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="make the virtualenv if it is missing")
    setup = sub.add_parser("setup", help="fresh database, config and USERS users with tokens")
    setup.add_argument("--users", type=int, default=100)
    setup.add_argument("--processes", type=int, default=2, help="enrolling processes")
    serve = sub.add_parser("serve", help="run gunicorn until Ctrl-C or SIGTERM")
    serve.add_argument("--port", type=int, default=3107)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, default=1, help="> 1: gthread workers")
    sub.add_parser("teardown", help="drop the database, remove the work directory")
    args = parser.parse_args()

    pi = PrivacyIdea()
    if args.command == "install":
        print(json.dumps(ensure_venv()))
    elif args.command == "setup":
        # Random secrets (base32, 160 bits, as the API makes); users.tsv in the work directory
        # keeps them, to compute codes with.
        users = [
            (f"bench-{i:05d}", base64.b32encode(secrets.token_bytes(20)).decode())
            for i in range(args.users)
        ]
        print(json.dumps(pi.setup(users, args.processes)))
        print(f"users and secrets: {pi.workdir / 'users.tsv'}")
    elif args.command == "serve":
        signal.signal(signal.SIGTERM, stop_on_signal)
        signal.signal(signal.SIGINT, stop_on_signal)  # also when started in the background
        try:
            pi.start(args.port, args.workers, args.threads)
            print(f"privacyIDEA on http://{HOST}:{args.port}{VERIFY_PATH}", flush=True)
            pi.proc.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass
        finally:
            pi.stop()
    else:
        pi.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
