"""Event contracts: every message on the Medbay bus is one of these models.

Each event is JSON, carries a unique ``event_id`` (sent as ``Nats-Msg-Id`` so a
republished event is deduplicated by JetStream), a ``schema_version`` and a UTC
``timestamp``. A consumer that receives an event with an unknown ``schema_version``
rejects it to the dead-letter stream rather than guessing.

Changing a model in a way that breaks old consumers means bumping its
``schema_version``; adding an optional field does not.

Every float in every event is finite (NaN and Infinity are refused), and no time
in an event may lie more than ``max_clock_skew()`` seconds in the future: such
an event would sort after everything real and never age out.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal, NotRequired

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

SCHEMA_VERSION: Literal[1] = 1
"""The only schema version this release reads and writes."""

HostName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
MetricName = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
]
Labels = Annotated[dict[str, str], Field(max_length=32)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]

_EVENT_NAMESPACE = uuid.UUID("6f1c2a52-3f0e-4c59-9b8e-6c0d1f3a9e11")

DEFAULT_MAX_CLOCK_SKEW = 300.0
_max_clock_skew = DEFAULT_MAX_CLOCK_SKEW


def max_clock_skew() -> float:
    """Seconds an event's times may lie ahead of this machine's clock."""
    return _max_clock_skew


def set_max_clock_skew(seconds: float) -> None:
    """Set by each service from its settings (``MEDBAY_MAX_CLOCK_SKEW_SECONDS``)."""
    global _max_clock_skew
    if not seconds > 0:
        raise ValueError("the clock skew must be positive")
    _max_clock_skew = seconds


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex


def derived_event_id(*parts: object) -> str:
    """A deterministic event id: the same inputs always give the same id.

    Used where re-deriving an event (after a crash and replay) must produce the
    very same ``Nats-Msg-Id`` so that JetStream drops the repeat.
    """
    return uuid.uuid5(_EVENT_NAMESPACE, "|".join(map(str, parts))).hex


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    event_id: str = Field(
        default_factory=new_event_id,
        min_length=1,
        max_length=64,
        description="Unique id, sent as the Nats-Msg-Id header for deduplication.",
    )
    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, description="Version of this event's schema."
    )
    timestamp: AwareDatetime = Field(
        default_factory=utc_now, description="When the event was created (UTC)."
    )

    @field_validator("timestamp")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _not_in_the_future(self) -> Event:
        latest = utc_now().timestamp() + _max_clock_skew
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, datetime) and value.timestamp() > latest:
                raise ValueError(
                    f"{name} {value.isoformat()} is more than {_max_clock_skew:g} s in the future"
                )
        return self


# --- metrics -------------------------------------------------------------------


@with_config(ConfigDict(extra="forbid"))
class MetricSample(TypedDict):
    """One value of one series; a series is (host, name, labels).

    A typed dict rather than a model: a batch holds hundreds of samples and the
    detector validates tens of thousands a second, so they stay plain dicts
    (validated all the same). ``unit`` and ``labels`` may be left out.
    """

    name: MetricName
    value: Annotated[float, Field(allow_inf_nan=False)]
    unit: NotRequired[Annotated[str, Field(max_length=32)]]
    labels: NotRequired[Labels]


CheckName = Annotated[str, Field(min_length=1, max_length=100)]


class MetricBatch(Event):
    """Everything one host's collector saw in one scrape: one message per host per scrape."""

    type: Literal["metric.batch"] = "metric.batch"
    host: HostName
    collected_at: AwareDatetime
    samples: list[MetricSample] = Field(max_length=20_000)
    check_errors: Annotated[
        dict[CheckName, Annotated[str, Field(max_length=500)]], Field(max_length=1000)
    ] = Field(
        default_factory=dict,
        description="Why each failing service check failed, by service name (the "
        "`service` label of its `service_up` sample): 'connection refused', 'no answer "
        "within 2 s', 'HTTP 503'. Issues about the service carry it as their `detail`.",
    )


# --- issues --------------------------------------------------------------------


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


IssueKind = Literal[
    "cpu",
    "memory",
    "disk",
    "db_latency",
    "network_errors",
    "service_down",
    "anomaly",
    "other",
    "runaway_process",
    "low_utilisation",
    "host_silent",
    "error_rate",
    "latency",
    "no_traffic",
]
"""What kind of problem an issue is. ``runaway_process``: one process over its CPU or
memory limit for a while (labels ``pid``, ``name``, ``command``); ``low_utilisation``:
a scaled service with little to do (off by default); ``host_silent``: a host whose
metrics stopped arriving. From a service's traces (resource: the service):
``error_rate``: its spans are erroring, many per second or a large share of its
requests; ``latency``: its requests are slow (95th percentile); ``no_traffic``: it
reported spans and then stopped, while its host kept reporting."""


def issue_fingerprint(host: str, kind: str, metric: str, labels: dict[str, str]) -> str:
    """Stable identity of a problem: the same condition on the same series."""
    label_text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha1(f"{host}|{kind}|{metric}|{label_text}".encode()).hexdigest()[:16]


SignalName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Signals = Annotated[
    dict[SignalName, Annotated[float, Field(allow_inf_nan=False)]], Field(max_length=16)
]


class IssueEvent(Event):
    """Fields shared by the three issue lifecycle events."""

    fingerprint: str = Field(min_length=1, max_length=64)
    host: HostName
    kind: IssueKind
    resource: str = Field(
        max_length=300, description="What is affected: a mount, a service, a metric."
    )
    metric: MetricName
    labels: Labels = Field(default_factory=dict)
    value: float = Field(description="The value that caused this event.")
    threshold: float | None = Field(default=None, description="The crossed threshold, if any.")
    severity: Severity
    detector: str = Field(
        max_length=64, description="Which detector raised it: threshold, sigma3, ..."
    )
    score: Fraction | None = Field(default=None, description="Anomaly score in [0, 1].")
    detail: str = Field(
        default="",
        max_length=1000,
        description="What was wrong, in words: a failed check's reason ('connection "
        "refused'), a runaway process's command, how long a host has been silent.",
    )
    signals: Signals = Field(
        default_factory=dict,
        description="The affected service's trace figures in the batch that raised or "
        "updated the issue (requests_per_second, errors_per_second, error_ratio, "
        "latency_p95_ms: those the batch had); empty when there were none.",
    )
    first_seen: AwareDatetime
    last_seen: AwareDatetime


class IssueOpened(IssueEvent):
    type: Literal["issue.opened"] = "issue.opened"


class IssueUpdated(IssueEvent):
    """The issue's severity changed (escalated or de-escalated)."""

    type: Literal["issue.updated"] = "issue.updated"
    previous_severity: Severity


class IssueResolved(IssueEvent):
    type: Literal["issue.resolved"] = "issue.resolved"


# --- remediation (planner, approver, executor) --------------------------------


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


ActionName = Literal[
    "restart_service",
    "clear_cache",
    "scale_up",
    "cleanup_disk",
    "rotate_logs",
    "kill_process",
    "optimize_query",
    "scale_down",
    "reboot",
    "alert_human",
]


ParamValue = StrictStr | StrictBool | StrictInt | float
"""A step parameter: a plain value (the catalog says which names an action takes)."""
Params = Annotated[dict[Annotated[str, Field(max_length=64)], ParamValue], Field(max_length=16)]


class PlanStep(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    action: ActionName
    target: str = Field(min_length=1, max_length=300)
    params: Params = Field(default_factory=dict)
    risk: Risk
    estimated_seconds: float = Field(ge=0)


class Plan(Event):
    """What the planner decided to do about an issue.

    Steps run in order and escalate: a later step runs only when the fix of the
    earlier one could not be verified. The issue's metric, labels, value and
    threshold travel with the plan so the executor can verify the fix.
    """

    type: Literal["plan.created"] = "plan.created"
    plan_id: str = Field(min_length=1, max_length=64)
    issue_fingerprint: str = Field(min_length=1, max_length=64)
    issue_event_id: str = Field(min_length=1, max_length=64)
    host: HostName
    issue_kind: IssueKind
    metric: MetricName
    labels: Labels = Field(default_factory=dict)
    value: float = Field(description="The issue's value when the plan was made.")
    threshold: float | None = Field(
        default=None, description="The issue's threshold; None for anomalies."
    )
    severity: Severity
    steps: list[PlanStep] = Field(min_length=1, max_length=10)
    confidence: Fraction
    risk: Risk = Field(description="The highest risk of any step.")
    estimated_seconds: float = Field(ge=0)
    requires_approval: bool
    reason: str = Field(default="", max_length=2000, description="Why these steps.")
    model_version: str = Field(max_length=64)
    features: dict[str, float] = Field(
        default_factory=dict, description="The inputs the decision was made from."
    )


class Approval(Event):
    """A human's (or the expiry timer's) decision on a plan."""

    type: Literal["plan.approval"] = "plan.approval"
    plan_id: str = Field(min_length=1, max_length=64)
    decision: Literal["approve", "reject"]
    decided_by: str = Field(min_length=1, max_length=200)
    channel: Literal["telegram", "gateway", "cli", "expiry"]
    reason: str = Field(default="", max_length=2000)


class ActionResult(Event):
    """What happened when the executor ran one step of a plan."""

    type: Literal["action.result"] = "action.result"
    plan_id: str = Field(min_length=1, max_length=64)
    issue_fingerprint: str = Field(min_length=1, max_length=64)
    issue_kind: IssueKind
    step_index: int = Field(ge=0)
    action: ActionName
    target: str = Field(min_length=1, max_length=300)
    host: HostName
    status: Literal["started", "finished"]
    outcome: Literal["success", "failure", "refused", "dry_run"] | None = None
    output: str = Field(default="", max_length=20_000)
    verified: bool | None = Field(default=None, description="Whether the fix was verified.")
    dry_run: bool
    started_at: AwareDatetime
    finished_at: AwareDatetime | None = None


# --- people's actions ------------------------------------------------------------


PlanOutcome = Literal[
    "verified",
    "not_fixed",
    "failed",
    "refused",
    "dry_run",
    "alerted",
    "interrupted",
    "rejected",
    "expired",
]
"""How a plan ended, in honest words:

- ``verified``: a step ran and its fix was seen to work;
- ``not_fixed``: steps ran but no fix could be verified;
- ``failed``: a step could not be done (an error, a timeout) and nothing was fixed;
- ``refused``: the executor refused a step (allowlist, cooldown, breaker, rate limit,
  maintenance, unknown target) and nothing was fixed;
- ``dry_run``: nothing was done; every step was reported with what it would do;
- ``alerted``: the plan only told a person, and the message went out;
- ``interrupted``: the executor stopped during a step, which is never run twice;
- ``rejected`` / ``expired``: a person rejected the plan, or nobody decided in time.
"""


class PlanFinished(Event):
    """A plan is over: how it ended, and whether a person was told (``escalated``)."""

    type: Literal["plan.finished"] = "plan.finished"
    plan_id: str = Field(min_length=1, max_length=64)
    issue_fingerprint: str = Field(min_length=1, max_length=64)
    issue_kind: IssueKind
    host: HostName
    outcome: PlanOutcome
    detail: str = Field(default="", max_length=2000, description="Why, in words.")
    steps_run: int = Field(ge=0, description="Steps that were started (not refused).")
    escalated: bool = Field(
        description="Whether a person was told, by the plan's own alert or by an "
        "escalation, and the message went out."
    )
    dry_run: bool


class AlertRaised(Event):
    """A message for people, from an ``alert_human`` step or an escalation, to be
    delivered by the approver's Telegram bot (notifier targets ``via: telegram``)."""

    type: Literal["alert.raised"] = "alert.raised"
    alert_id: str = Field(min_length=1, max_length=64)
    plan_id: str = Field(min_length=1, max_length=64)
    issue_fingerprint: str = Field(min_length=1, max_length=64)
    issue_kind: IssueKind
    host: HostName
    target: str = Field(min_length=1, max_length=300, description="The notifier target.")
    message: str = Field(min_length=1, max_length=4000)


class ActionRequested(Event):
    """A person asked for an action by hand (a quick action). The planner turns it
    into a Plan under the same approval rules as any other."""

    type: Literal["action.requested"] = "action.requested"
    host: HostName
    action: ActionName
    target: str = Field(min_length=1, max_length=300)
    params: Params = Field(default_factory=dict)
    requested_by: str = Field(min_length=1, max_length=200)
    channel: Literal["gateway", "cli", "telegram"]
    reason: str = Field(default="", max_length=2000)


class BreakerReset(Event):
    """A person closed the executor's flap breaker for a target."""

    type: Literal["breaker.reset"] = "breaker.reset"
    target: str = Field(min_length=1, max_length=300)
    reset_by: str = Field(min_length=1, max_length=200)
    channel: Literal["gateway", "cli", "telegram"]


IssueChange = IssueOpened | IssueUpdated | IssueResolved
"""Any of the three issue lifecycle events."""

ALL_EVENTS: tuple[type[Event], ...] = (
    MetricBatch,
    IssueOpened,
    IssueUpdated,
    IssueResolved,
    Plan,
    Approval,
    ActionResult,
    ActionRequested,
    BreakerReset,
    PlanFinished,
    AlertRaised,
)
