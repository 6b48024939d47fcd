"""What the REST API takes and returns: the models behind the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from medbay.common.actions import ACTIONS
from medbay.common.events import (
    ActionName,
    ActionRequested,
    ActionResult,
    AlertRaised,
    Approval,
    BreakerReset,
    HostName,
    IssueKind,
    IssueOpened,
    IssueResolved,
    IssueUpdated,
    Plan,
    PlanFinished,
    PlanOutcome,
    Severity,
)
from medbay.common.streams import STREAMS_BY_NAME
from medbay.gateway.config import Role
from medbay.gateway.replay import prefix_problem, subject_problem


def _as_utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+00:01, a minute before the first day
        raise ValueError("the time is out of range in UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
"""A timestamp; one without a zone is taken as UTC."""


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- errors ------------------------------------------------------------------------


class Problem(_Out):
    detail: str


class FieldProblem(_Out):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(_Out):
    detail: str = Field(description="The first problems, readable.")
    errors: list[FieldProblem]


# --- who ---------------------------------------------------------------------------


class Me(_Out):
    name: str
    role: Role


# --- metrics -----------------------------------------------------------------------


class SeriesValue(_Out):
    name: str
    labels: dict[str, str]
    unit: str | None
    value: float
    history: list[tuple[datetime, float]] | None = Field(
        default=None, description="(collected_at, value), oldest first; when asked for."
    )


class HostMetrics(_Out):
    host: str
    collected_at: datetime
    series: list[SeriesValue]
    dropped_series: int = Field(description="New series ignored: over max_series_per_host.")


class CheckedService(_Out):
    """A service the collector checks on a host (its ``service_up`` series)."""

    host: str
    service: str
    up: bool
    since: datetime = Field(
        description="The first report of the current state the gateway holds (it may be older)."
    )
    checked_at: datetime = Field(description="The latest report.")


# --- issues and incidents ------------------------------------------------------------

IssueState = Literal["open", "resolved"]
IncidentState = Literal["open", "resolved", "unknown"]
PlanStatus = Literal["pending_approval", "rejected", "queued", "running", "finished"]
"""Where a plan stands: ``running`` from its first step until the executor says how it
ended (``PlanFinished``); only then ``finished``. ``rejected``: a person, or the expiry, said no."""
IncidentStatus = Literal[
    "not_planned",
    "pending_approval",
    "queued",
    "running",
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
"""What was done about an incident, from the latest plan for its issue's current opening:
``not_planned`` (the issue was raised and no plan made for it), ``pending_approval``,
``queued`` and ``running`` while its plan is not over, then how the plan ended (a
``PlanOutcome``). Only ``verified`` means it was fixed."""
assert set(get_args(PlanOutcome)) <= set(get_args(IncidentStatus)), "every outcome is a status"


class IssueSummary(_Out):
    fingerprint: str
    host: str
    kind: IssueKind
    resource: str
    metric: str
    labels: dict[str, str]
    severity: Severity
    state: IssueState
    detail: str = Field(description="What was wrong, in words (empty if the detector said none).")
    value: float
    threshold: float | None
    detector: str
    score: float | None
    first_seen: datetime
    last_seen: datetime
    resolved_at: datetime | None
    updated_at: datetime = Field(description="When the latest issue event was created.")


class PlanProgress(_Out):
    plan: Plan | None = Field(description="None while only its approval or results are known.")
    plan_id: str
    status: PlanStatus
    decision: Approval | None
    results: list[ActionResult] = Field(description="Step results, by step, started first.")
    outcome: PlanOutcome | None = Field(
        description="How the plan ended: the executor's PlanFinished, or a rejection (rejected, "
        "expired) before it arrives; None while it is not over."
    )
    finished: PlanFinished | None = Field(description="The executor's word on how it ended.")
    alerts: list[AlertRaised] = Field(description="Messages for people the plan raised.")


class QuickActionInfo(_Out):
    """What a quick action (a plan made from an action asked for by hand) does, for whom."""

    action: ActionName
    target: str
    requested_by: str | None = Field(description="Who asked; None if the plan does not say.")
    channel: str | None = Field(description="Where they asked (gateway, cli, telegram).")
    reason: str = Field(description="Why they asked, if they said.")


class IncidentSummary(_Out):
    fingerprint: str
    host: str
    kind: IssueKind
    severity: Severity | None = Field(description="None while no issue or plan is known.")
    state: IncidentState = Field(description="unknown: no issue event seen (e.g. out of history).")
    resource: str | None = Field(description="None while no issue event is known.")
    detail: str = Field(description="What was wrong, in words, from the latest issue event.")
    opened_at: datetime | None
    resolved_at: datetime | None
    last_activity: datetime
    plan_count: int
    plan_status: PlanStatus | None = Field(
        description="The status of the latest plan for the issue's current opening; None: none."
    )
    outcome: PlanOutcome | None = Field(
        description="How that plan ended; None: no plan, or it is not over."
    )
    status: IncidentStatus = Field(
        description="What was done about it: not_planned, pending_approval, queued, running, "
        "or the plan's outcome. Only verified means fixed."
    )
    pending_approval: bool
    recurrences: int = Field(
        description="How often the issue opened again after it was resolved, in the history held."
    )
    quick_action: QuickActionInfo | None = Field(
        description="For a quick action: what was asked, for which target, by whom."
    )


TimelineEvent = Annotated[
    IssueOpened
    | IssueUpdated
    | IssueResolved
    | Plan
    | Approval
    | ActionResult
    | PlanFinished
    | AlertRaised,
    Field(discriminator="type"),
]


class TimelineEntry(_Out):
    at: datetime
    stream: str
    summary: str
    event: TimelineEvent
    trace_id: str | None = Field(
        default=None, description="The W3C trace the event was published in (for a tracing UI)."
    )


class Episode(_Out):
    """One occurrence of an incident's issue: opened ... resolved, with its plans."""

    number: int = Field(description="1 for the oldest episode held.")
    state: IncidentState = Field(description="unknown: its opening is not in the timeline held.")
    opened_at: datetime | None
    resolved_at: datetime | None
    plans: list[PlanProgress]
    timeline: list[TimelineEntry] = Field(description="Oldest first.")


class IncidentDetail(IncidentSummary):
    issue: IssueSummary | None
    plans: list[PlanProgress]
    timeline: list[TimelineEntry] = Field(description="Every entry held, oldest first.")
    timeline_dropped: int = Field(description="Oldest entries dropped: over max_timeline_events.")
    episodes: list[Episode] = Field(
        description="The timeline's entries by episode, newest episode first."
    )


class PendingApproval(_Out):
    plan: Plan
    fingerprint: str
    waiting_since: datetime
    deadline: datetime | None = Field(
        description="When the approver rejects it undecided; None: unknown (no approver record)."
    )
    issue: IssueSummary | None
    quick_action: QuickActionInfo | None = Field(description="For a quick action: what, by whom.")


# --- monitoring: what services' traces show -------------------------------------------


class RedFigures(_Out):
    """A service's or operation's Rate, Errors and Duration over one collector interval,
    from its spans; None where the batch had no such figure."""

    requests_per_second: float | None
    errors_per_second: float | None
    error_ratio: float | None = Field(
        description="Errors per request; None also when there were too few requests for a "
        "ratio (the collector's min_requests_for_ratio)."
    )
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


class RedPoint(RedFigures):
    at: datetime = Field(description="When the collector took the figures.")


class OperationFigures(RedFigures):
    operation: str
    last_seen: datetime
    current: bool = Field(description="In the host's latest batch of trace figures.")


class ServiceRed(_Out):
    """One service's RED figures on one host: now, over time and per operation."""

    host: str
    service: str
    last_seen: datetime
    current: bool = Field(
        description="In the host's latest batch of trace figures; false: no spans since last_seen."
    )
    latest: RedPoint
    history: list[RedPoint] = Field(description="Oldest first.")
    operations: list[OperationFigures] = Field(description="Busiest first.")


class ServiceEdge(_Out):
    """Calls from one service to another, as the spans show them."""

    host: str
    client: str
    server: str
    requests_per_second: float
    last_seen: datetime
    current: bool = Field(
        description="In the host's latest batch of trace figures; false: fading out, dropped "
        "once not seen for monitoring.stale_seconds."
    )


class TracedHost(_Out):
    host: str
    last_seen: datetime = Field(description="Its latest batch of trace figures.")
    dropped_operations: float | None = Field(
        description="Spans the collector counted under (other): over its operation limit."
    )
    dropped_edges: float | None = Field(description="Edges over the collector's limit.")


class Monitoring(_Out):
    """What services' traces show: RED per service, the dependency edges, and the
    incidents raised from them."""

    services: list[ServiceRed] = Field(description="By host, then service.")
    edges: list[ServiceEdge] = Field(description="By host, client, server.")
    hosts: list[TracedHost]
    incidents: list[IncidentSummary] = Field(
        description="Incidents of the trace kinds (error_rate, latency, no_traffic), most "
        "recently active first."
    )


class TracingLinks(_Out):
    jaeger_url: str | None = Field(
        description="Jaeger's UI, where traces are shown; None: not configured, so no links."
    )


class TraceEvent(_Out):
    """An event of an incident's timeline published in the trace."""

    fingerprint: str
    at: datetime
    stream: str
    summary: str
    event: TimelineEvent


class TraceFindings(_Out):
    """What Medbay holds of one trace: the incidents and events published in it."""

    trace_id: str
    jaeger_url: str | None = Field(
        description="The trace in Jaeger's UI; None: no Jaeger UI configured."
    )
    incidents: list[IncidentSummary] = Field(description="Most recently active first.")
    events: list[TraceEvent] = Field(
        description="Issues, plans, decisions, results, outcomes and alerts in the trace, "
        "oldest first."
    )


# --- mutations ------------------------------------------------------------------------


class DecisionRequest(_In):
    reason: str = Field(default="", max_length=2000)


class DecisionResponse(_Out):
    approval: Approval
    note: str


class QuickAction(_In):
    host: HostName
    action: ActionName
    target: str = Field(min_length=1, max_length=300)
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = Field(default="", max_length=2000)

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        action = info.data.get("action")
        if action is None:  # the action itself is wrong: reported on its own
            return params
        allowed = ACTIONS[action].params
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise ValueError(f"{action} takes no parameter {unknown} (accepted: {accepted})")
        return params


class ActionAccepted(_Out):
    request: ActionRequested
    note: str


class Breaker(_Out):
    target: str
    opened_at: datetime
    reason: str
    actions: list[tuple[str, datetime]] = Field(description="(action, at) that opened it.")


class BreakerResetResponse(_Out):
    reset: BreakerReset


StreamName = Literal[
    "METRICS", "ISSUES", "PLANS", "APPROVALS", "RESULTS", "REQUESTS", "AUDIT", "DEADLETTER"
]
assert set(get_args(StreamName)) == set(STREAMS_BY_NAME), "every stream can be replayed"


class ReplayRequest(_In):
    stream: StreamName
    since: UtcDateTime
    until: UtcDateTime | None = Field(default=None, description="Default: now.")
    subject: str | None = Field(
        default=None,
        max_length=300,
        description="Only subjects matching this NATS pattern (inside the stream's subjects).",
    )
    prefix: str = Field(
        min_length=1,
        max_length=100,
        description="Events are re-published on PREFIX.<subject>, outside every stream.",
    )

    @field_validator("prefix")
    @classmethod
    def _sandbox(cls, prefix: str) -> str:
        problem = prefix_problem(prefix)
        if problem is not None:
            raise ValueError(problem)
        return prefix

    @model_validator(mode="after")
    def _consistent(self) -> ReplayRequest:
        if self.subject is not None:
            problem = subject_problem(self.subject, STREAMS_BY_NAME[self.stream])
            if problem is not None:
                raise ValueError(f"subject: {problem}")
        if self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


class ReplayResponse(_Out):
    stream: str
    since: datetime
    until: datetime
    prefix: str
    count: int
    truncated: bool = Field(description="Stopped at replay.max_messages.")
    requested_by: str


# --- services and the planner ---------------------------------------------------------


class HealthBody(_Out):
    """``/healthz``: what every Medbay service answers there."""

    service: str
    status: Literal["ok", "unhealthy"]
    uptime_seconds: float
    problems: dict[str, str]
    info: dict[str, Any] = Field(
        default_factory=dict, description="Facts the service states, e.g. the executor's mode."
    )


class ServiceHealth(_Out):
    service: str
    url: str
    status: Literal["ok", "unhealthy", "unreachable"]
    http_status: int | None
    latency_ms: float | None
    detail: dict[str, Any] | None = Field(description="The service's /healthz body.")
    info: dict[str, Any] = Field(
        description="The facts its /healthz body states (``info``), e.g. the executor's "
        '``mode``: "dry-run" or "live".'
    )
    error: str | None


class ActionRate(_Out):
    successes: int
    failures: int
    rate: float


class PlannerModel(_Out):
    version: str | None = Field(description="None while the planner plans by rules only.")
    trained_on: Literal["live", "lab"] | None = Field(
        description="What the model learned from: live outcomes, or the lab's injected faults "
        "(`medbay lab`); None without a model, or when its description cannot be read."
    )
    validation_accuracy: float | None
    trained_at: datetime | None
    training_outcomes: int | None
    holdout_outcomes: int | None
    candidates: dict[str, list[str]] = Field(description="Issue kind -> actions it may propose.")
    success_rates: dict[str, ActionRate] = Field(description="Per action.")
    success_rates_by_kind: dict[str, dict[str, ActionRate]] = Field(
        description="Issue kind -> action -> rate."
    )


# --- the lab's report --------------------------------------------------------------------

Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]


class _LabPart(BaseModel):
    """Part of the lab's report file: what is shown is checked; other keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)


class LabCounts(_LabPart):
    injected: Count
    detected: Count
    auto_resolved: Count
    escalated: Count
    silent: Count = Field(description="Injected and never detected.")
    needless_actions: Count
    outside_policy: Count
    mttr_median_s: Seconds | None = Field(description="None: nothing was resolved.")
    mttr_p90_s: Seconds | None
    as_expected: Count | None = Field(
        default=None,
        description="Ended as expected (auto-resolved, or escalated); None in older reports.",
    )
    steps: Count | None = Field(
        default=None,
        description="Fixes tried: live steps started on the faults' targets, the one that "
        "worked included; None in older reports.",
    )


class LabFault(LabCounts):
    expected: Literal["auto_resolved", "escalated"]


class LabTotals(LabCounts):
    fixable: Count | None = Field(
        default=None, description="Faults expected to be auto-resolved; None in older reports."
    )
    fixable_auto_resolved: Count | None = Field(
        default=None, description="Of those, how many were; None in older reports."
    )
    quiet_issues: Count = Field(description="Issues raised in the quiet time, with no fault.")
    quiet_plans: Count
    quiet_actions: Count


class LabCorpus(_LabPart):
    file: str = Field(max_length=1000, description="Where the outcomes were written.")
    outcomes: Count


class LabModel(_LabPart):
    """The model ``medbay lab --train`` trained, or why none was."""

    file: str | None = Field(
        max_length=1000,
        description="The model file written (a planner adopts it with ``initial_model``); "
        "None: no model was trained (``why_none``).",
    )
    version: str | None = Field(default=None, max_length=200, description="None without a file.")
    trained_on: Literal["live", "lab"] | None = None
    validation_accuracy: float | None = Field(default=None, ge=0, le=1)
    trained_outcomes: Count | None = Field(
        default=None, description="The outcomes the model learned from."
    )
    success: Count = Field(description="Outcomes of the training run that were successes.")
    failure: Count
    why_none: str | None = Field(
        default=None, max_length=1000, description="Why no model was trained (no file only)."
    )
    corpus: LabCorpus


class LabTraining(_LabPart):
    """The training run of ``medbay lab --train``: the faults the model learned from."""

    seed: int
    rounds: Count
    planner: str = Field(max_length=200)
    totals: LabTotals


class LabRun(_LabPart):
    """One lab run: faults injected into a sandbox and what Medbay did."""

    schema_: Literal["medbay.lab/1"] = Field(alias="schema")
    started_at: AwareDatetime
    finished_at: AwareDatetime
    commit: str = Field(max_length=100, description="The git commit run; empty if unknown.")
    seed: int
    rounds: Count
    quiet_seconds: Seconds
    planner: str = Field(max_length=200, description="rules-v1, or the model version.")
    lab_trained: bool
    totals: LabTotals
    faults: dict[Annotated[str, Field(max_length=100)], LabFault] = Field(max_length=1000)


class LabReport(LabRun):
    """What ``medbay lab`` measured: faults injected into a sandbox and what Medbay did.
    With ``--train``, the trained model's run on held-out faults, with the model, its
    training, and the rule table's run on the same faults."""

    model: LabModel | None = Field(default=None, description="--train only.")
    training: LabTraining | None = Field(default=None, description="--train only.")
    rule_table: LabRun | None = Field(
        default=None,
        description="--train only: the same held-out faults planned by the rule table; "
        "None when no model was trained.",
    )


class LabReportState(_Out):
    """The lab's latest report, or why there is none to show."""

    state: Literal["ok", "missing", "invalid", "unconfigured"] = Field(
        description="missing: no lab run yet; invalid: the file is unreadable or not a report; "
        "unconfigured: the gateway's lab_report option is not set."
    )
    problem: str | None = Field(description="What is wrong with the file (invalid only).")
    report: LabReport | None


class EventMessage(_Out):
    """An event as the WebSocket sends it (``/ws``), and as ``/api/events`` lists it."""

    kind: Literal["event"]
    stream: str
    seq: int = Field(description="The event's sequence number in its stream.")
    type: str
    host: str | None
    event: dict[str, Any] = Field(description="The event, as stored.")


class ServiceInfo(_Out):
    service: str
    docs: str
    openapi: str
    websocket: str
