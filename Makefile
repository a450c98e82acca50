# Longhaul: `make run` starts everything locally with demo data; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# Where `make run` keeps Redis's data and the logs.
STATE_DIR ?= .dev
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := redis-server nginx chromium unzip

.PHONY: install system-deps run test test-fast e2e lint format typecheck bench clean

install: system-deps $(VENV)/.installed

# Debian packages the stack and the tests need: Redis, nginx (proxy tests), Chromium (e2e),
# unzip (member names must extract with Info-ZIP unzip, tests/test_entrynames.py). Redis
# Sentinel needs no package of its own: it is `redis-server <conf> --sentinel` (Debian's
# redis-sentinel package adds only another name for that binary, a config and a service unit;
# tests/test_sentinel.py). redis-cli comes with redis-server (redis-tools).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v unzip >/dev/null || missing="$$missing unzip"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: install
	$(PY) -m backend dev --state-dir $(STATE_DIR)

test: install lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not e2e and not slow"

e2e: install
	$(PY) -m pytest e2e

lint: install
	$(VENV)/bin/ruff check backend tests e2e bench
	$(VENV)/bin/ruff format --check backend tests e2e bench
	$(VENV)/bin/mypy backend

format: install
	$(VENV)/bin/ruff format backend tests e2e bench
	$(VENV)/bin/ruff check --fix backend tests e2e bench

typecheck: install
	$(VENV)/bin/mypy backend

bench: install
	$(PY) -m bench

clean:
	rm -rf .dev artifacts .pytest_cache .ruff_cache .mypy_cache
