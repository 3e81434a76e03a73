"""One table for the whole of `make bench` (bench/all.py): a row per measured scenario, taken from
the JSON each part wrote, then the ratios issue 8 asks for. Also used by bench/compare.py.

A row: scenario, connections, requests/s, p50 and p99 ms, errors, CPU seconds per 1,000
requests, and the peak RSS (MB) of each service during it. For scenarios that are not HTTP
requests (webhook deliveries, audit entries, notifications) "requests" are those events, and a
latency that would mean nothing (a burst's queueing time) is left out ("-").
"""

from __future__ import annotations

from typing import Any

# Short names of the services in the RSS column.
SHORT = {
    "api": "api",
    "notifier": "ntf",
    "webhook_dispatcher": "whd",
    "audit": "aud",
    "ceiling": "ceiling",
    "privacyidea": "pI",
}
NAMES = {
    "health/live": "GET /api/health/live",
    "auth/me": "GET /api/auth/me",
    "auth/login": "login, no 2FA",
    "login-2fa": "login + 2FA verify",
    "verify-wrong": "verify, wrong code",
    "verify-right": "verify, right code",
    "ceiling-wrong": "ceiling: verify, wrong code",
    "ceiling-right": "ceiling: verify, right code",
    "privacyidea-wrong": "privacyIDEA: verify, wrong",
    "privacyidea-right": "privacyIDEA: verify, right",
    "storm": "login storm (80/15/5)",
}
DISTURBED = 0.2  # cores used outside the measured processes ("other")


def row(
    scenario: str,
    connections: Any,
    rate: float | None,
    p50: float | None,
    p99: float | None,
    errors: int | None,
    cpu_1k: float | None,
    rss: dict[str, float] | None,
    other: float | None = None,
) -> dict[str, Any]:
    return {
        "key": f"{scenario}|{connections}",
        "scenario": scenario,
        "connections": connections,
        "requests_per_second": rate,
        "p50_ms": p50,
        "p99_ms": p99,
        "errors": errors,
        "cpu_seconds_per_1000": cpu_1k,
        "peak_rss_mb": rss or {},
        "other_cores": other,
    }


def api_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in report.get("scenarios", []):
        s, cpu = r["result"], r["cpu_cores"]
        name = NAMES.get(r["scenario"], r["scenario"])
        lat = s["latency_ms"]
        rows.append(
            row(
                name,
                r["connections"],
                s["requests_per_second"],
                lat["p50"],
                lat["p99"],
                s["errors_total"],
                r.get("cpu_seconds_per_1000"),
                r.get("peak_rss_mb"),
                cpu.get("other"),
            )
        )
        for kind, k in r.get("by_kind", {}).items():
            lat = k["latency_ms"]
            rate, errors = k["requests_per_second"], k["errors_total"]
            rows.append(
                row(f"  storm: {kind}", "", rate, lat["p50"], lat["p99"], errors, None, None)
            )
        if "health" in r:
            h = r["health"]
            lat = h["latency_ms"]
            name = f"  storm: health/live {r['health_rate']:g}/s"
            rows.append(
                row(name, 1, h["requests_per_second"], lat["p50"], lat["p99"], h["errors_total"],
                    None, None)
            )  # fmt: skip
    return rows


def system_seconds(cpu: dict[str, Any], groups: tuple[str, ...]) -> float:
    return sum(cpu.get(g, 0.0) for g in groups) * cpu.get("seconds", 0.0)


def webhook_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    groups = ("dispatcher", "api", "audit+notifier", "postgres", "rabbitmq", "redis")
    for run in report.get("throughput", []):
        rec = run["receiver"]
        delivered = rec["distinct"]
        per_1k = 1000 * system_seconds(run["cpu_cores"], groups) / delivered if delivered else None
        rows.append(
            row(
                f"webhooks: deliveries, {run['replicas']} replica"
                + ("s" if run["replicas"] > 1 else ""),
                "-",
                run["deliveries_per_second"],
                None,
                None,
                rec["missing"] + rec["duplicates"] + rec["unknown_ids"],
                round(per_1k, 2) if per_1k else None,
                run.get("peak_rss_mb"),
                run["cpu_cores"].get("other"),
            )
        )
    lat = report.get("latency")
    if lat:
        e2e = lat["end_to_end_ms"]
        count = e2e.get("count") or 0
        per_1k = 1000 * system_seconds(lat["cpu_cores"], groups) / count if count else None
        rows.append(
            row(
                f"event -> webhook, verify at {lat['rate']:g}/s",
                "open",
                lat.get("send_rate"),
                e2e.get("p50"),
                e2e.get("p99"),
                lat["missing_arrivals"] + lat["duplicate_arrivals"],
                round(per_1k, 2) if per_1k else None,
                lat.get("peak_rss_mb"),
                lat["cpu_cores"].get("other"),
            )
        )
    return rows


def audit_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in report.get("ingest", []):
        cpu, written = run["cpu_cores"], run["written"]
        used = (
            system_seconds(cpu, ("replica", "postgres", "rabbitmq"))
            if "seconds" in cpu
            else ((cpu["replica"] + cpu["postgres"] + cpu["rabbitmq"]) * run["seconds"])
        )
        broken = 0 if run["chains"]["exit_status"] == 0 else 1
        errors = run["events"] - run["integrity"]["distinct_events"] + broken
        rows.append(
            row(
                f"audit ingest, batch {run['batch_size']}",
                "-",
                run["events_per_second"],
                None,
                None,
                errors,
                round(1000 * used / written, 2) if written else None,
                run.get("peak_rss_mb"),
                cpu.get("other"),
            )
        )
    return rows


def notifier_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    n = report.get("notifier")
    if not n:
        return []
    errors = n["duplicates"] + n["missing"] + max(0, n["messages"] - n["rows_sent"])
    return [
        row(
            f"notifier: {n['sms']} SMS + {n['emails']} emails",
            "-",
            n["messages_per_second"],
            None,
            None,
            errors,
            n["cpu_seconds_per_1000"],
            n.get("peak_rss_mb"),
            n["cpu_cores"].get("other"),
        )
    ]


ROWS = {"api": api_rows, "webhooks": webhook_rows, "audit": audit_rows, "notifier": notifier_rows}


def rows_of(parts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for name, make in ROWS.items():
        report = (parts.get(name) or {}).get("report")
        if report:
            found.extend(make(report))
    return found


# --------------------------------------------------------------------------- ratios


def find(report: dict[str, Any], scenario: str) -> dict[str, Any] | None:
    """The scenario's result at its most connections."""
    runs = [r for r in report.get("scenarios", []) if r["scenario"] == scenario]
    return max(runs, key=lambda r: r["connections"]) if runs else None


def rate(r: dict[str, Any] | None) -> float | None:
    return r["result"]["requests_per_second"] if r else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 8's comparisons, from the API part."""
    report = (parts.get("api") or {}).get("report") or {}
    found: dict[str, Any] = {}
    for code in ("right", "wrong"):
        api = find(report, f"verify-{code}")
        for peer in ("privacyidea", "ceiling"):
            other = find(report, f"{peer}-{code}")
            if api and other and other["connections"] == api["connections"]:
                found[f"verify_{code}_vs_{peer}"] = ratio(rate(api), rate(other))
        if api and "events_owed_at_end" in api:
            found[f"verify_{code}_events_owed"] = {
                "owed": api["events_owed_at_end"],
                "at_start": api.get("events_owed_at_start") or {},
                "requests": api["result"]["requests"],
            }
    bcrypt = (report.get("bcrypt") or {}).get("checks_per_second")
    found["bcrypt_checks_per_second"] = bcrypt
    logins = [r for r in report.get("scenarios", []) if r["scenario"] == "auth/login"]
    if logins and bcrypt:
        least = min(logins, key=lambda r: r["connections"])
        found["login_vs_bcrypt"] = ratio(rate(least), bcrypt)
        found["login_connections"] = least["connections"]
    if (two := find(report, "login-2fa")) and bcrypt:
        found["login_2fa_vs_bcrypt"] = ratio(rate(two), bcrypt)
    storm = find(report, "storm")
    if storm:
        logins_storm = storm["by_kind"].get("login", {}).get("requests_per_second")
        found["storm_logins_per_second"] = logins_storm
        found["storm_logins_vs_bcrypt"] = ratio(logins_storm, bcrypt)
        found["storm_health_p99_ms"] = storm["health"]["latency_ms"]["p99"]
        found["storm_health_max_ms"] = storm["health"]["latency_ms"]["max"]
        found["storm_backlog_at_end"] = storm["backlog"]["at_end"]
        found["storm_backlog_max"] = storm["backlog"]["max"]
        found["storm_drain_seconds"] = storm["backlog"]["drain_seconds"]
        found["storm_webhooks"] = storm["webhooks"]
    return found


# --------------------------------------------------------------------------- printing


def fmt(value: float | None, digits: int = 1) -> str:
    """`digits` decimals below 100, fewer above: 4.56, 717.1, 1,490."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.{min(digits, 1)}f}"
    return f"{value:.{digits}f}"


def rss_text(rss: dict[str, float]) -> str:
    return " ".join(f"{SHORT.get(k, k)} {v:.0f}" for k, v in rss.items()) or "-"


def print_table(rows: list[dict[str, Any]]) -> None:
    width = max([len("scenario")] + [len(r["scenario"]) + 1 for r in rows])
    head = (
        f"{'scenario':<{width}} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'CPU s/1k':>8}  peak RSS MB"
    )
    print(head)
    print("-" * (len(head) + 24))
    for r in rows:
        disturbed = (r.get("other_cores") or 0) > DISTURBED
        name = r["scenario"] + ("!" if disturbed else "")
        print(
            f"{name:<{width}} {r['connections']!s:>5} {fmt(r['requests_per_second']):>9} "
            f"{fmt(r['p50_ms'], 2):>8} {fmt(r['p99_ms'], 2):>8} "
            f"{'-' if r['errors'] is None else r['errors']:>6} "
            f"{fmt(r['cpu_seconds_per_1000'], 2):>8}  {rss_text(r['peak_rss_mb'])}"
        )
    print(
        "req/s: requests, or for webhooks/audit/notifier the deliveries, entries or messages, per "
        "second; errors: failed or unexpected answers (lost or duplicated events); CPU s/1k: CPU "
        "seconds of the serving processes (services, PostgreSQL, Redis, RabbitMQ) per 1,000; "
        "peak RSS: api, ntf(notifier), whd(webhook dispatcher), aud(audit), the peers; "
        f"!: more than {DISTURBED} cores went to other processes (figures disturbed)"
    )


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def print_ratios(found: dict[str, Any]) -> None:
    print()
    print("issue 8's comparisons (same run):")
    lines = [
        ("verify right codes vs privacyIDEA", times(found.get("verify_right_vs_privacyidea")), ""),
        ("verify wrong codes vs privacyIDEA", times(found.get("verify_wrong_vs_privacyidea")), ""),
        ("verify right codes vs the ceiling", pct(found.get("verify_right_vs_ceiling")), ">= 80%"),
        ("verify wrong codes vs the ceiling", pct(found.get("verify_wrong_vs_ceiling")), ">= 80%"),
        (
            "bcrypt checks/s at cost 12, all cores",
            fmt(found.get("bcrypt_checks_per_second"), 2),
            "",
        ),
        (
            f"login (no 2FA, c={found.get('login_connections', '-')}) vs the bcrypt rate",
            pct(found.get("login_vs_bcrypt")),
            ">= 90%",
        ),
        ("login + 2FA verify vs the bcrypt rate", pct(found.get("login_2fa_vs_bcrypt")), ""),
        (
            "login storm: logins/s vs the bcrypt rate",
            pct(found.get("storm_logins_vs_bcrypt")),
            ">= 90%",
        ),
        (
            "login storm: GET /api/health/live p99 (max)",
            f"{fmt(found.get('storm_health_p99_ms'), 2)} ms ({fmt(found.get('storm_health_max_ms'), 1)})"
            if "storm_health_p99_ms" in found
            else "-",
            "< 20 ms",
        ),
    ]
    for code in ("right", "wrong"):
        if owed := found.get(f"verify_{code}_events_owed"):
            start = owed["at_start"]
            left = ", ".join(
                f"{k} {v}" + (f" (start {start[k]})" if start.get(k) else "")
                for k, v in owed["owed"].items()
                if v or start.get(k)
            )
            lines.append(
                (
                    f"verify {code} codes: events owed at the end (of {owed['requests']:,})",
                    left or "none",
                    "keeps up",
                )
            )
    if "storm_backlog_at_end" in found:
        hooks, most = found["storm_webhooks"], found["storm_backlog_max"]
        backlog = ", ".join(
            f"{k} {v} (max {most[k]})"
            for k, v in found["storm_backlog_at_end"].items()
            if v or most[k]
        )
        lines.append(
            (
                "login storm: backlog at its end (outbox, queues)",
                backlog or "none (max 0)",
                "keeps up",
            )
        )
        lines.append(
            (
                "login storm: drained after; webhooks received / events",
                f"{found['storm_drain_seconds']} s; {hooks['received_distinct']} / {hooks['events']}",
                "",
            )
        )
    width = max(len(a) for a, _, _ in lines)
    for label, value, target in lines:
        print(f"  {label:<{width}}  {value:>14}" + (f"   (target {target})" if target else ""))
