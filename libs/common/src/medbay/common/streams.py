"""Subjects and JetStream streams: the one place they are defined.

Each stream has exactly one owner, the service that declares it (creates it or
updates it to this configuration) at start-up. Every other service binds to it
without declaring (``declare=False``) and waits for it to exist, so no service
can silently re-declare a stream with other settings.

| stream | subjects | owner | kept |
|---|---|---|---|
| METRICS | medbay.metrics.<host> (stored: <partition>.<host>) | collector | 24 h, 2 GiB |
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

How many copies the servers keep is the deployment's choice, not the stream's:
each owner declares its streams and buckets with ``MEDBAY_NATS_REPLICAS`` (1 on one
server, 3 on a cluster) and changes existing ones to it.

METRICS is partitioned by the server itself: a subject transform in its
declaration stores what a collector publishes on ``medbay.metrics.<host>`` as
``medbay.metrics.<partition>.<host>``, the partition being a hash of the host
modulo ``METRICS_PARTITIONS`` (NATS's ``partition()`` transform). Each detector
replica consumes the partitions it holds, one durable each; the detector reads
the partition count from the stream's configuration, so collectors and detectors
cannot disagree on it. Readers that filter by a publish subject use
``stored_pattern``, and show or re-publish a message under ``published_subject``.

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

import functools
import re
from dataclasses import dataclass

from faststream.nats import JStream
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)

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

METRICS_PARTITIONS = 16
"""Partitions of METRICS: the most detector replicas that share the work. Part of the
stream's declaration (its owner, the collector, writes it into the stream's subject
transform); detectors read it back from the stream. Changing it is a release of its
own: see the detector's README (partitions)."""


@functools.lru_cache(maxsize=100_000)  # host names, over and over: every batch is checked
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
    partitions: int = 0
    """More than 0: what is published on ``<base>.<key>`` is stored as
    ``<base>.<partition>.<key>`` (``<base>.>`` being its first subject)."""

    def declaration(self, replicas: int = 1) -> StreamConfig:
        """The full declaration: used by the owner only, with the copies the deployment
        keeps (``MEDBAY_NATS_REPLICAS``)."""
        transform = None
        if self.partitions:
            base = self.subjects[0].removesuffix(".>")
            transform = SubjectTransform(
                src=f"{base}.*",
                dest=f"{base}.{{{{partition({self.partitions},1)}}}}.{{{{wildcard(1)}}}}",
            )
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
            num_replicas=replicas,
            duplicate_window=self.duplicate_window,
            subject_transform=transform,
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
    partitions=METRICS_PARTITIONS,
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
    """Where a host's batches are published (and stored, under ``metrics_partition``)."""
    return f"{PREFIX}.metrics.{token(host)}"


_PARTITION = re.compile(r"\{\{\s*partition\(\s*(\d+)\s*,")


def stream_partitions(config: StreamConfig) -> int | None:
    """The partition count a stream's configuration stores its messages under (None:
    it is not partitioned): what the detector takes from METRICS's ``stream_info``."""
    transform = config.subject_transform
    found = _PARTITION.search(transform.dest) if transform is not None else None
    return int(found.group(1)) if found else None


def metrics_partition_subjects(partition: int) -> str:
    """The stored subjects of one METRICS partition (a consumer's filter)."""
    return f"{PREFIX}.metrics.{partition}.*"


def metrics_partition(host: str, partitions: int) -> int:
    """The partition ``host``'s batches are stored under: FNV-1a (32 bits) of its subject
    token modulo ``partitions``, which is what NATS's ``partition()`` transform computes.

    The server does the mapping; this copy serves what the server cannot: placing
    snapshots and batches stored before METRICS was partitioned."""
    digest = 0x811C9DC5
    for byte in token(host).encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % partitions


def published_subject(subject: str) -> str:
    """The subject a stored message was published on: a METRICS message stored as
    ``medbay.metrics.<partition>.<host>`` was published on ``medbay.metrics.<host>``."""
    tokens = subject.split(".")
    if len(tokens) == 4 and tokens[:2] == [PREFIX, "metrics"] and tokens[2].isdigit():
        return f"{PREFIX}.metrics.{tokens[3]}"
    return subject


def stored_pattern(pattern: str) -> str:
    """The filter that finds what was published on ``pattern`` (a subject, maybe with
    wildcards) as stored: ``medbay.metrics.web-1`` -> ``medbay.metrics.*.web-1``."""
    tokens = pattern.split(".")
    if len(tokens) == 3 and tokens[:2] == [PREFIX, "metrics"] and tokens[2] != ">":
        return f"{PREFIX}.metrics.*.{tokens[2]}"
    return pattern


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
    there); the body must agree with it: its host, its channel, its plan. A metric
    batch stored under its partition matches the subject it was published on.
    """
    expected = subject_for(event)
    if subject == expected or (
        isinstance(event, MetricBatch) and published_subject(subject) == expected
    ):
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
