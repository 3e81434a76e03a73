"""What the cores' bcrypt rate allows: password checks per second at a cost, on every core at
once, measured in the same run as the login scenarios (so on the same machine, at the same time
of day and load). One process per core runs `bcrypt.checkpw` (what the API calls, in its thread
pool of os.cpu_count() threads) on one hash for `seconds`; the rate is the checks finished
divided by the time. A login with the right password costs one check, so this is the most
logins/s the machine could serve if a login cost nothing else.

`.venv/bin/python bench/bcrypt_rate.py [--rounds 12] [--seconds 4]` prints it alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from typing import Any

import bcrypt

PASSWORD = b"bench-password-0123456789"


def checks(job: tuple[bytes, float]) -> tuple[int, float]:
    """Check the password against `hashed` until `seconds` have passed: (checks, seconds)."""
    hashed, seconds = job
    started = time.monotonic()
    done = 0
    while True:
        bcrypt.checkpw(PASSWORD, hashed)
        done += 1
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            return done, elapsed


def measure(rounds: int = 12, seconds: float = 4.0, processes: int | None = None) -> dict[str, Any]:
    processes = processes or os.cpu_count() or 1
    hashed = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds))
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(checks, [(hashed, seconds)] * processes)
    rate = sum(n / t for n, t in results)  # each process's rate, added up
    return {
        "rounds": rounds,
        "processes": processes,
        "seconds": seconds,
        "checks": sum(n for n, _ in results),
        "checks_per_second": round(rate, 2),
        "ms_per_check_per_core": round(1000 * processes / rate, 1) if rate else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds, args.seconds)))


if __name__ == "__main__":
    main()
