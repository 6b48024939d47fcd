"""The detector's configuration: threshold rules and anomaly rules per metric.

Defaults follow the product report (CPU 80/95 %, memory 85/95 %, disk 90/95 %,
DB latency over 1000 ms, network errors over 100, service down). A YAML file
named by ``MEDBAY_DETECTOR_CONFIG`` (or ``--config``) replaces them.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medbay.common.events import IssueKind
from medbay.common.settings import ConfigError, load_yaml_config
from medbay.detector.anomaly import DETECTORS

__all__ = ["ConfigError", "DetectorConfig", "load_config"]


class ThresholdRule(BaseModel):
    """Open an issue when a metric crosses a threshold for ``for_samples`` samples in a row.

    It resolves (or de-escalates) only after ``clear_samples`` samples back past
    the threshold minus ``hysteresis``, so a value hovering at the line does not flap.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1)
    kind: IssueKind
    warning: float | None = None
    critical: float | None = None
    direction: Literal["above", "below"] = "above"
    for_samples: int = Field(default=1, ge=1, le=1000)
    clear_samples: int = Field(default=1, ge=1, le=1000)
    hysteresis: float = Field(default=0.0, ge=0)
    labels: dict[str, str] = Field(
        default_factory=dict, description="Only series carrying these labels."
    )
    resource_label: str | None = Field(
        default=None, description="The label naming the affected resource (mount, service...)."
    )

    @model_validator(mode="after")
    def _check_levels(self) -> ThresholdRule:
        if self.warning is None and self.critical is None:
            raise ValueError("set warning, critical or both")
        if self.warning is not None and self.critical is not None:
            ordered = (
                self.warning <= self.critical
                if self.direction == "above"
                else self.warning >= self.critical
            )
            if not ordered:
                raise ValueError(
                    f"warning must come before critical for direction {self.direction}"
                )
        return self

    def signed_levels(self) -> tuple[float, float]:
        """(warning, critical) as 'above' thresholds on the signed value."""
        sign = 1.0 if self.direction == "above" else -1.0
        warn = math.inf if self.warning is None else sign * self.warning
        crit = math.inf if self.critical is None else sign * self.critical
        return warn, crit


class AnomalyRule(BaseModel):
    """Score a metric with an anomaly detector; an ``anomaly`` issue opens at its threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1)
    detector: str = "likelihood"
    for_samples: int = Field(
        default=2, ge=1, le=1000, description="Anomalous samples in a row before an issue."
    )
    clear_samples: int = Field(default=3, ge=1, le=1000)
    warmup_samples: int = Field(
        default=30, ge=0, le=100_000, description="No issue before a series has this many."
    )
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_detector(self) -> AnomalyRule:
        if self.detector not in DETECTORS:
            raise ValueError(
                f"unknown detector {self.detector!r}; choose one of {', '.join(sorted(DETECTORS))}"
            )
        return self


def _default_thresholds() -> list[ThresholdRule]:
    return [
        ThresholdRule(
            metric="cpu_percent",
            kind="cpu",
            warning=80,
            critical=95,
            for_samples=3,
            clear_samples=2,
            hysteresis=5,
        ),
        ThresholdRule(
            metric="memory_percent",
            kind="memory",
            warning=85,
            critical=95,
            for_samples=3,
            clear_samples=2,
            hysteresis=2,
        ),
        ThresholdRule(
            metric="disk_percent",
            kind="disk",
            warning=90,
            critical=95,
            hysteresis=1,
            resource_label="mount",
        ),
        ThresholdRule(
            metric="postgres_query_latency_ms",
            kind="db_latency",
            warning=1000,
            critical=5000,
            for_samples=2,
            resource_label="service",
        ),
        ThresholdRule(
            metric="redis_ping_latency_ms",
            kind="db_latency",
            warning=1000,
            critical=5000,
            for_samples=2,
            resource_label="service",
        ),
        ThresholdRule(
            metric="net_errors",
            kind="network_errors",
            warning=100,
            critical=1000,
            resource_label="interface",
        ),
        ThresholdRule(
            metric="service_up",
            kind="service_down",
            critical=0.5,
            direction="below",
            resource_label="service",
        ),
    ]


def _default_anomaly() -> list[AnomalyRule]:
    return [
        AnomalyRule(metric="cpu_percent"),
        AnomalyRule(metric="memory_percent"),
        AnomalyRule(metric="load1"),
        AnomalyRule(metric="service_latency_ms"),
    ]


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    thresholds: list[ThresholdRule] = Field(default_factory=_default_thresholds)
    anomaly: list[AnomalyRule] = Field(default_factory=_default_anomaly)
    snapshot_interval_seconds: float = Field(default=5.0, gt=0)
    batch_size: int = Field(default=256, ge=1, le=10_000)

    def fingerprint(self) -> str:
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:12]


def load_config(path: Path | None) -> DetectorConfig:
    return load_yaml_config(path, DetectorConfig, what="detector")
