"""Settings every service reads from the environment (``MEDBAY_*``).

Service-specific configuration (checks, thresholds, ...) lives in each service's
own YAML config file, read and validated by ``load_yaml_config``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

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
        default="nats://127.0.0.1:4222", description="NATS server URL (comma-separated for many)."
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

    def port_for(self, service: str) -> int:
        if self.http_port is not None:
            return self.http_port
        return DEFAULT_HTTP_PORTS.get(service, 0)


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
