"""Subjects and JetStream streams: the one place they are defined.

Each stream has exactly one owner, the service that declares it (creates it or
updates it to this configuration) at start-up. Every other service binds to it
without declaring (``declare=False``) and waits for it to exist, so no service
can silently re-declare a stream with other settings.

| stream | subjects | owner | kept |
|---|---|---|---|
| METRICS | medbay.metrics.<host> | collector | 24 h, 2 GiB: rebuilds detector state, debugging |
| ISSUES | medbay.issues.<opened,updated,resolved>.<host> | detector | 90 d: incidents |
| PLANS | medbay.plans.<host> | planner | 90 d: decisions and their inputs |
| APPROVALS | medbay.approvals.<channel>.<plan_id> | executor | 90 d: audit trail |
| RESULTS | medbay.{results,outcomes,alerts}.<host> | executor | 90 d: steps, plan ends, alerts |
| REQUESTS | medbay.requests.<channel>.<host> | planner | 90 d: actions people asked for by hand |
| AUDIT | medbay.audit.breaker.<channel>.<target> | executor | 365 d: other changes people made |
| DEADLETTER | medbay.deadletter.<service>.<stream> | detector | 30 d, 1 GiB: rejects, reasons |

Who may publish on which of these subjects, and read them, is in
``medbay.common.access``. Where several services publish on one stream, the
subject names the channel or service (``approvals.<channel>``,
``deadletter.<service>``) so the NATS server's permissions can tell them apart,
and every consumer checks that a message's subject is the one its body implies
(``subject_mismatch``): a Telegram approval can only come from the approver.

All are limits-based (consumers never delete what others may need), file-backed
(they survive a server restart) and deduplicate on ``Nats-Msg-Id``.
DEADLETTER is owned by the detector, the first consumer in the pipeline.
APPROVALS is owned by the executor, the one service that acts on approvals:
several publish them (the approver, the gateway, the CLI), and approvals only
matter once an executor is there to act. Likewise REQUESTS belongs to the
planner, which turns them into plans, and AUDIT to the executor, whose breakers
people reset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from faststream.nats import JStream
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from medbay.common.events import (
    ActionRequested,
    ActionResult,
    AlertRaised,
    Approval,
    BreakerReset,
    Event,
    IssueOpened,
    IssueResolved,
    IssueUpdated,
    MetricBatch,
    Plan,
    PlanFinished,
)

PREFIX = "medbay"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

HOUR = 3600.0
DAY = 24 * HOUR
MiB = 1024 * 1024
GiB = 1024 * MiB

MAX_MESSAGE_BYTES = 1 * MiB
"""Largest message any stream stores (the NATS server's default max_payload)."""


def token(value: str) -> str:
    """Make ``value`` safe as one subject token (no dots, wildcards or spaces)."""
    return _UNSAFE.sub("_", value) or "_"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    owner: str
    max_age: float
    max_bytes: int
    duplicate_window: float
    description: str

    def declaration(self) -> StreamConfig:
        """The full declaration: used by the owner only."""
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            max_msg_size=MAX_MESSAGE_BYTES,
            discard=DiscardPolicy.OLD,
            num_replicas=1,
            duplicate_window=self.duplicate_window,
        )

    def binding(self) -> JStream:
        """A reference that never declares: used by every other service."""
        return JStream(self.name, declare=False)


METRICS = StreamSpec(
    "METRICS",
    (f"{PREFIX}.metrics.>",),
    "collector",
    DAY,
    2 * GiB,
    120.0,
    "One MetricBatch per host per scrape.",
)
ISSUES = StreamSpec(
    "ISSUES",
    (f"{PREFIX}.issues.>",),
    "detector",
    90 * DAY,
    1 * GiB,
    600.0,
    "Issue lifecycle: opened, updated, resolved.",
)
PLANS = StreamSpec(
    "PLANS",
    (f"{PREFIX}.plans.>",),
    "planner",
    90 * DAY,
    1 * GiB,
    600.0,
    "Remediation plans.",
)
APPROVALS = StreamSpec(
    "APPROVALS",
    (f"{PREFIX}.approvals.>",),
    "executor",
    90 * DAY,
    256 * MiB,
    600.0,
    "Human decisions on plans.",
)
RESULTS = StreamSpec(
    "RESULTS",
    (f"{PREFIX}.results.>", f"{PREFIX}.outcomes.>", f"{PREFIX}.alerts.>"),
    "executor",
    90 * DAY,
    1 * GiB,
    600.0,
    "Results of executed plan steps, how each plan ended, and alerts for people.",
)
REQUESTS = StreamSpec(
    "REQUESTS",
    (f"{PREFIX}.requests.>",),
    "planner",
    90 * DAY,
    256 * MiB,
    600.0,
    "Actions people asked for by hand (quick actions).",
)
AUDIT = StreamSpec(
    "AUDIT",
    (f"{PREFIX}.audit.>",),
    "executor",
    365 * DAY,
    256 * MiB,
    600.0,
    "Changes people made besides approvals and requests: breaker resets.",
)
DEADLETTER = StreamSpec(
    "DEADLETTER",
    (f"{PREFIX}.deadletter.>",),
    "detector",
    30 * DAY,
    1 * GiB,
    600.0,
    "Rejected messages: original payload and headers, with the reason in headers.",
)

ALL_STREAMS: tuple[StreamSpec, ...] = (
    METRICS,
    ISSUES,
    PLANS,
    APPROVALS,
    RESULTS,
    REQUESTS,
    AUDIT,
    DEADLETTER,
)
STREAMS_BY_NAME = {s.name: s for s in ALL_STREAMS}


def owned_by(service: str) -> tuple[StreamSpec, ...]:
    return tuple(s for s in ALL_STREAMS if s.owner == service)


def stream_for_subject(subject: str) -> StreamSpec | None:
    for spec in ALL_STREAMS:
        if any(subject.startswith(s.removesuffix(">")) for s in spec.subjects):
            return spec
    return None


# --- subjects ------------------------------------------------------------------


def metrics_subject(host: str) -> str:
    return f"{PREFIX}.metrics.{token(host)}"


def issue_subject(event: IssueOpened | IssueUpdated | IssueResolved) -> str:
    transition = event.type.removeprefix("issue.")
    return f"{PREFIX}.issues.{transition}.{token(event.host)}"


def plan_subject(plan: Plan) -> str:
    return f"{PREFIX}.plans.{token(plan.host)}"


def approval_subject(approval: Approval) -> str:
    return f"{PREFIX}.approvals.{approval.channel}.{token(approval.plan_id)}"


def result_subject(result: ActionResult) -> str:
    return f"{PREFIX}.results.{token(result.host)}"


def outcome_subject(event: PlanFinished) -> str:
    return f"{PREFIX}.outcomes.{token(event.host)}"


def alert_subject(event: AlertRaised) -> str:
    return f"{PREFIX}.alerts.{token(event.host)}"


def request_subject(request: ActionRequested) -> str:
    return f"{PREFIX}.requests.{request.channel}.{token(request.host)}"


def audit_subject(event: BreakerReset) -> str:
    return f"{PREFIX}.audit.breaker.{event.channel}.{token(event.target)}"


def deadletter_subject(service: str, source_stream: str) -> str:
    return f"{PREFIX}.deadletter.{token(service)}.{token(source_stream)}"


def subject_for(event: Event) -> str:
    """The subject an event is published on."""
    if isinstance(event, MetricBatch):
        return metrics_subject(event.host)
    if isinstance(event, IssueOpened | IssueUpdated | IssueResolved):
        return issue_subject(event)
    if isinstance(event, Plan):
        return plan_subject(event)
    if isinstance(event, Approval):
        return approval_subject(event)
    if isinstance(event, ActionResult):
        return result_subject(event)
    if isinstance(event, PlanFinished):
        return outcome_subject(event)
    if isinstance(event, AlertRaised):
        return alert_subject(event)
    if isinstance(event, ActionRequested):
        return request_subject(event)
    if isinstance(event, BreakerReset):
        return audit_subject(event)
    raise TypeError(f"no subject for {type(event).__name__}")


def subject_mismatch(event: Event, subject: str) -> str | None:
    """Why ``event`` may not have come on ``subject`` (None: it may).

    The subject is what the server's permissions vouch for (who may publish
    there); the body must agree with it: its host, its channel, its plan.
    """
    expected = subject_for(event)
    if subject == expected:
        return None
    return f"subject {subject} does not match the event (expected {expected})"


SANDBOX = "sandbox"
"""Replays re-publish under ``sandbox.<...>``: outside every stream, and the only
subjects besides their own that the gateway and the CLI may publish on for it."""


def sandbox_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be a replay prefix (None: it can)."""
    tokens = prefix.split(".")
    if not all(_SANDBOX_TOKEN.fullmatch(t) for t in tokens):
        return "use dot-separated tokens of letters, digits, '_' and '-'"
    if tokens[0] != SANDBOX:
        return f"the prefix must be {SANDBOX!r} or start with '{SANDBOX}.'"
    return None


_SANDBOX_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


# Which events travel on which stream, with their subject pattern: used for the
# AsyncAPI document and for decoding events when tailing or replaying.
CHANNELS: tuple[tuple[str, StreamSpec, type[Event]], ...] = (
    (f"{PREFIX}.metrics.{{host}}", METRICS, MetricBatch),
    (f"{PREFIX}.issues.opened.{{host}}", ISSUES, IssueOpened),
    (f"{PREFIX}.issues.updated.{{host}}", ISSUES, IssueUpdated),
    (f"{PREFIX}.issues.resolved.{{host}}", ISSUES, IssueResolved),
    (f"{PREFIX}.plans.{{host}}", PLANS, Plan),
    (f"{PREFIX}.approvals.{{channel}}.{{plan_id}}", APPROVALS, Approval),
    (f"{PREFIX}.results.{{host}}", RESULTS, ActionResult),
    (f"{PREFIX}.outcomes.{{host}}", RESULTS, PlanFinished),
    (f"{PREFIX}.alerts.{{host}}", RESULTS, AlertRaised),
    (f"{PREFIX}.requests.{{channel}}.{{host}}", REQUESTS, ActionRequested),
    (f"{PREFIX}.audit.breaker.{{channel}}.{{target}}", AUDIT, BreakerReset),
)
