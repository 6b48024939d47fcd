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

import functools
import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    NonNegativeInt,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    field_serializer,
    field_validator,
    model_validator,
    with_config,
)
from pydantic_core import CoreSchema, core_schema
from typing_extensions import TypedDict

SCHEMA_VERSION: Literal[1] = 1
"""The schema version of every event but ``MetricBatch``."""
METRIC_BATCH_VERSION: Literal[2] = 2
"""The schema version of the ``MetricBatch`` this release writes (it reads 1 as well)."""

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
        latest = time.time() + _max_clock_skew
        for name in _time_fields(type(self)):
            value = getattr(self, name)
            if isinstance(value, datetime) and value.timestamp() > latest:
                raise ValueError(
                    f"{name} {value.isoformat()} is more than {_max_clock_skew:g} s in the future"
                )
        return self


@functools.cache
def _time_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that may hold a time: those checked against the clock."""
    return tuple(
        name for name, field in model.model_fields.items() if _holds_time(field.annotation)
    )


def _holds_time(annotation: Any) -> bool:
    return annotation in (datetime, AwareDatetime) or any(map(_holds_time, get_args(annotation)))


# --- metrics -------------------------------------------------------------------


MAX_SAMPLES = 20_000
"""The most samples one ``MetricBatch`` holds."""
Unit = Annotated[str, Field(max_length=32)]


@with_config(ConfigDict(extra="forbid"))
class MetricSample(TypedDict):
    """One value of one series; a series is (host, name, labels).

    What reading a ``MetricBatch``'s ``samples`` yields, and the form of a sample in
    a version 1 batch. ``unit`` and ``labels`` may be left out.
    """

    name: MetricName
    value: Annotated[float, Field(allow_inf_nan=False)]
    unit: NotRequired[Unit]
    labels: NotRequired[Labels]


_SampleList = Annotated[list[MetricSample], Field(max_length=MAX_SAMPLES)]
"""The samples of a version 1 batch."""


class SampleColumns(BaseModel):
    """The samples of a batch as columns, one entry per sample in each of ``names``,
    ``values``, ``units`` ("" for none) and ``label_index``; sample ``i``'s labels are
    ``label_sets[label_index[i]]``, a table in which a writer puts each distinct label
    set once (``of``): most samples share a few.

    Each column is validated as a whole, in pydantic's core, rather than sample by
    sample: the detector reads tens of thousands of samples a second. A sample obeys
    the limits of ``MetricSample``.

    Read it as a sequence of ``MetricSample`` dicts: ``len(columns)``, ``columns[i]``,
    ``for sample in columns`` (each dict is made when read; ``unit`` and ``labels``
    only when not empty). Code that needs speed reads the columns themselves.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    names: list[MetricName] = Field(max_length=MAX_SAMPLES)
    values: list[float] = Field(max_length=MAX_SAMPLES, description="Finite.")
    units: list[Unit] = Field(max_length=MAX_SAMPLES, description='"" where none.')
    label_index: list[NonNegativeInt] = Field(
        max_length=MAX_SAMPLES, description="Each sample's labels: a position in label_sets."
    )
    label_sets: list[Labels] = Field(
        max_length=MAX_SAMPLES,
        description="The label sets the samples point at; a writer lists each distinct one once.",
    )

    @model_validator(mode="after")
    def _aligned(self) -> SampleColumns:
        count = len(self.names)
        if not count == len(self.values) == len(self.units) == len(self.label_index):
            raise ValueError(
                f"the columns differ in length: names {count}, values {len(self.values)}, "
                f"units {len(self.units)}, label_index {len(self.label_index)}"
            )
        if count and (highest := max(self.label_index)) >= len(self.label_sets):
            where = self.label_index.index(highest)
            raise ValueError(
                f"label_index[{where}] is {highest}, but label_sets has "
                f"{len(self.label_sets)} entries"
            )
        return self

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> MetricSample:
        labels = self.label_sets[self.label_index[index]]
        return _sample(self.names[index], self.values[index], self.units[index], labels)

    def __iter__(self) -> Iterator[MetricSample]:  # type: ignore[override]
        sets = self.label_sets
        for name, value, unit, index in zip(
            self.names, self.values, self.units, self.label_index, strict=True
        ):
            yield _sample(name, value, unit, sets[index])

    @classmethod
    def of(cls, samples: list[MetricSample]) -> SampleColumns:
        """Samples as columns, each distinct label set once (the smallest message), validated
        as a ``MetricBatch`` validates a list of them."""
        valid = _SAMPLE_LIST.validate_python(samples)
        positions: dict[tuple[tuple[str, str], ...], int] = {}
        label_sets: list[dict[str, str]] = []
        label_index: list[int] = []
        for sample in valid:
            labels = sample.get("labels") or {}
            key = tuple(sorted(labels.items()))
            if (position := positions.get(key)) is None:
                position = positions[key] = len(label_sets)
                label_sets.append(labels)
            label_index.append(position)
        return _columns(valid, label_index, label_sets)


def _sample(name: str, value: float, unit: str, labels: dict[str, str]) -> MetricSample:
    sample: MetricSample = {"name": name, "value": value}
    if unit:
        sample["unit"] = unit
    if labels:
        sample["labels"] = dict(labels)
    return sample


def _columns(
    samples: list[MetricSample], label_index: list[int], label_sets: list[dict[str, str]]
) -> SampleColumns:
    """Validated samples as columns, with their labels laid out by the caller."""
    return SampleColumns.model_construct(
        names=[s["name"] for s in samples],
        values=[s["value"] for s in samples],
        units=[s.get("unit", "") for s in samples],
        label_index=label_index,
        label_sets=label_sets,
    )


def _columns_as_listed(samples: list[MetricSample]) -> SampleColumns:
    """Validated samples as columns, a label set per sample: reading a version 1 batch
    costs no more than before."""
    label_sets = [s.get("labels") or {} for s in samples]
    return _columns(samples, list(range(len(samples))), label_sets)


class _ColumnsOrList:
    """How ``MetricBatch.samples`` is read: as columns, or as a list of samples (version 1,
    and a convenience when building a batch in Python) turned into columns as it comes
    (``SampleColumns.of`` makes the compact table a writer wants).

    A union tried in order, columns first, so that columns never go through Python."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        as_list = core_schema.no_info_after_validator_function(
            _columns_as_listed, handler.generate_schema(_SampleList)
        )
        return core_schema.union_schema(
            [(handler(source), "columns"), (as_list, "list")], mode="left_to_right"
        )


_SAMPLE_LIST: TypeAdapter[list[MetricSample]] = TypeAdapter(_SampleList)

CheckName = Annotated[str, Field(min_length=1, max_length=100)]


class MetricBatch(Event):
    """Everything one host's collector saw in one scrape: one message per host per scrape.

    ``samples`` is always ``SampleColumns`` in Python: iterate it for ``MetricSample``
    dicts (``for sample in batch.samples``, ``len``, ``batch.samples[i]``), or read its
    columns where speed matters (the detector does). Build it with
    ``SampleColumns.of(samples)``, which puts each distinct label set in the table
    once; a plain list of samples is taken too, as it comes.

    On the bus, version 2 (what this release writes) carries the samples as columns,
    version 1 as a list of samples. Both are read, so batches from a collector of the
    previous release are understood during an upgrade: which form a message has is
    told by its JSON (an object or a list), and ``schema_version`` says which one a
    batch is written in.
    """

    schema_version: Literal[1, 2] = Field(  # type: ignore[assignment]
        default=METRIC_BATCH_VERSION,
        description="Version of this event's schema: 2 writes samples as columns, 1 as a "
        "list of samples.",
    )
    type: Literal["metric.batch"] = "metric.batch"
    host: HostName
    collected_at: AwareDatetime
    samples: Annotated[SampleColumns, _ColumnsOrList] = Field(
        description="The samples: columns in version 2, a list of samples in version 1."
    )
    check_errors: Annotated[
        dict[CheckName, Annotated[str, Field(max_length=500)]], Field(max_length=1000)
    ] = Field(
        default_factory=dict,
        description="Why each failing service check failed, by service name (the "
        "`service` label of its `service_up` sample): 'connection refused', 'no answer "
        "within 2 s', 'HTTP 503'. Issues about the service carry it as their `detail`.",
    )

    @field_serializer("samples")
    def _written(self, samples: SampleColumns) -> SampleColumns | list[MetricSample]:
        return samples if self.schema_version == METRIC_BATCH_VERSION else list(samples)


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


ActionOutcome = Literal["success", "failure", "refused", "dry_run", "interrupted"]
"""How a step ended: ``interrupted`` when the executor running it stopped (crashed, or
lost its lease on the plan) and another took the plan over. Its real outcome is not
known then; if the first executor was alive after all, its own result for the same
step follows and is the truth: readers let it replace the ``interrupted`` one."""


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
    outcome: ActionOutcome | None = None
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
