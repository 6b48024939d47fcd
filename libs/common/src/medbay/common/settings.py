"""Settings every service reads from the environment (``MEDBAY_*``).

Service-specific configuration (checks, thresholds, ...) lives in each service's
own YAML config file, read and validated by ``load_yaml_config``.

NATS credentials: ``MEDBAY_NATS_USER`` names the service's identity (see
``medbay.common.access``) and ``MEDBAY_NATS_PASSWORD`` or
``MEDBAY_NATS_PASSWORD_FILE`` its password (``medbay auth init`` makes them). For
TLS, use ``tls://`` URLs and ``MEDBAY_NATS_CA_FILE`` (plus ``MEDBAY_NATS_CERT_FILE``
and ``MEDBAY_NATS_KEY_FILE`` where the server asks for client certificates).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from medbay.common.access import inbox_prefix

DEFAULT_HTTP_PORTS = {
    "collector": 9471,
    "detector": 9472,
    "planner": 9473,
    "approver": 9474,
    "executor": 9475,
    "gateway": 8470,
}


class BusSettings(BaseSettings):
    """How a service reaches NATS and exposes itself."""

    model_config = SettingsConfigDict(env_prefix="MEDBAY_", extra="ignore")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="NATS server URL (comma-separated for many; tls:// for TLS).",
    )
    nats_user: str | None = Field(
        default=None, min_length=1, description="This service's NATS identity (user)."
    )
    nats_password: SecretStr | None = Field(default=None, description="Its password.")
    nats_password_file: Path | None = Field(
        default=None, description="Or: a file holding its password (e.g. a mounted secret)."
    )
    nats_ca_file: Path | None = Field(
        default=None, description="CA certificate(s) that signed the NATS server's certificate."
    )
    nats_cert_file: Path | None = Field(default=None, description="Client certificate (mTLS).")
    nats_key_file: Path | None = Field(default=None, description="Client key (mTLS).")
    nats_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Copies JetStream keeps of every stream and bucket a service owns: 1 on "
        "one server, 3 on a cluster of three or more (survives losing one server).",
    )
    max_clock_skew_seconds: float = Field(
        default=300.0, gt=0, description="Events dated further in the future are rejected."
    )
    http_host: str = Field(default="127.0.0.1", description="Bind address for /metrics, /healthz.")
    http_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port for /metrics, /healthz (0: any free)."
    )
    max_event_bytes: int = Field(
        default=512 * 1024, gt=0, description="Larger messages are dead-lettered unread."
    )
    publish_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a PubAck.")
    log_level: str = Field(default="INFO")
    log_format: str = Field(default="json", pattern="^(json|text)$")

    @field_validator(
        "nats_user",
        "nats_password",
        "nats_password_file",
        "nats_ca_file",
        "nats_cert_file",
        "nats_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _credentials(self) -> BusSettings:
        if self.nats_password is not None and self.nats_password_file is not None:
            raise ValueError("set MEDBAY_NATS_PASSWORD or MEDBAY_NATS_PASSWORD_FILE, not both")
        if (self.nats_cert_file is None) != (self.nats_key_file is None):
            raise ValueError("MEDBAY_NATS_CERT_FILE and MEDBAY_NATS_KEY_FILE go together")
        return self

    def port_for(self, service: str) -> int:
        if self.http_port is not None:
            return self.http_port
        return DEFAULT_HTTP_PORTS.get(service, 0)

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    def password(self) -> str | None:
        if self.nats_password is not None:
            return self.nats_password.get_secret_value()
        if self.nats_password_file is not None:
            try:
                return self.nats_password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"MEDBAY_NATS_PASSWORD_FILE {self.nats_password_file}: {exc.strerror}"
                ) from None
        return None

    def tls_context(self) -> ssl.SSLContext | None:
        """A context verifying the server against the CA file (and presenting a client
        certificate if one is set); None leaves TLS to the URL's scheme and the
        system's CAs."""
        if self.nats_ca_file is None and self.nats_cert_file is None:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.nats_ca_file) if self.nats_ca_file else None
            )
            if self.nats_cert_file is not None and self.nats_key_file is not None:
                context.load_cert_chain(str(self.nats_cert_file), str(self.nats_key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"NATS TLS files: {exc}") from None
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (and faststream's broker) beyond the URLs."""
        options: dict[str, Any] = {}
        password = self.password()
        if self.nats_user is not None:
            options["user"] = self.nats_user
            options["inbox_prefix"] = inbox_prefix(self.nats_user)
            if password is not None:
                options["password"] = password
        elif password is not None:
            raise ConfigError("a NATS password is set but MEDBAY_NATS_USER is not")
        tls = self.tls_context()
        if tls is not None:
            options["tls"] = tls
        return options

    def safe_nats_url(self) -> str:
        return ",".join(redact_url(u) for u in self.servers)


def load_bus_settings() -> BusSettings:
    """``BusSettings`` from the environment; ``ConfigError`` naming the variable if wrong."""
    try:
        return BusSettings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"MEDBAY_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigError(f"bad settings: {problems}") from None


def redact_url(url: str) -> str:
    """``url`` without the password in its user info, for logs and screens."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class ConfigError(ValueError):
    """A config file is unusable; the message names the file, the field and the problem."""


M = TypeVar("M", bound=BaseModel)


def load_yaml_config(path: Path | None, model: type[M], *, what: str) -> M:
    """Read and validate a service's YAML config; None gives the model's defaults."""
    if path is None:
        return model()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} config {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} config {path}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {error_location(e['loc'], data)}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid {what} config {path}:\n{problems}") from None


def error_location(loc: tuple[int | str, ...], data: object) -> str:
    """``('services', 2, 'tcp', 'port')`` -> ``services[2].port``.

    Follows ``loc`` through the input ``data`` and drops the parts that are not
    in it: pydantic adds the tag of a discriminated union (``tcp``) to the path.
    """
    text = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and part in map(str, node.values()):
            continue  # a union tag, not a key
        text += f".{part}" if text else part
        node = node.get(part) if isinstance(node, dict) else None
    return text


C = TypeVar("C")


def config_from_command_line(
    service: str, argv: list[str] | None, load: Callable[[Path | None], C], *, otherwise: str
) -> C:
    """A service's ``--config FILE`` (default ``$MEDBAY_<SERVICE>_CONFIG``), loaded.

    A bad config stops the process here with exit status 2 and the reason, before
    anything connects. ``otherwise`` says what runs without a file.
    """
    env = f"MEDBAY_{service.upper()}_CONFIG"
    parser = argparse.ArgumentParser(prog=f"medbay run {service}")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(p) if (p := os.environ.get(env)) else None,
        help=f"{service} config YAML (default: ${env}, else {otherwise})",
    )
    args = parser.parse_args(argv)
    try:
        return load(args.config)
    except ConfigError as exc:
        print(f"medbay {service}: bad config: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


_NO_PLACEMENT = 10005
"""JetStream's error code for copies it cannot place."""


def peer_offline(exc: BaseException) -> bool:
    """Whether the server could not place copies because a server of the cluster is
    offline: passing while a cluster starts or a server restarts, so worth retrying."""
    text = str(getattr(exc, "description", None) or "")
    return getattr(exc, "err_code", None) == _NO_PLACEMENT and "offline" in text


def offline_problem(name: str, exc: BaseException) -> ConfigError:
    """What to do when copies of ``name`` stayed unplaceable with a server offline."""
    text = str(getattr(exc, "description", None) or exc)
    return ConfigError(
        f"cannot place the copies of {name}: the NATS server says {text!r}. Start the "
        "cluster's offline server, or lower MEDBAY_NATS_REPLICAS."
    )


def replicas_problem(name: str, replicas: int, exc: Exception) -> Exception:
    """A ``ConfigError`` when the server cannot keep ``replicas`` copies of ``name``
    (a single server, or fewer JetStream servers than copies); else ``exc`` itself
    (also when a server is only offline: ``peer_offline``, for the caller to retry)."""
    text = str(getattr(exc, "description", None) or exc)
    if peer_offline(exc):
        return exc
    if replicas > 1 or "replica" in text.lower():
        return ConfigError(
            f"cannot keep {name} in {replicas} copies (MEDBAY_NATS_REPLICAS): the NATS server "
            f"says {text!r}. Use 1 on a single server, and at most the number of JetStream "
            "servers of a cluster (3 on a 3-node cluster)."
        )
    return exc
