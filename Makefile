# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE   := tests/clients/node
EXAMPLES_NODE := examples/node

.PHONY: install run migrate test test-reliability soak bench bench-compare bench-api bench-webhooks bench-audit bench-notifier clean audit-verify

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]' 2>&1 | grep -v -e '^WARNING: Location' -e '^$$' || true
	@$(BIN)/python -c "import api, notifier, webhook_dispatcher, audit, shared" && touch $(STAMP)

install: $(STAMP)

## make run: install, write .env if missing, create + migrate the database, start everything on :3001
run: install
	@$(BIN)/python deploy/dev_run.py

## make audit-verify: recompute every owner's audit hash chain; names the first bad entry
audit-verify: install
	@$(BIN)/python -m audit.verify $(if $(OWNER),--owner $(OWNER))

## make migrate: create the database if missing and apply migrations
migrate: install
	@$(BIN)/python -m shared.migrate

# The guide's Node client for tests/clients: reinstalled when missing or older than its lock file.
$(NODE)/node_modules: $(NODE)/package-lock.json
	@npm ci --prefix $(NODE) --no-audit --no-fund
	@touch $@

# Express for examples/node/proxy-app.js, run by tests/examples.
$(EXAMPLES_NODE)/node_modules: $(EXAMPLES_NODE)/package-lock.json
	@npm ci --prefix $(EXAMPLES_NODE) --no-audit --no-fund
	@touch $@

## make test: install and run the whole suite against the local PostgreSQL, Redis and RabbitMQ
## (tests/clients needs the guide's Node client and Debian's oathtool, tests/examples the Express of
## examples/node, tests/deploy Debian's docker-compose to check the compose files: installed here
## if missing)
test: install $(NODE)/node_modules $(EXAMPLES_NODE)/node_modules
	@command -v oathtool >/dev/null || apt-get install -y -qq oathtool >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq oathtool; }
	@command -v docker-compose >/dev/null || apt-get install -y -qq docker-compose >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq docker-compose; }
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## make test-reliability: every fault run of tests/reliability under load (RabbitMQ, PostgreSQL and
## Redis restarted, each service killed with kill -9) on private servers it starts on free ports;
## ~3 min. `make test` runs a short version (a RabbitMQ restart and a dispatcher kill).
test-reliability: install
	@RELIABILITY=full $(BIN)/python -m pytest -q tests/reliability $(PYTEST_ARGS)

## make soak: SOAK_SECONDS (600) of steady mixed load on the whole system (private servers), every
## service's RSS and open connections sampled every 10 s, a growth slope and verdict per service
SOAK_SECONDS ?= 600
soak: install
	@$(BIN)/python -m tests.reliability.soak --seconds $(SOAK_SECONDS)

## make bench: every benchmark under bench/ (bounded, ~8 min), one table of them all, and
## bench/results/bench-all-<time>.json (each part starts its own isolated system; BENCH_ARGS=--quick
## for a ~3-minute smoke test, BENCH_ARGS=--no-peers to leave privacyIDEA out)
bench: install
	@bash bench/run.sh $(BENCH_ARGS)

## make bench-compare A.json B.json (or A=... B=...): two `make bench` results, scenario by scenario
COMPARE_FILES := $(filter-out bench-compare,$(MAKECMDGOALS))
bench-compare: install
	@$(BIN)/python bench/compare.py $(or $(A),$(word 1,$(COMPARE_FILES))) $(or $(B),$(word 2,$(COMPARE_FILES)))
ifeq (bench-compare,$(firstword $(MAKECMDGOALS)))
# The file names after `bench-compare` are its arguments, not targets to build.
.PHONY: $(sort $(COMPARE_FILES))
$(sort $(COMPARE_FILES)):
	@:
endif

## make bench-api: the API's scenarios alone, with their own options (bench/run_bench.py: wrk, the
## peers, the 2FA login, the storm; BENCH_ARGS="--only verify" etc.)
bench-api: install
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq wrk; }
	@$(BIN)/python bench/run_bench.py $(BENCH_ARGS)

## make bench-webhooks: the webhook dispatcher's deliveries/s (1 and 2 replicas) and end-to-end latency
bench-webhooks: install
	@bash bench/webhooks.sh

## make bench-audit: one audit replica's events/s, and GET /api/audit-logs over 1,000,000 entries
## (options: make bench-audit BENCH_ARGS="--only ingest"; wrk is installed if missing)
bench-audit: install
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq wrk; }
	@$(BIN)/python bench/audit_bench.py $(BENCH_ARGS)

## make bench-notifier: SMS and emails sent per second by one notifier replica (fake Twilio, local SMTP)
bench-notifier: install
	@$(BIN)/python bench/notifier_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info $(NODE)/node_modules $(EXAMPLES_NODE)/node_modules
