"""The scenarios of bench/run_bench.py beyond its wrk runs against the API (issue 8), run in the
same process, against the same system, in the same run:

- the bcrypt rate of the machine's cores (bench/bcrypt_rate.py), which bounds the logins;
- the verify workload against two peers, started on demand and stopped after their last
  scenario: the ceiling (bench/ceiling.py: a bare aiohttp handler doing one PostgreSQL and one
  Redis round trip, with API_WORKERS processes) and privacyIDEA (bench/peers/privacyidea.py:
  gunicorn, PostgreSQL, one TOTP token per user). They get the same users with the same secrets
  as the API's pools: the ceiling all of them, privacyIDEA (which enrols about 60 tokens a
  second) the first `--pi-wrong-users` of the small pool and `--pi-right-users` of the large
  one. Each peer has its own copy of the pools' "last step used" (run_bench.Pool), since its
  replay guard is its own (the ceiling has none, so its right codes go round);
- the login with 2FA (bench/login2fa.py) and the login storm (bench/storm.py), driven by
  bench/loadgen.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import bcrypt_rate
import loadgen
import login2fa
import run_bench as rb
from ceiling import VERIFY_PATH as CEILING_PATH
from ceiling import Ceiling
from peers.privacyidea import LUA_SCRIPT as PI_SCRIPT
from peers.privacyidea import VERIFY_PATH as PI_PATH
from peers.privacyidea import PrivacyIdea
from procstats import PeakRss
from storm import Storm

from shared.config import Settings

# target -> (path, wrk script, port, --only tag)
PEERS = {
    "ceiling": (CEILING_PATH, "verify.lua", 3108, "ceiling"),
    "privacyidea": (PI_PATH, PI_SCRIPT, 3107, "privacyidea"),
}
FALLBACK_BCRYPT_RATE = 9.0  # checks/s, if the rate was not measured in this run


class Suite:
    def __init__(
        self, args: argparse.Namespace, base: str, settings: Settings, log_dir: Path
    ) -> None:
        self.args = args
        self.base = base
        self.settings = settings
        self.log_dir = log_dir
        self.peers: dict[str, Ceiling | PrivacyIdea] = {}
        self.setups: dict[str, dict[str, Any]] = {}
        self.bcrypt: dict[str, Any] | None = None
        self.storm_runner: Storm | None = None

    def close(self) -> None:
        for target in list(self.peers):
            self.stop_peer(target)
        if self.storm_runner is not None:
            self.storm_runner.close()

    # ----- bcrypt

    def bcrypt_rate(self) -> dict[str, Any]:
        print(
            f"bcrypt checks/s at cost {self.settings.BCRYPT_ROUNDS} on every core ...", flush=True
        )
        self.bcrypt = bcrypt_rate.measure(self.settings.BCRYPT_ROUNDS, self.args.bcrypt_seconds)
        print(
            f"  {self.bcrypt['checks_per_second']} checks/s with {self.bcrypt['processes']} "
            f"processes ({self.bcrypt['ms_per_check_per_core']} ms per check per core)",
            flush=True,
        )
        return self.bcrypt

    # ----- peers

    def start_peer(self, target: str, verify: rb.Verify, meter: rb.CpuMeter) -> dict[str, str]:
        """Set up and start the peer if it is not running; its wrk environment."""
        if target not in self.peers:
            small, large = verify.pools["small"], verify.pools["large"]
            cores = os.cpu_count() or 1
            if target == "ceiling":
                peer: Ceiling | PrivacyIdea = Ceiling()
                wrong, right = small.secrets, large.secrets
                workers, threads = self.args.api_workers, 1
            else:
                peer = PrivacyIdea()
                wrong = dict(list(small.secrets.items())[: self.args.pi_wrong_users])
                right = dict(list(large.secrets.items())[: self.args.pi_right_users])
                workers, threads = self.args.pi_workers or min(4, 2 * cores + 1), 1
            users = [*wrong.items(), *right.items()]
            print(f"{target}: setting up {len(users)} users ...", flush=True)
            started = time.monotonic()
            setup = peer.setup(users) if target == "ceiling" else peer.setup(users, cores)
            port = PEERS[target][2]
            log = self.log_dir / f"{target}.log"
            peer.start(port, workers=workers, log=log)  # type: ignore[call-arg]
            self.peers[target] = peer
            setup |= {"workers": workers, "threads": threads, "port": port}
            setup["total_seconds"] = round(time.monotonic() - started, 1)
            self.setups[target] = setup
            print(f"  {target} ready on :{port} ({setup})", flush=True)
            verify.pools[f"{target}-small"] = rb.Pool(f"{target}-small", wrong)
            verify.pools[f"{target}-large"] = rb.Pool(f"{target}-large", right)
            meter.add("peer", peer.pids())
        peer = self.peers[target]
        return peer.wrk_env() if isinstance(peer, PrivacyIdea) else {}

    def services(self, target: str) -> dict[str, list[int]]:
        return {target: self.peers[target].pids()}

    def stop_peer(self, target: str) -> None:
        peer = self.peers.pop(target, None)
        if peer is not None:
            peer.teardown()  # stops it, drops its database (privacyIDEA keeps its virtualenv)

    # ----- login with 2FA

    def login_2fa(
        self, scenario: rb.Scenario, meter: rb.CpuMeter, system: rb.System
    ) -> dict[str, Any]:
        rate = (self.bcrypt or {}).get("checks_per_second") or FALLBACK_BCRYPT_RATE
        count = login2fa.accounts_needed(rate, scenario.duration, scenario.connections)
        print(f"  login with 2FA: making {count} accounts with TOTP on ...", flush=True)
        started = time.monotonic()
        accounts = asyncio.run(login2fa.make_accounts(self.base, count))
        made = round(time.monotonic() - started, 1)
        waited = rb.quiesce(meter)
        print(f"  {scenario.label} c={scenario.connections}: measuring {scenario.duration} s ...")
        rss = PeakRss(system.trees()).start()
        before = meter.snapshot()
        samples, run = asyncio.run(
            login2fa.run(self.base, accounts, scenario.connections, scenario.duration)
        )
        cpu = meter.usage(before, meter.snapshot(), top=5)
        peak = rss.stop()
        summary = loadgen.summarise(samples, run["seconds"])
        summary["exhausted_workers"] = run["exhausted_workers"]
        print_line(summary, cpu)
        rb.quiesce(meter)
        return result_of(scenario, summary, cpu, peak, waited) | {
            "accounts": {"count": count, "seconds": made},
        }

    # ----- the login storm

    def storm(
        self,
        scenario: rb.Scenario,
        meter: rb.CpuMeter,
        system: rb.System,
        verify: rb.Verify,
        account: dict[str, str],
    ) -> dict[str, Any]:
        seconds = min(scenario.duration, rb.MAX_RIGHT_SECONDS)
        if self.storm_runner is None:
            self.storm_runner = Storm(self.base, self.settings, self.log_dir)
            self.storm_runner.prepare(rb.access_token(self.base, account))
        path, info = verify.right_pairs("large", seconds)
        pairs = [(u, c) for u, c in (line.split() for line in path.read_text().splitlines())]
        waited = rb.quiesce(meter)
        print(
            f"  {scenario.label} c={scenario.connections}: measuring {seconds} s, with "
            f"GET /api/health/live at {self.args.health_rate}/s beside it ...",
            flush=True,
        )
        rss = PeakRss(system.trees()).start()
        before = meter.snapshot()
        run = self.storm_runner.run(
            api_key=verify.api_key,
            account=account,
            pairs=pairs,
            connections=scenario.connections,
            seconds=seconds,
            health_rate=self.args.health_rate,
        )
        # The CPU of the storm itself: the window ends before the drain.
        cpu = meter.usage(before, meter.snapshot(), top=5)
        peak = rss.stop()
        rb.quiesce(meter)  # the requests abandoned at the end are still being served
        settled = self.storm_runner.settle(run)
        run["backlog"] |= {k: settled[k] for k in ("drain_seconds", "drained", "left")}
        run["webhooks"] = settled["webhooks"]
        del run["began_db"], run["ended"]
        summary = run.pop("result")
        print_line(summary, cpu)
        for kind, s in run["by_kind"].items():
            print(f"      {kind}: {describe(s)}", flush=True)
        print(f"      health/live sampler: {describe(run['health'])}", flush=True)
        backlog, hooks = run["backlog"], run["webhooks"]
        print(
            f"      backlog max {backlog['max']}, at the end {backlog['at_end']}, drained "
            f"{backlog['drain_seconds']} s after ({'' if backlog['drained'] else 'NOT '}"
            f"drained: left {backlog['left']}); webhooks received {hooks['received_distinct']} "
            f"of {hooks['events']} events",
            flush=True,
        )
        return (
            result_of(scenario, summary, cpu, peak, waited)
            | run
            | {
                "duration_seconds": seconds,
                "pairs_info": info,
            }
        )


def describe(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    return (
        f"{s['requests_per_second']:.1f} req/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
        f"max {lat['max']} ms, {s['requests']} requests, errors {s['socket_errors']} socket / "
        f"{s['unexpected']} bad status (statuses {s['statuses']})"
    )


def print_line(summary: dict[str, Any], cpu: dict[str, Any]) -> None:
    print(f"    {describe(summary)}; CPU {rb.cpu_line(cpu)}", flush=True)
    if summary.get("exhausted_workers"):
        print(f"    note: {summary['exhausted_workers']} worker(s) ran out of work", flush=True)
    rb.warn_disturbed(cpu)


def result_of(
    scenario: rb.Scenario,
    summary: dict[str, Any],
    cpu: dict[str, Any],
    peak: dict[str, Any],
    waited: float,
) -> dict[str, Any]:
    """A result shaped like run_bench.measure's."""
    return {
        "scenario": scenario.name,
        "label": scenario.label,
        "method": scenario.method,
        "path": scenario.path,
        "connections": scenario.connections,
        "duration_seconds": scenario.duration,
        "quiesce_seconds_before": waited,
        "target": "api",
        "load_generator": "bench/loadgen.py",
        "result": summary,
        "cpu_cores": cpu,
        "cpu_seconds_per_1000": rb.cpu_per_1000(cpu, summary["requests"]),
        "peak_rss_mb": peak["mb"],
        "peak_rss_reset": peak["reset"],
    }
