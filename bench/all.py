"""`make bench`: every benchmark under bench/, each with a bounded duration, then one table.

The parts run one after the other, each as its own process that starts (and afterwards removes)
its own isolated system, so they never touch a developer's `make run` on :3001 or each other:

- api       bench/run_bench.py: GET /api/health/live (the framework's ceiling), the login
            without and with 2FA, 2FA verify with wrong and right codes over the enrolled users,
            the same verify workload against the bare aiohttp ceiling and against privacyIDEA,
            the bcrypt rate of the cores, and the login storm (80% verify, 15% login, 5% setup,
            with the health sampler, webhooks and audit keeping up);
- webhooks  bench/webhooks_bench.py: deliveries/s of one dispatcher replica, and the latency
            from a failed verify to its webhook's arrival at a steady rate;
- audit     bench/audit_bench.py --only ingest: entries/s one audit replica writes;
- notifier  bench/notifier_bench.py: SMS and emails sent per second.

Each part writes its JSON; this script prints one table of them all (bench/summary.py), the
ratios issue 8 asks for, and writes everything to bench/results/bench-all-<UTC time>.json, which
`make bench-compare A=... B=...` (bench/compare.py) compares with another run. A part that fails
or runs past its time limit is reported and the others still run.

A full run takes about 8 minutes on the 2-core development machine. `--quick` runs every part
with tiny durations and user counts (about 3 minutes): a smoke test of the whole chain, whose
figures mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import run_bench as rb
import summary

PY = sys.executable
BENCH = rb.BENCH

# Each part: its script, arguments in the full and the quick run, and a time limit (s).
API_ONLY = "health,login,verify,ceiling,privacyidea,storm"
PARTS: dict[str, dict[str, Any]] = {
    "api": {
        "script": "run_bench.py",
        "full": [
            "--duration", "10", "--login-duration", "10", "--warmup", "2",
            "--login-connections", "16", "--verify-connections", "64",
            "--storm-duration", "20", "--wrong-users", "1000", "--right-users", "10000",
            "--pi-wrong-users", "300", "--pi-right-users", "800",
        ],
        "quick": [
            "--duration", "3", "--login-duration", "3", "--warmup", "1",
            "--login-connections", "16", "--verify-connections", "64",
            "--storm-duration", "5", "--wrong-users", "200", "--right-users", "600",
            "--pi-wrong-users", "50", "--pi-right-users", "150", "--bcrypt-seconds", "2",
        ],
        "limit": {"full": 900, "quick": 420},
    },
    "webhooks": {
        "script": "webhooks_bench.py",
        "full": [
            "--replicas", "1", "--events", "10000", "--warmup-events", "1000",
            "--latency-seconds", "10", "--latency-warmup", "2",
        ],
        "quick": [
            "--replicas", "1", "--events", "2000", "--warmup-events", "0",
            "--latency-seconds", "3", "--latency-warmup", "1", "--rate", "100",
        ],
        "limit": {"full": 300, "quick": 180},
    },
    "audit": {
        "script": "audit_bench.py",
        "full": ["--only", "ingest", "--events", "50000", "--batch-sizes", "500"],
        "quick": ["--only", "ingest", "--events", "10000", "--batch-sizes", "500"],
        "limit": {"full": 300, "quick": 120},
    },
    "notifier": {
        "script": "notifier_bench.py",
        "full": ["--messages", "2000"],
        "quick": ["--messages", "500"],
        "limit": {"full": 180, "quick": 90},
    },
}  # fmt: skip


def command(name: str, args: argparse.Namespace, out: Path) -> list[str]:
    part = PARTS[name]
    cmd = [PY, str(BENCH / part["script"]), *part["quick" if args.quick else "full"]]
    if name == "api":
        only = API_ONLY if args.peers else API_ONLY.replace(",privacyidea", "")
        cmd += ["--only", only, "--api-workers", str(args.api_workers)]
    if name == "webhooks":
        cmd += ["--api-workers", str(args.api_workers)]
    return [*cmd, "--out", str(out)]


def run_part(name: str, cmd: list[str], limit: float, log: Path) -> dict[str, Any]:
    """Run one part, its output shown (prefixed) and kept in `log`; stop it (SIGTERM to its
    process group: it cleans up, as on Ctrl-C) if it runs past `limit` seconds."""
    print(f"\n=== {name}: {' '.join(Path(c).name if c == PY else c for c in cmd)}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=rb.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own group: Ctrl-C here stops it once, through stop()
    )
    timed_out = threading.Event()

    def stop() -> None:
        if proc.poll() is None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGTERM)

    timer = threading.Timer(limit, stop)
    timer.start()
    try:
        with open(log, "w") as out:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                print(f"[{name}] {line}", end="", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        stop()
        proc.wait(60)
        raise
    finally:
        timer.cancel()
    return {
        "command": cmd,
        "exit_status": proc.returncode,
        "timed_out": timed_out.is_set(),
        "seconds": round(time.monotonic() - started, 1),
        "log": str(log.relative_to(rb.ROOT)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs: a smoke test (~3 min)")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"parts to run, comma-separated (default all: {','.join(PARTS)})",
    )
    parser.add_argument(
        "--no-peers", dest="peers", action="store_false", help="leave privacyIDEA out"
    )
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API_WORKERS (and the ceiling's processes)"
    )
    parser.add_argument("--out", type=Path, help="the combined JSON (default bench/results/...)")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(chosen) - set(PARTS)
    if unknown:
        parser.error(
            f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}"
        )

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rb.RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = rb.RESULTS / f"bench-all-logs-{stamp}"
    log_dir.mkdir()
    out = args.out or rb.RESULTS / f"bench-all-{stamp}.json"
    source = rb.git_state()
    dirty = source["uncommitted_changes_outside_bench"]
    print(
        f"make bench{' --quick' if args.quick else ''}: parts {', '.join(chosen)}; commit "
        f"{(source['commit'] or 'unknown')[:12]}"
        + (f" plus {len(dirty)} uncommitted change(s) outside bench/" if dirty else "")
        + f"; {os.cpu_count()} cores ({rb.cpu_model()}); logs in {log_dir.relative_to(rb.ROOT)}",
        flush=True,
    )
    started = time.monotonic()
    parts: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tfa-bench-all-") as tmp:
        try:
            for name in chosen:
                part_json = Path(tmp) / f"{name}.json"
                cmd = command(name, args, part_json)
                limit = PARTS[name]["limit"]["quick" if args.quick else "full"]
                parts[name] = run_part(name, cmd, limit, log_dir / f"{name}.log")
                if part_json.exists():
                    parts[name]["report"] = json.loads(part_json.read_text())
                else:
                    print(f"[{name}] FAILED: no results ({parts[name]})", flush=True)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    rows = summary.rows_of(parts)
    found = summary.ratios(parts)
    total = round(time.monotonic() - started)
    print()
    summary.print_table(rows)
    summary.print_ratios(found)
    failed = [n for n, p in parts.items() if p["exit_status"] != 0 or "report" not in p]
    if failed:
        print(f"\nFAILED parts: {', '.join(failed)} (see their logs)")
    report = {
        "started_utc": stamp,
        "command": " ".join(["bench/all.py", *sys.argv[1:]]),
        "quick": args.quick,
        "seconds": total,
        "source": source,
        "machine": rb.machine(),
        "rows": rows,
        "ratios": found,
        "parts": parts,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\n{total // 60} min {total % 60} s; results written to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
