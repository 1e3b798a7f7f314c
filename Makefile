# Touchpulse — every command sets up what it needs first (virtualenv, locked
# dependencies, Kafka jars); nothing has to be installed by hand.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup run test lint format lock schema clean bench bench-ingest bench-scoring bench-replay bench-scale bench-api bench-history bench-desk bench-backtest desk-screenshots fuzz soak

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The locked set, hashes checked, then the project itself (editable) built by the locked
# hatchling, so no unpinned build environment is ever downloaded.
$(STAMP): requirements.lock pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e clients/python
	touch $@

setup: $(STAMP) ## Create the virtualenv, install locked dependencies, fetch the Kafka jars and Prometheus, install chromium and fetch axe-core (desk browser tests)
	$(BIN)/touchpulse stack fetch

run: setup ## Start Kafka, PostgreSQL and every service; Ctrl-C stops all of it
	TOUCHPULSE_LOG_FORMAT=$${TOUCHPULSE_LOG_FORMAT:-console} exec $(BIN)/touchpulse run

test: setup ## Run the test suite against a real local Kafka and PostgreSQL
	$(BIN)/python -m pytest

fuzz: setup ## Long abuse runs: Schemathesis with every check and the stateful phase, 1,000 examples per operation, against ingest and the api, and the abuse suite
	@start=$$(date +%s); \
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(BIN)/python -m pytest tests/abuse/test_fuzz.py tests/api/test_fuzz.py tests/abuse -p no:cacheprovider --durations=5; \
	status=$$?; echo "make fuzz: $$(( $$(date +%s) - start )) s"; exit $$status

soak: setup ## Every fault (broker, scoring, ingest, PostgreSQL and its sessions, links, retention) under load, several rounds (38 min at most); then the primary failover and the three-broker phases on their own stacks (at most 6 and 10 min)
	$(BIN)/python -m tests.faults --soak

bench: setup ## Every benchmark on one broker and database: ingest, scoring, replay, scale-out, api, history, desk, backtest (about 16 min, estimated)
	$(BIN)/python -m tests.bench

bench-ingest: setup ## Benchmark ingest against Kafka's ProducerPerformance and a bare ASGI route
	$(BIN)/python -m tests.bench.ingest

bench-scoring: setup ## Benchmark scoring against an asyncpg upsert loop and Kafka's consumer tools
	$(BIN)/python -m tests.bench.scoring

bench-replay: setup ## Benchmark touchpulse-scoring replay rebuilding the topic against the asyncpg upsert loop
	$(BIN)/python -m tests.bench.replay

bench-scale: setup ## Benchmark scoring with one and with two instances on 6 partitions
	$(BIN)/python -m tests.bench.scale

bench-api: setup ## Benchmark the customer-health read against a bare ASGI route, while the pipeline ingests
	$(BIN)/python -m tests.bench.api

bench-history: setup ## Benchmark scoring and the health read on a year of history (2 M events) against an empty database
	$(BIN)/python -m tests.bench.history

bench-desk: setup ## Benchmark the desk's queue and customer pages (10,000 open cases, 100,000 customers) against a bare route
	$(BIN)/python -m tests.bench.desk

bench-backtest: setup ## Benchmark catalogue backtest's re-judging (events per CPU-second) against the pure domain's own loop
	$(BIN)/python -m tests.bench.backtest

desk-screenshots: setup ## Photograph every desk page in chromium (desktop and phone) and copy the pictures to docs/desk/
	$(BIN)/python -m pytest tests/desk/browser -k photographed -p no:cacheprovider -q
	mkdir -p docs/desk
	rm -f docs/desk/*.png
	cp .touchpulse/desk-screenshots/*.png docs/desk/

lint: $(STAMP) ## ruff (format check + lint), mypy --strict and the import contracts (lint-imports)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP) ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: $(STAMP) ## Re-export the JSON Schemas (events, promise catalogue) into docs/schema
	$(BIN)/touchpulse schema export docs/schema

lock: ## Re-resolve requirements.lock from pyproject.toml (needs network to PyPI)
	$(PYTHON) -m pip install --quiet --target .cache/uv uv
	PYTHONPATH=.cache/uv .cache/uv/bin/uv pip compile pyproject.toml --extra dev --extra local --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --no-header -o requirements.lock

clean: ## Remove the virtualenv, caches and local state (Kafka jars included)
	rm -rf $(VENV) .cache .touchpulse .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
