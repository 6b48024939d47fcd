# Medbay: `make up` runs it, `make test` tests it. Nothing else is needed on a
# fresh clone but Python 3.11 and make; uv is bootstrapped into .tools/ if absent.

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_PYTHON ?= 3.11
export UV_PYTHON_DOWNLOADS ?= never
VENV := .venv
BIN := $(VENV)/bin

DASHBOARD := services/gateway/dashboard
STATIC := services/gateway/src/medbay/gateway/static
PACKAGES := common cli collector detector planner approver executor gateway
# Extra pytest options, e.g. make test-executor PYTEST_ARGS='-k safety -x'
PYTEST_ARGS ?=
# Test worker processes (pytest-xdist; --dist loadgroup is in pyproject.toml). Most tests
# wait on the servers and services they start, so more workers than cores pay; 0: serially.
PYTEST_WORKERS ?= 4
PYTEST := $(BIN)/pytest -n $(PYTEST_WORKERS)

.PHONY: up test test-fast help sync lint typecheck pytest pytest-fast system-deps dashboard \
	dashboard-test bench clean

# make up NATS_PORT=4223 when 4222 is taken; ARGS go to `medbay up` as they are, e.g.
# make up ARGS="--no-demo --approver-config approver.yaml" (see .venv/bin/medbay up --help)
up: sync dashboard ## run NATS, every service and the dashboard (NATS_PORT=4223, ARGS="--no-demo ...")
	$(BIN)/medbay up $(if $(NATS_PORT),--port $(NATS_PORT)) $(ARGS)

test: sync system-deps dashboard lint typecheck dashboard-test pytest ## every check and every test (.ci/run runs this)

test-fast: sync system-deps lint typecheck pytest-fast ## the quick loop: lint, typecheck, tests not marked slow

# make test-executor: one package's tests (its tests/ folder and tests/test_NAME*.py)
TESTS_common := tests/test_bus.py tests/test_health_http.py
test-%: sync ## one package's tests: make test-executor, test-common, test-cli ...
	@tests="$(strip $(TESTS_$*) $(wildcard services/$*/tests libs/$*/tests tests/test_$*.py tests/test_$*_*.py))"; \
	if [ -z "$$tests" ]; then echo "no tests for '$*'; packages: $(PACKAGES)" >&2; exit 2; fi; \
	echo "$(PYTEST) $$tests $(PYTEST_ARGS)"; $(PYTEST) $$tests $(PYTEST_ARGS)

help: ## this list
	@echo "make TARGET, where TARGET is one of:"
	@grep -hE '^(## )?[a-zA-Z%_-]+:.*## |^## [a-zA-Z%_-]+: ' $(MAKEFILE_LIST) | \
		sed -E 's/^## ([^:]+): (.*)/\1: ## \2/' | \
		awk -F':.*## ' '{ sub(/%/, "PACKAGE", $$1); printf "  %-16s %s\n", $$1, $$2 }'

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.9

# Compiled ahead: every service process (and there are many in the tests) imports
# pydantic, faststream and scikit-learn, and compiling them on each start costs
# seconds of CPU where the environment forbids writing bytecode (PYTHONDONTWRITEBYTECODE).
sync: $(if $(findstring .tools/,$(UV)),.tools/bin/uv) ## install the locked dependencies into .venv
	$(UV) sync --frozen --compile-bytecode
	$(BIN)/python -m compileall -q -j 0 -x node_modules libs services bench tests

# Real servers the tests start on free ports (redis-server, PostgreSQL binaries).
system-deps: ## install redis, PostgreSQL, Chromium, openssl (Debian packages) when missing
	@scripts/install-system-deps

# The web dashboard (Node.js and npm from the machine; packages from the lockfile),
# built into the gateway's static/ folder when missing or older than its sources.
dashboard: $(STATIC)/index.html ## build the web dashboard when its sources changed

$(DASHBOARD)/node_modules/.package-lock.json: $(DASHBOARD)/package-lock.json
	cd $(DASHBOARD) && npm ci --no-audit --no-fund

$(STATIC)/index.html: $(DASHBOARD)/node_modules/.package-lock.json $(DASHBOARD)/index.html \
		$(DASHBOARD)/vite.config.ts $(shell find $(DASHBOARD)/src $(DASHBOARD)/public -type f 2>/dev/null)
	cd $(DASHBOARD) && npm run build

dashboard-test: $(DASHBOARD)/node_modules/.package-lock.json ## the dashboard's type check and unit tests
	cd $(DASHBOARD) && npm run check && npm test

lint: ## ruff (rules, formatting), import boundaries (lint-imports), hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/hadolint Dockerfile

typecheck: ## mypy, strict, on every package and the tests ([tool.mypy] files in pyproject.toml)
	$(BIN)/mypy

pytest: ## every Python test, on PYTEST_WORKERS processes (4; PYTEST_WORKERS=0: serially)
	$(PYTEST) $(PYTEST_ARGS)

pytest-fast: ## the Python tests not marked slow (no whole-system or browser tests)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

bench: sync ## the pipeline and NAB benchmarks
	$(BIN)/medbay bench pipeline
	$(BIN)/medbay bench nab

clean: ## remove state, caches and built files
	rm -rf .medbay .pytest_cache .mypy_cache .ruff_cache $(STATIC) $(DASHBOARD)/node_modules
