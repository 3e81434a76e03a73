#!/usr/bin/env bash
# `make bench`: every benchmark under bench/ with bounded durations, then one table
# (bench/all.py; `--quick` for a ~3-minute smoke test, `--help` for the options). Installs wrk if
# missing (Debian: apt-get, as root) and the venv if it is missing. Each part starts and stops
# its own isolated system (database tfa_bench..., API on :3101/:3121), so it never touches a
# developer's `make run` on :3001.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (apt-get install -y wrk)"
    apt-get install -y wrk >/dev/null || { apt-get update -qq && apt-get install -y wrk >/dev/null; }
fi
if [ ! -x .venv/bin/python ]; then
    make install
fi
exec .venv/bin/python bench/all.py "$@"
