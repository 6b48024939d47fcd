# syntax=docker/dockerfile:1
#
# One image for every Medbay service. Pick the service with the command:
#   docker run medbay run collector --config /etc/medbay/collector.yaml
#   docker run medbay run detector          (the default)
#   docker run medbay run planner
#   docker run medbay run approver --config /etc/medbay/approver.yaml
#                                           (Telegram off without MEDBAY_TELEGRAM_TOKEN)
#   docker run medbay run executor --config /etc/medbay/executor.yaml
#                                           (dry-run unless the file says mode: live)
#   docker run medbay run gateway --config /etc/medbay/gateway.yaml
#                                           (API, /ws and dashboard; needs a token)
# Build from the repository root: docker build -t medbay .
#
# Configuration is by environment (see libs/common/src/medbay/common/settings.py):
# MEDBAY_NATS_URL (no credentials in it; tls:// for TLS), MEDBAY_NATS_USER (the
# service's NATS user) with MEDBAY_NATS_PASSWORD_FILE (or MEDBAY_NATS_PASSWORD),
# MEDBAY_NATS_CA_FILE (+ MEDBAY_NATS_CERT_FILE, MEDBAY_NATS_KEY_FILE) for TLS,
# MEDBAY_HTTP_HOST, MEDBAY_HTTP_PORT, MEDBAY_LOG_LEVEL,
# MEDBAY_LOG_FORMAT, MEDBAY_MAX_EVENT_BYTES, MEDBAY_PUBLISH_TIMEOUT, plus
# MEDBAY_COLLECTOR_CONFIG / MEDBAY_DETECTOR_CONFIG / MEDBAY_PLANNER_CONFIG /
# MEDBAY_APPROVER_CONFIG / MEDBAY_EXECUTOR_CONFIG / MEDBAY_GATEWAY_CONFIG (the
# same as --config) and the standard OTEL_* variables. Secrets, from the environment
# rather than a file: MEDBAY_TELEGRAM_TOKEN and MEDBAY_APPROVER_SECRET (approver),
# MEDBAY_GATEWAY_TOKENS (gateway, "name:role:token,...").
#
# No HEALTHCHECK here: each service serves /healthz on its own port (collector
# 9471, detector 9472, planner 9473, approver 9474, executor 9475, gateway 8470,
# which also serves the API and dashboard), so compose/compose.yaml and k8s/
# probe it per service.

ARG PYTHON_IMAGE=python:3.11-slim

# --- dashboard: the web UI, from its package-lock.json exactly ----------------
FROM node:20-slim AS dashboard
WORKDIR /dashboard
COPY services/gateway/dashboard/package.json services/gateway/dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY services/gateway/dashboard/ ./
RUN npm run build -- --outDir /static --emptyOutDir

# --- build: a virtual environment at /opt/medbay, from uv.lock exactly ---------
FROM ${PYTHON_IMAGE} AS build

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/medbay

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /src

# Third-party dependencies first: this layer is rebuilt only when the lockfile
# or the root pyproject changes, not on every source edit. --frozen installs
# what uv.lock says and fails rather than re-resolve; the workspace members
# are not needed for this step.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# Then the workspace itself. The root project is `package = false`; it depends
# on the `medbay` CLI, which depends on every service, so this installs them all.
# --no-editable builds them as wheels into the venv: /src is not needed at run time.
COPY libs ./libs
COPY services ./services
# the gateway serves the built dashboard from its package's static/ folder
COPY --from=dashboard /static ./services/gateway/src/medbay/gateway/static
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
 && /opt/medbay/bin/medbay run --help >/dev/null

# --- runtime: the venv and nothing else ------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 medbay \
 && useradd --system --uid 10001 --gid medbay --home-dir /home/medbay --create-home \
        --shell /usr/sbin/nologin medbay

COPY --from=build /opt/medbay /opt/medbay

# MEDBAY_HTTP_HOST: services bind /metrics and /healthz on all interfaces, not
# only loopback, so probes and Prometheus can reach them from outside the container.
ENV PATH=/opt/medbay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDBAY_HTTP_HOST=0.0.0.0 \
    MEDBAY_LOG_FORMAT=json

# The default ports (DEFAULT_HTTP_PORTS): documentation only, nothing is published.
EXPOSE 9471 9472 9473 9474 9475 8470

USER 10001:10001
WORKDIR /home/medbay

ENTRYPOINT ["medbay"]
CMD ["run", "detector"]
