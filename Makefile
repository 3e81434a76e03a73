# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run migrate test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]' 2>&1 | grep -v -e '^WARNING: Location' -e '^$$' || true
	@$(BIN)/python -c "import api, notifier, webhook_dispatcher, audit, shared" && touch $(STAMP)

install: $(STAMP)

## make run: install, write .env if missing, create + migrate the database, start everything on :3001
run: install
	@$(BIN)/python deploy/dev_run.py

## make migrate: create the database if missing and apply migrations
migrate: install
	@$(BIN)/python -m shared.migrate

## make test: install and run the whole suite against the local PostgreSQL, Redis and RabbitMQ
test: install
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS)

## make bench: the benchmarks under bench/ (start the system with `make run` first, or let it)
bench: install
	@bash bench/run.sh

clean:
	rm -rf $(VENV) *.egg-info
