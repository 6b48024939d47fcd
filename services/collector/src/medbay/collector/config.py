"""The collector's YAML config file, validated strictly at start-up."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from medbay.common.events import HostName

Seconds = Annotated[float, Field(gt=0, le=3600)]
ServiceName = Annotated[str, Field(min_length=1, max_length=100)]


class ConfigError(ValueError):
    """The config file is missing, not YAML, or invalid; the text says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Check(_Strict):
    name: ServiceName = Field(description="Service name, the `service` label; unique.")
    timeout_seconds: Seconds = 2.0


class ProcessCheck(_Check):
    check: Literal["process"]
    process: str | None = Field(
        default=None,
        min_length=1,
        description="Process name (or argv[0] basename) to find alive; defaults to `name`.",
    )


class TcpCheck(_Check):
    check: Literal["tcp"]
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(ge=1, le=65535)


class HttpCheck(_Check):
    check: Literal["http"]
    url: AnyHttpUrl
    expect_status: int = Field(default=200, ge=100, le=599)


class RedisCheck(_Check):
    check: Literal["redis"]
    url: str = Field(pattern=r"^(rediss?|unix)://")


class PostgresCheck(_Check):
    check: Literal["postgres"]
    dsn: str = Field(min_length=1, description="libpq connection string or postgresql:// URL.")


ServiceCheck = Annotated[
    ProcessCheck | TcpCheck | HttpCheck | RedisCheck | PostgresCheck,
    Field(discriminator="check"),
]
CHECK_KINDS = ("process", "tcp", "http", "redis", "postgres")


class ScrapeTarget(_Strict):
    name: ServiceName = Field(description="The `scrape_job` label; unique.")
    url: AnyHttpUrl
    timeout_seconds: Seconds = 2.0
    max_samples: int = Field(default=5000, ge=1, le=20_000)


def _unique_names(items: list[ServiceCheck] | list[ScrapeTarget], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ValueError(f"duplicate {what} name {item.name!r}")
        seen.add(item.name)


class CollectorConfig(_Strict):
    host: HostName = Field(default_factory=socket.gethostname)
    interval_seconds: Seconds = 5.0
    top_processes: int = Field(default=5, ge=0, le=100)
    services: list[ServiceCheck] = Field(default_factory=list)
    scrape: list[ScrapeTarget] = Field(default_factory=list)

    @field_validator("services")
    @classmethod
    def _unique_services(cls, value: list[ServiceCheck]) -> list[ServiceCheck]:
        _unique_names(value, "service")
        return value

    @field_validator("scrape")
    @classmethod
    def _unique_scrapes(cls, value: list[ScrapeTarget]) -> list[ScrapeTarget]:
        _unique_names(value, "scrape")
        return value


def _where(loc: tuple[int | str, ...]) -> str:
    """`('services', 2, 'tcp', 'port')` -> `services[2].port` (drops the union tag)."""
    text = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in CHECK_KINDS:
            continue
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def load_config(path: Path | None) -> CollectorConfig:
    """Read and validate the config file; None gives the defaults (no checks, no scrapes)."""
    if path is None:
        return CollectorConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read collector config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"collector config {path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"collector config {path}: expected a mapping at the top level")
    try:
        return CollectorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n".join(f"  {_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid collector config {path}:\n{problems}") from exc
