#!/usr/bin/env bash
# `make bench-webhooks`: the webhook dispatcher's benchmark (deliveries/s with one and two
# replicas, end-to-end latency at a steady rate). Installs wrk if missing (it measures the local
# receiver alone; Debian: apt-get, as root), then runs bench/webhooks_bench.py with the venv's
# Python; arguments are passed on (see --help). It starts and stops its own system (database
# tfa_bench, API on :3101), so it never touches a developer's `make run` on :3001.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (apt-get install -y wrk)"
    apt-get install -y wrk >/dev/null || { apt-get update -qq && apt-get install -y wrk >/dev/null; }
fi
if [ ! -x .venv/bin/python ]; then
    make install
fi
exec .venv/bin/python bench/webhooks_bench.py "$@"
