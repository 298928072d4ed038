# MCP Gateway: `make help` lists the targets. Every target sets up what it needs from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

HOST ?= 127.0.0.1
PORT ?= 8000
BOOT_PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
UV := .tools/bin/uv
export UV_CACHE_DIR ?= $(CURDIR)/.tools/uv-cache

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

run: deps ## Set up and serve the gateway with daphne on HOST:PORT (default 127.0.0.1:8000)
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py ensure_superuser
	exec $(VENV)/bin/daphne -b $(HOST) -p $(PORT) gateway_project.asgi:application

test: dev ## Set up and run the whole test suite (against DATABASE_URL / REDIS_URL when they are set)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: dev ## ruff, mypy, import-linter contracts, Django system checks, missing migrations
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) manage.py check --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run

format: dev ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: | $(UV) ## Recompile requirements*.txt from requirements*.in
	$(UV) pip compile -q --python "$$(scripts/find-python $(UV))" --no-header requirements.in -o requirements.txt
	$(UV) pip compile -q --python "$$(scripts/find-python $(UV))" --no-header requirements-dev.in -o requirements-dev.txt

clean: ## Remove the virtualenv, tools and local state (keeps db.sqlite3)
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache staticfiles

.PHONY: help deps dev run test lint format lock clean
