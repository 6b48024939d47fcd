"""The collector's YAML config file, validated strictly at start-up."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from medbay.common.events import HostName
from medbay.common.settings import ConfigError, load_yaml_config

__all__ = ["CollectorConfig", "ConfigError", "load_config"]

Seconds = Annotated[float, Field(gt=0, le=3600)]
GraceSeconds = Annotated[float, Field(ge=0, le=3600)]
ServiceName = Annotated[str, Field(min_length=1, max_length=100)]

MAX_CHECKS = 1000
"""As many failing checks as one MetricBatch can give reasons for."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Check(_Strict):
    name: ServiceName = Field(description="Service name, the `service` label; unique.")
    timeout_seconds: Seconds = 2.0
    startup_grace_seconds: GraceSeconds | None = Field(
        default=None,
        description="Until its first success, failures this long after the collector "
        "started are not reported; defaults to the collector's `startup_grace_seconds`.",
    )


class ProcessCheck(_Check):
    check: Literal["process"]
    process: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
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


class ScrapeTarget(_Strict):
    name: ServiceName = Field(description="The `scrape_job` label; unique.")
    url: AnyHttpUrl
    timeout_seconds: Seconds = 2.0
    max_samples: int = Field(default=5000, ge=1, le=20_000)


class DirectoryBudget(_Strict):
    name: ServiceName = Field(description="The `directory` label; unique.")
    path: Path = Field(description="Absolute path of the directory to measure.")
    budget_bytes: int = Field(gt=0, description="Bytes the directory may hold: 100 %.")
    max_entries: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Stop counting after this many entries (files, directories, links).",
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"must be an absolute path, not {str(value)!r}")
        return value


MetricSampleName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
]
MaxOperations = Annotated[
    int,
    Field(
        ge=1,
        le=10_000,
        description="(service, operation) keys, and service edges, per interval; spans of "
        "further keys are counted under operation `(other)` of their service.",
    ),
]
MinRequestsForRatio = Annotated[
    int,
    Field(
        ge=1,
        le=1_000_000,
        description="span_service_error_ratio is only sent for a service with at least "
        "this many requests in the interval.",
    ),
]


class OtlpReceiver(_Strict):
    """The OTLP/HTTP trace receiver: applications send their spans to POST /v1/traces."""

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=255,
        description="Listen address; 0.0.0.0 in a container.",
    )
    port: int = Field(default=4318, ge=0, le=65535, description="0: any free port (logged).")
    max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Largest request body, after gzip decompression too; larger: HTTP 413.",
    )
    max_operations: MaxOperations = 1000
    min_requests_for_ratio: MinRequestsForRatio = 5


class SpanmetricsScrape(_Strict):
    """Scrape an OpenTelemetry Collector's spanmetrics (and servicegraph) connector
    output, in the Prometheus text format, for the same figures."""

    url: AnyHttpUrl
    timeout_seconds: Seconds = 2.0
    calls_metric: MetricSampleName = "traces_span_metrics_calls_total"
    duration_metric: MetricSampleName = Field(
        default="traces_span_metrics_duration_milliseconds",
        description="The duration histogram (its _bucket samples are read); a name "
        "ending in _seconds is in seconds, any other in milliseconds.",
    )
    edges_metric: MetricSampleName = "traces_service_graph_request_total"
    max_operations: MaxOperations = 1000
    min_requests_for_ratio: MinRequestsForRatio = 5


def _unique_names(
    items: list[ServiceCheck] | list[ScrapeTarget] | list[DirectoryBudget], what: str
) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ValueError(f"duplicate {what} name {item.name!r}")
        seen.add(item.name)


class CollectorConfig(_Strict):
    host: HostName = Field(default_factory=socket.gethostname)
    interval_seconds: Seconds = 5.0
    top_processes: int = Field(default=5, ge=0, le=100)
    startup_grace_seconds: GraceSeconds = Field(
        default=60.0,
        description="Default of each check's `startup_grace_seconds`.",
    )
    services: list[ServiceCheck] = Field(default_factory=list, max_length=MAX_CHECKS)
    scrape: list[ScrapeTarget] = Field(default_factory=list)
    directories: list[DirectoryBudget] = Field(default_factory=list)
    otlp: OtlpReceiver | None = Field(
        default=None, description="Receive spans over OTLP/HTTP; absent: no receiver."
    )
    spanmetrics: SpanmetricsScrape | None = Field(
        default=None, description="Read span figures from an OpenTelemetry Collector."
    )

    @field_validator("spanmetrics")
    @classmethod
    def _one_trace_intake(
        cls, value: SpanmetricsScrape | None, info: ValidationInfo
    ) -> SpanmetricsScrape | None:
        if value is not None and info.data.get("otlp") is not None:
            raise ValueError(
                "otlp and spanmetrics both give this host's span_* samples: configure one"
            )
        return value

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

    @field_validator("directories")
    @classmethod
    def _unique_directories(cls, value: list[DirectoryBudget]) -> list[DirectoryBudget]:
        _unique_names(value, "directory")
        return value

    def startup_grace(self, check: ServiceCheck) -> float:
        """Seconds after start during which ``check`` is not judged until it first succeeds."""
        if check.startup_grace_seconds is not None:
            return check.startup_grace_seconds
        return self.startup_grace_seconds


def load_config(path: Path | None) -> CollectorConfig:
    """Read and validate the config file; None gives the defaults (no checks, no scrapes)."""
    return load_yaml_config(path, CollectorConfig, what="collector")
