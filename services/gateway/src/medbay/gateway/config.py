"""The gateway's configuration: who may use it, how much history it keeps.

A YAML file named by ``MEDBAY_GATEWAY_CONFIG`` (or ``--config``); every field has a
default. Without any token the gateway refuses to start, unless
``allow_anonymous_viewer`` lets everyone read (never change) without a token: a
gateway nobody may use is a mistake, and one that everybody may use must be meant.

.. code-block:: yaml

    tokens:                       # bearer tokens; each request names who made it
      - {name: alice, token_env: ALICE_TOKEN, role: operator}
      - {name: wallboard, token: "k6Dq0...at-least-16-chars", role: viewer}
    allow_anonymous_viewer: false # true: requests without a token may read
    allowed_hosts: [localhost, 127.0.0.1, "[::1]"]   # Host names served, any port
    allowed_origins: []           # pages of other origins that may open /ws
    max_body_bytes: 65536         # larger request bodies: 413, refused unread
    history_hours: 72             # what the views hold (and rebuild from JetStream)
    max_incidents: 10000          # the least recently active go first (~7 KB each)
    metrics: {history_seconds: 900, history_points: 60, max_hosts: 200}
    monitoring: {history_points: 120, max_services: 1000, max_operations: 5000,
                 max_edges: 2000, stale_seconds: 120, forget_seconds: 3600}
    jaeger_url: null              # Jaeger's UI, for links to traces; none: no links
    websocket: {queue_size: 256, send_timeout_seconds: 10}
    health:                       # where the other services answer /healthz
      host: 127.0.0.1
      ports: {detector: 9472}     # default: medbay.common.settings.DEFAULT_HTTP_PORTS
      urls: {executor: "http://executor:9475/healthz"}
    replay: {max_messages: 100000}
    static_dir: /srv/medbay/dashboard   # default: the package's static/ folder, if any
    lab_report: /var/lib/medbay/lab/latest.json  # the lab's latest report; default: none

More tokens may come from ``MEDBAY_GATEWAY_TOKENS``: ``name:role:token`` entries
separated by commas (see ``tokens_from_env``).

``allowed_hosts`` guards against DNS rebinding: a request whose ``Host`` names
another host is answered 400, except ``/healthz`` and ``/metrics`` (probes use the
pod's IP). Entries are host names or IP addresses without a port (IPv6 in brackets
or bare), ``*.example.com`` for every subdomain of example.com, or ``*`` for any
host, which turns the check off and is unsafe for a gateway a browser can reach.
Behind a proxy, list the names the gateway is reached by.

``allowed_origins`` (``scheme://host[:port]`` each) are the web pages, besides the
gateway's own (an ``Origin`` whose host and port are the request's ``Host``), that
may open ``/ws``; a browser's handshake from any other page is refused with 403.
Clients that send no ``Origin`` (scripts, not browsers) are let through to the
token check.

``lab_report`` names the JSON report ``medbay lab`` writes (``medbay up`` passes
``<data-dir>/lab/latest.json``): the Automation page shows it. The file may be
missing (no lab run yet) and is read when asked for, so a new run shows at once.

``monitoring`` bounds what the Monitoring view holds of the collector's trace figures
(``medbay.gateway.monitoring``): per service a history of ``history_points``, at most
``max_services`` services, ``max_operations`` operations and ``max_edges`` dependency
edges in all (the least recently reported go first). An operation or edge not reported
for ``stale_seconds`` is dropped, a service not reported for ``forget_seconds`` too.

``jaeger_url`` is where Jaeger's UI answers (``http://jaeger:16686``): the dashboard and
``/api/traces/{trace_id}`` link traces there. Without it there are no trace links at all,
rather than links to a UI that is not there.

``max_body_bytes`` (1 KiB to 64 MiB) bounds every request body: a larger one is
answered 413 before it is read, or, streamed, as soon as it passes the limit.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from medbay.common.settings import DEFAULT_HTTP_PORTS, ConfigError, load_yaml_config

__all__ = ["ConfigError", "GatewayConfig", "TokenConfig", "load_config"]

Role = Literal["viewer", "operator"]

MIN_TOKEN_LENGTH = 16
TOKENS_ENV = "MEDBAY_GATEWAY_TOKENS"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9@._-]*$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenConfig(_Section):
    name: str = Field(
        min_length=1, max_length=200, pattern=_NAME, description="Who uses it, as recorded."
    )
    token: SecretStr | None = Field(default=None, description="The token itself.")
    token_env: str | None = Field(
        default=None, min_length=1, description="Or: the environment variable holding it."
    )
    role: Role

    @model_validator(mode="after")
    def _resolve(self) -> TokenConfig:
        if (self.token is None) == (self.token_env is None):
            raise ValueError("give exactly one of token and token_env")
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "")
            if not value:
                raise ValueError(f"environment variable {self.token_env} is not set")
            object.__setattr__(self, "token", SecretStr(value))
        if len(self.secret) < MIN_TOKEN_LENGTH:
            raise ValueError(f"token shorter than {MIN_TOKEN_LENGTH} characters")
        return self

    @property
    def secret(self) -> str:
        assert self.token is not None
        return self.token.get_secret_value()


class MetricsConfig(_Section):
    history_seconds: float = Field(
        default=900.0, ge=0, le=86_400, description="Metric history read back at start-up."
    )
    history_points: int = Field(default=60, ge=1, le=10_000, description="Points kept per series.")
    max_hosts: int = Field(default=200, ge=1, le=100_000)
    max_series_per_host: int = Field(default=200, ge=1, le=100_000)


class MonitoringConfig(_Section):
    history_points: int = Field(
        default=120, ge=1, le=10_000, description="RED points kept per service."
    )
    max_services: int = Field(
        default=1000, ge=1, le=100_000, description="(host, service) pairs held, in all."
    )
    max_operations: int = Field(
        default=5000, ge=1, le=1_000_000, description="(host, service, operation) held, in all."
    )
    max_edges: int = Field(
        default=2000, ge=1, le=1_000_000, description="Dependency edges held, in all."
    )
    stale_seconds: float = Field(
        default=120.0,
        ge=1,
        le=86_400,
        description="An operation or edge not reported for this long is dropped.",
    )
    forget_seconds: float = Field(
        default=3600.0,
        ge=1,
        le=7 * 86_400,
        description="A service not reported for this long is dropped, its history with it.",
    )


def _jaeger_url(text: str) -> str:
    """Jaeger's UI: an http(s) URL, kept without a trailing slash."""
    url = text.strip()
    expected = f"{text!r}: expected http(s)://host[:port][/path], e.g. http://jaeger:16686"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(expected)
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: give Jaeger's UI without a query or fragment")
    return url.rstrip("/")


class WebSocketConfig(_Section):
    queue_size: int = Field(
        default=256, ge=1, le=100_000, description="Events waiting per client before it is dropped."
    )
    send_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="A client taking longer for one event is dropped."
    )


class HealthConfig(_Section):
    host: str = Field(default="127.0.0.1", min_length=1, description="Where the services run.")
    ports: dict[str, int] = Field(
        default_factory=dict, description="Per service, overriding DEFAULT_HTTP_PORTS."
    )
    urls: dict[str, str] = Field(
        default_factory=dict, description="Per service, a full /healthz URL (beats host/ports)."
    )
    timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    cache_seconds: float = Field(default=2.0, ge=0, le=300, description="Poll at most this often.")

    @model_validator(mode="after")
    def _known_services(self) -> HealthConfig:
        unknown = sorted((set(self.ports) | set(self.urls)) - set(DEFAULT_HTTP_PORTS))
        if unknown:
            raise ValueError(f"unknown services {unknown}; known: {sorted(DEFAULT_HTTP_PORTS)}")
        bad = sorted(name for name, port in self.ports.items() if not 0 < port < 65536)
        if bad:
            raise ValueError(f"ports out of range for {bad}")
        return self


class ReplayConfig(_Section):
    max_messages: int = Field(default=100_000, ge=1, le=10_000_000)


def _host_pattern(text: str) -> str:
    """A host name, IP address, ``*.domain`` or ``*``; bare IPv6 addresses get brackets."""
    pattern = text.strip().lower()
    if pattern == "*":
        return pattern
    name = pattern.removeprefix("*.")
    if not name or "*" in name or any(c in name for c in "/@ \t"):
        raise ValueError(f"{text!r}: expected a host name, an IP address, *.domain or *")
    if name.count(":") > 1 and not name.startswith("["):
        name = f"[{name}]"
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise ValueError(f"{text!r}: not an IPv6 address") from None
    elif ":" in name:
        raise ValueError(f"{text!r}: give the host without a port (any port is allowed)")
    return pattern[:2] + name if pattern.startswith("*.") else name


_ORIGIN = re.compile(r"^https?://([a-z0-9_.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")


def _origin(text: str) -> str:
    """``scheme://host[:port]`` as browsers send it: lower case, no path."""
    origin = text.strip().lower().rstrip("/")
    if not _ORIGIN.match(origin):
        raise ValueError(f"{text!r}: expected scheme://host[:port], e.g. https://ops.example.com")
    return origin


HostPattern = Annotated[str, AfterValidator(_host_pattern)]
Origin = Annotated[str, AfterValidator(_origin)]
DEFAULT_ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


class GatewayConfig(_Section):
    tokens: list[TokenConfig] = Field(default_factory=list)
    allow_anonymous_viewer: bool = Field(
        default=False, description="Requests without a token may read (never change anything)."
    )
    allowed_hosts: list[HostPattern] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_HOSTS),
        min_length=1,
        description="Host header values served (any port); others get 400. '*': any (unsafe).",
    )
    allowed_origins: list[Origin] = Field(
        default_factory=list,
        description="Pages besides the gateway's own that may open /ws (scheme://host[:port]).",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Larger request bodies are refused with 413 before they are read.",
    )
    history_hours: float = Field(default=72.0, gt=0, le=24 * 365)
    max_incidents: int = Field(
        default=10_000, ge=1, le=1_000_000, description="The least recently active go first."
    )
    max_timeline_events: int = Field(
        default=200, ge=10, le=100_000, description="Per incident; the oldest go first."
    )
    max_results: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Recent step results kept for listing."
    )
    recent_events: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="Latest events kept for /api/events (metric batches: a tenth as many more).",
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    jaeger_url: Annotated[str, AfterValidator(_jaeger_url)] | None = Field(
        default=None,
        description="Jaeger's UI (http://jaeger:16686), for links to traces; none: no links.",
    )
    websocket: WebSocketConfig = Field(default_factory=WebSocketConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    static_dir: Path | None = Field(
        default=None, description="Dashboard files served at /; must exist when given."
    )
    lab_report: Path | None = Field(
        default=None,
        description="The lab's latest report (JSON, by `medbay lab`); it may not exist yet.",
    )

    @model_validator(mode="after")
    def _check(self) -> GatewayConfig:
        problem = token_problem(self.tokens)
        if problem is not None:
            raise ValueError(problem)
        if self.static_dir is not None and not self.static_dir.is_dir():
            raise ValueError(f"static_dir {self.static_dir} is not a directory")
        return self


def token_problem(tokens: list[TokenConfig]) -> str | None:
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        return "two tokens share a name"
    if len({t.secret for t in tokens}) != len(tokens):
        return "two tokens are the same"
    return None


_ENTRY = re.compile(r"^([^:]+):([^:]+):(.+)$")


def tokens_from_env(text: str) -> list[TokenConfig]:
    """``name:role:token`` entries separated by commas (or whitespace)."""
    tokens = []
    for index, part in enumerate((p for p in re.split(r"[,\s]+", text) if p), start=1):
        match = _ENTRY.match(part)
        if match is None:  # never echo the entry: it holds a token
            raise ConfigError(f"{TOKENS_ENV}: entry {index} is not name:role:token")
        name, role, token = match.groups()
        try:
            tokens.append(TokenConfig.model_validate({"name": name, "role": role, "token": token}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'token'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"{TOKENS_ENV}: entry {index}: {problems}") from None
    return tokens


def load_config(path: Path | None) -> GatewayConfig:
    """The file's config (or the defaults) plus the tokens from ``MEDBAY_GATEWAY_TOKENS``.

    Refuses a config that gives nobody access: no token and no anonymous viewer.
    """
    config = load_yaml_config(path, GatewayConfig, what="gateway")
    extra = tokens_from_env(os.environ.get(TOKENS_ENV, ""))
    if extra:
        tokens = [*config.tokens, *extra]
        problem = token_problem(tokens)
        if problem is not None:
            raise ConfigError(f"tokens (with {TOKENS_ENV}): {problem}")
        config = config.model_copy(update={"tokens": tokens})
    if not config.tokens and not config.allow_anonymous_viewer:
        raise ConfigError(
            f"tokens: none configured; add tokens (in the config or {TOKENS_ENV}),"
            " or set allow_anonymous_viewer: true to let anyone read without one"
        )
    return config
