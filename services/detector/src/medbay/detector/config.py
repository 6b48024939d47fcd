"""The detector's configuration: threshold rules, anomaly rules, host and service silence.

The defaults are for production and raise nothing on a healthy machine, however
busy: a host's CPU or memory counts only when it stays high for minutes, one lost
check is no outage, and raw host metrics (which move with normal load) are not
scored for anomalies. Every action's trigger has a rule: a service down, a
runaway process, a slow query, Redis or a directory near its limit, a disk
filling up, a service whose traces show errors or slow requests. A YAML file
named by ``MEDBAY_DETECTOR_CONFIG`` (or ``--config``) replaces them; the README's
detector section explains each choice.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medbay.common.events import IssueKind
from medbay.common.settings import ConfigError, load_yaml_config
from medbay.detector.anomaly import DEFAULT_DETECTOR, DETECTORS

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
    absent_clears: bool = Field(
        default=False,
        description="A series missing from its host's scrape counts as back to normal (for "
        "series that come and go, like the top processes); it is forgotten once normal.",
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

    def level(self, level: int) -> float:
        """The threshold of ``level`` (1 warning, 2 critical), which the rule must have."""
        value = self.critical if level == 2 else self.warning
        if value is None:
            raise ValueError(f"the {self.metric} rule has no level {level}")
        return value

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
    detector: str = DEFAULT_DETECTOR
    for_samples: int = Field(
        default=2, ge=1, le=1000, description="Anomalous samples in a row before an issue."
    )
    clear_samples: int = Field(default=3, ge=1, le=1000)
    warmup_samples: int = Field(
        default=30, ge=0, le=100_000, description="No issue before a series has this many."
    )
    labels: dict[str, str] = Field(default_factory=dict)
    min_value: float | None = Field(
        default=None,
        description="An anomalous score counts only when the value is at least this "
        "(latency going from 2 ms to 40 ms under load is no incident).",
    )

    @model_validator(mode="after")
    def _known_detector(self) -> AnomalyRule:
        if self.detector not in DETECTORS:
            raise ValueError(
                f"unknown detector {self.detector!r}; choose one of {', '.join(sorted(DETECTORS))}"
            )
        return self


def _default_thresholds() -> list[ThresholdRule]:
    return [
        # A busy host is not a broken one: only saturation lasting minutes is worth a look.
        ThresholdRule(
            metric="cpu_percent",
            kind="cpu",
            warning=95,
            for_samples=60,
            clear_samples=6,
            hysteresis=10,
        ),
        # Running out of memory hurts sooner than running hot: sustained, but shorter.
        ThresholdRule(
            metric="memory_percent",
            kind="memory",
            warning=90,
            critical=97,
            for_samples=24,
            clear_samples=6,
            hysteresis=3,
        ),
        ThresholdRule(
            metric="disk_percent",
            kind="disk",
            warning=90,
            critical=95,
            for_samples=3,
            clear_samples=3,
            hysteresis=1,
            resource_label="mount",
        ),
        ThresholdRule(
            metric="directory_budget_percent",
            kind="disk",
            warning=90,
            critical=100,
            for_samples=2,
            clear_samples=2,
            hysteresis=2,
            resource_label="directory",
        ),
        ThresholdRule(
            metric="process_cpu_percent",
            kind="runaway_process",
            warning=90,
            for_samples=60,
            clear_samples=2,
            hysteresis=10,
            resource_label="name",
            absent_clears=True,
        ),
        ThresholdRule(
            metric="process_memory_percent",
            kind="runaway_process",
            warning=30,
            critical=60,
            for_samples=3,
            clear_samples=2,
            hysteresis=2,
            resource_label="name",
            absent_clears=True,
        ),
        ThresholdRule(
            metric="postgres_query_latency_ms",
            kind="db_latency",
            warning=1000,
            critical=5000,
            for_samples=3,
            clear_samples=2,
            resource_label="service",
        ),
        ThresholdRule(
            metric="postgres_longest_query_seconds",
            kind="db_latency",
            warning=60,
            critical=300,
            for_samples=2,
            resource_label="service",
        ),
        ThresholdRule(
            metric="redis_ping_latency_ms",
            kind="db_latency",
            warning=1000,
            critical=5000,
            for_samples=3,
            clear_samples=2,
            resource_label="service",
        ),
        ThresholdRule(
            metric="redis_memory_percent",
            kind="memory",
            warning=90,
            critical=98,
            for_samples=2,
            clear_samples=2,
            hysteresis=2,
            resource_label="service",
        ),
        ThresholdRule(
            metric="net_errors",
            kind="network_errors",
            warning=100,
            critical=1000,
            for_samples=2,
            resource_label="interface",
        ),
        ThresholdRule(
            metric="service_up",
            kind="service_down",
            critical=0.5,
            direction="below",
            for_samples=2,
            resource_label="service",
        ),
        # A service's traces: its series come only while it has requests, so a
        # missing one means no errors (or no slow requests) and counts as normal.
        ThresholdRule(
            metric="span_service_errors_per_second",
            kind="error_rate",
            warning=10,
            critical=50,
            for_samples=1,
            clear_samples=2,
            resource_label="service",
            absent_clears=True,
        ),
        # The share of failed requests catches a failing service with little traffic;
        # the collector reports it only above a minimum of requests.
        ThresholdRule(
            metric="span_service_error_ratio",
            kind="error_rate",
            warning=0.2,
            critical=0.5,
            for_samples=2,
            clear_samples=2,
            resource_label="service",
            absent_clears=True,
        ),
        ThresholdRule(
            metric="span_service_latency_p95_ms",
            kind="latency",
            warning=2000,
            critical=5000,
            for_samples=2,
            clear_samples=2,
            resource_label="service",
            absent_clears=True,
        ),
    ]


def _default_anomaly() -> list[AnomalyRule]:
    return [AnomalyRule(metric="service_latency_ms", for_samples=3, min_value=250)]


class SilenceConfig(BaseModel):
    """When a host whose metrics stopped arriving opens a ``host_silent`` issue.

    A host is silent after ``max(intervals x its usual interval, min_seconds)``
    without a batch; its usual interval is learnt from its batches' times.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    intervals: float = Field(
        default=6, ge=2, le=1000, description="Usual intervals without a batch before silence."
    )
    min_seconds: float = Field(default=30, gt=0, le=86_400)
    check_seconds: float = Field(
        default=5, gt=0, le=3600, description="How often hosts are checked for silence."
    )


class TrafficConfig(BaseModel):
    """When a service whose spans stopped opens a ``no_traffic`` issue.

    A service is one series of ``metric`` (told apart by its ``resource_label``),
    which the collector reports only while the service has requests. Once it has
    shown up ``min_appearances`` times, its absence from its host's batches for
    longer than ``max(intervals x its usual gap, min_seconds)`` opens the issue;
    its usual gap is the longest of its last gaps between appearances, so a
    service with a request now and then is judged by its own rhythm. Time while
    the whole host was silent does not count. A series absent for
    ``forget_after_seconds`` is forgotten (an open issue resolves, saying so).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    metric: str = Field(
        default="span_service_requests_per_second",
        min_length=1,
        max_length=200,
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
    )
    resource_label: str = Field(default="service", min_length=1, max_length=100)
    intervals: float = Field(
        default=6, ge=2, le=1000, description="Usual gaps without the series before an issue."
    )
    min_seconds: float = Field(default=60, gt=0, le=86_400)
    min_appearances: int = Field(
        default=3,
        ge=2,
        le=1000,
        description="Appearances of a series before its absence is judged: its rhythm "
        "must be known first.",
    )
    forget_after_seconds: float = Field(default=86_400, gt=0, le=30 * 86_400)
    max_services: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Series watched per host; past it, the one gone longest without an "
        "open issue is forgotten for a new one.",
    )

    @model_validator(mode="after")
    def _forget_after_the_limit(self) -> TrafficConfig:
        if self.forget_after_seconds <= self.min_seconds:
            raise ValueError(
                f"forget_after_seconds ({self.forget_after_seconds:g}) must be longer than "
                f"min_seconds ({self.min_seconds:g}): a series would be forgotten before "
                "its absence could be noticed"
            )
        return self


class PartitionsConfig(BaseModel):
    """How detector replicas share the METRICS partitions.

    Each replica holds a membership lease (``member.<replica_id>``) and a lease per
    partition it consumes (``partition.<p>``) in the bucket ``medbay_detector_state``,
    renewed every third of ``lease_seconds``. A replica that dies is dropped by the
    server ``lease_seconds`` after its last renewal, and the others take its
    partitions over: from the snapshots, replaying what came after them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    replica_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="This replica's name among the detectors; else $MEDBAY_REPLICA_ID, "
        "else $POD_NAME, else the host's name and a random part. A stable name keeps the "
        "same partitions across a restart. Two running replicas must not share one.",
    )
    lease_seconds: float = Field(
        default=6.0,
        ge=2,
        le=60,
        description="A dead replica's partitions are taken over this long (plus about a "
        "second, and the replay) after its last renewal.",
    )


class DetectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    thresholds: list[ThresholdRule] = Field(default_factory=_default_thresholds)
    anomaly: list[AnomalyRule] = Field(default_factory=_default_anomaly)
    silence: SilenceConfig = Field(default_factory=SilenceConfig)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)
    snapshot_interval_seconds: float = Field(default=5.0, gt=0)
    batch_size: int = Field(default=256, ge=1, le=10_000)
    partitions: PartitionsConfig = Field(default_factory=PartitionsConfig)

    @model_validator(mode="after")
    def _no_anomalies_on_passing_series(self) -> DetectorConfig:
        """A series that comes and goes (``absent_clears``) is forgotten when it goes,
        so it has no history to score."""
        passing = {r.metric for r in self.thresholds if r.absent_clears}
        for i, rule in enumerate(self.anomaly):
            if rule.metric in passing:
                raise ValueError(
                    f"anomaly[{i}]: {rule.metric} has a threshold rule with absent_clears, "
                    "whose series are forgotten when they go; it cannot be scored for anomalies"
                )
        return self

    def fingerprint(self) -> str:
        """What detection depends on; replicas differ in their ``partitions`` section
        and still read each other's snapshots."""
        detection = self.model_dump_json(exclude={"partitions"})
        return hashlib.sha1(detection.encode()).hexdigest()[:12]


def load_config(path: Path | None) -> DetectorConfig:
    return load_yaml_config(path, DetectorConfig, what="detector")
