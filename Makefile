# mailer: `make run` for the service, `make test` for the whole suite. `make help` lists all.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VAR    := $(or $(MAILER_VAR_DIR),var)

.DEFAULT_GOAL := help
.PHONY: help setup venv run migrate test test-fast lint typecheck bench compose-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install mailer with its development tools

setup: ## what the tests need on this machine (Debian packages, PostgreSQL, Redis): .ci/setup
	@.ci/setup

migrate: venv ## apply the database migrations (SQLite under var/ unless MAILER_DATABASE_URL says otherwise)
	$(BIN)/mailer db upgrade

run: venv ## run web (:8000), a Celery worker, Celery beat and the SMTP catcher (:1025) until Ctrl-C; a Redis of its own under var/ if none answers
	@mkdir -p $(VAR)/outbox
	@$(BIN)/mailer local-redis start
	@trap '$(BIN)/mailer local-redis stop' EXIT; trap 'exit 130' INT TERM; \
	 $(BIN)/mailer check && $(BIN)/mailer db upgrade && $(BIN)/honcho -f Procfile.dev start

test: setup venv ## the whole test suite against real PostgreSQL, SQLite, Redis, Celery workers, SMTP and Chromium
	$(BIN)/pytest

test-fast: setup venv ## the suite without the browser and the long reliability tests
	$(BIN)/pytest -m "not browser and not slow"

lint: venv ## ruff, mypy and the import contracts (pyproject.toml: layers, no cycle, nothing imports workers/)
	$(BIN)/ruff check src workers tests bench
	$(BIN)/mypy src workers
	$(BIN)/lint-imports --no-cache --no-logo

bench: venv ## the benchmarks under bench/ (they print their figures)
	$(BIN)/python bench/compose.py
	$(BIN)/python bench/send.py
	$(BIN)/python bench/topics.py
	$(BIN)/python bench/bounces.py
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/ops.py

# Sample values for the variables docker-compose.yml requires (the check only reads the file).
COMPOSE_SAMPLE := MAILER_SECRET_KEY=compose-check-compose-check-compose-check POSTGRES_PASSWORD=check \
	MAILER_SMTP_URL=smtp://relay.example.org:587 MAILER_BASE_URL=https://newsletter.example.org

compose-check: ## validate docker-compose.yml with Docker Compose (the v2 plugin, or Debian's docker-compose)
	@if docker compose version >/dev/null 2>&1; then $(COMPOSE_SAMPLE) docker compose config --quiet; \
	 elif command -v docker-compose >/dev/null 2>&1; then $(COMPOSE_SAMPLE) docker-compose config -q; \
	 else echo "make compose-check needs Docker Compose, and none is installed: apt-get install docker-compose" \
	   "(Debian; .ci/setup does), or Docker's docker-compose-plugin. Without it, the suite's" \
	   "tests/test_deploy.py checks the file's structure: .venv/bin/pytest tests/test_deploy.py" >&2; exit 1; fi
	@echo "docker-compose.yml is valid"

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var test-artifacts .pytest_cache
