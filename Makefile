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

.PHONY: up test sync lint typecheck pytest system-deps dashboard dashboard-test bench clean

# make up NATS_PORT=4223 when 4222 is taken
up: sync dashboard
	$(BIN)/medbay up $(if $(NATS_PORT),--port $(NATS_PORT))

test: sync system-deps dashboard lint typecheck dashboard-test pytest

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==0.13.9

sync: $(if $(findstring .tools/,$(UV)),.tools/bin/uv)
	$(UV) sync --frozen

# Real servers the tests start on free ports (redis-server, PostgreSQL binaries).
system-deps:
	@scripts/install-system-deps

# The web dashboard (Node.js and npm from the machine; packages from the lockfile),
# built into the gateway's static/ folder when missing or older than its sources.
dashboard: $(STATIC)/index.html

$(DASHBOARD)/node_modules/.package-lock.json: $(DASHBOARD)/package-lock.json
	cd $(DASHBOARD) && npm ci --no-audit --no-fund

$(STATIC)/index.html: $(DASHBOARD)/node_modules/.package-lock.json $(DASHBOARD)/index.html \
		$(DASHBOARD)/vite.config.ts $(shell find $(DASHBOARD)/src $(DASHBOARD)/public -type f 2>/dev/null)
	cd $(DASHBOARD) && npm run build

dashboard-test: $(DASHBOARD)/node_modules/.package-lock.json
	cd $(DASHBOARD) && npm run check && npm test

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck:
	$(BIN)/mypy libs/common/src libs/cli/src services/collector/src services/detector/src \
		services/planner/src services/executor/src services/approver/src services/gateway/src

pytest:
	$(BIN)/pytest

bench: sync
	$(BIN)/medbay bench pipeline
	$(BIN)/medbay bench nab

clean:
	rm -rf .medbay .pytest_cache .mypy_cache .ruff_cache $(STATIC) $(DASHBOARD)/node_modules
