"""`make bench-compare A.json B.json` (or `A=... B=...`): two `make bench` runs side by side.

For each scenario in either run (matched by name and connections): requests/s, p99 and CPU
seconds per 1,000 requests of A and of B, and B's change in percent (for requests/s higher is
better, for p99 and CPU lower is better; the sign is B - A either way). Then issue 8's ratios of
both runs. Reads the bench-all-*.json files bench/all.py writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import summary


def change(a: float | None, b: float | None) -> str:
    if a is None or b is None or a == 0:
        return "-"
    return f"{100 * (b - a) / a:+.0f}%"


def cell(a: float | None, b: float | None, digits: int) -> str:
    return f"{summary.fmt(a, digits)} -> {summary.fmt(b, digits)} ({change(a, b)})"


def load(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    if "rows" not in report:
        raise SystemExit(f"{path}: not a bench/all.py result (no 'rows')")
    return report


def compare(a: dict[str, Any], b: dict[str, Any]) -> None:
    rows_a = {r["key"]: r for r in a["rows"]}
    rows_b = {r["key"]: r for r in b["rows"]}
    keys = list(rows_a) + [k for k in rows_b if k not in rows_a]
    lines = []
    for key in keys:
        ra, rb = rows_a.get(key, {}), rows_b.get(key, {})
        first = ra or rb
        lines.append(
            (
                first["scenario"],
                str(first["connections"]),
                cell(ra.get("requests_per_second"), rb.get("requests_per_second"), 1),
                cell(ra.get("p99_ms"), rb.get("p99_ms"), 2),
                cell(ra.get("cpu_seconds_per_1000"), rb.get("cpu_seconds_per_1000"), 2),
            )
        )
    head = ("scenario", "conns", "req/s A -> B", "p99 ms A -> B", "CPU s/1k A -> B")
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    for name, run in (("A", a), ("B", b)):
        print(f"{name}: {run['started_utc']} ({(run['source'].get('commit') or '?')[:12]})")
    print()
    for i, line in enumerate([head, *lines]):
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [x.ljust(w) if j == 0 else x.rjust(w) for j, (x, w) in pairs]
        print("  ".join(cells))
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(head) - 1)))
    print()
    print("ratios (A -> B):")
    ratios_a, ratios_b = a.get("ratios", {}), b.get("ratios", {})
    numeric = [
        k
        for k, v in {**ratios_b, **ratios_a}.items()
        if isinstance(v, int | float) and not k.endswith("_connections")
    ]
    for key in numeric:
        before, after = ratios_a.get(key), ratios_b.get(key)
        print(f"  {key}: {before} -> {after} ({change(before, after)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the earlier run's bench-all-*.json")
    parser.add_argument("b", type=Path, help="the later run's bench-all-*.json")
    args = parser.parse_args()
    compare(load(args.a), load(args.b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
