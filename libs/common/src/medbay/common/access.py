"""Who may do what on the bus: the one ownership table, and the NATS permissions made from it.

Every stream (``medbay.common.streams``), KV bucket and Object Store bucket
(``BUCKETS``) has one owner: the service that declares it and, for a bucket, the
only one that writes it. ``PUBLISHERS`` names who may publish on each stream's
subjects, ``READERS`` who may read each stream, ``DURABLES`` which identity
consumes each durable consumer. ``permissions(identity)`` turns this into the
publish and subscribe allow/deny lists that the NATS server enforces for that
identity's user (``medbay auth init`` writes them into the server's config).

Three rules make those lists hold, and the code follows them:

* Nobody subscribes to a stream's subjects. Every read goes through a JetStream
  consumer that delivers to the reader's own inbox (``_INBOX_<identity>``). A push
  consumer delivers only where somebody listens, so no identity can have the
  server re-deliver stored messages onto a stream it may not publish to.
* Consumers on event streams are created by name
  (``$JS.API.CONSUMER.CREATE.<stream>.<name>...``, as nats-py does): the unnamed
  form could address another service's durable by a name in its body. Each
  durable is reserved to its identity; everyone else is denied it.
* Only a bucket's owner publishes on ``$KV.<bucket>.>`` / ``$O.<bucket>.>``:
  readers get and watch, never write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from medbay.common.streams import (
    ALL_STREAMS,
    APPROVALS,
    AUDIT,
    DEADLETTER,
    ISSUES,
    METRICS,
    PLANS,
    PREFIX,
    REQUESTS,
    RESULTS,
    SANDBOX,
    StreamSpec,
    metrics_partition_subjects,
)

SERVICES = ("collector", "detector", "planner", "approver", "executor", "gateway")
CLI = "cli"
"""The operator's identity: the ``medbay`` command (approve, reject, breaker reset, replay)."""
IDENTITIES = (*SERVICES, CLI)
Identity = Literal["collector", "detector", "planner", "approver", "executor", "gateway", "cli"]


def inbox_prefix(identity: str) -> str:
    """Where this identity's replies and consumer deliveries arrive; only it may listen."""
    return f"_INBOX_{identity}"


# --- buckets -----------------------------------------------------------------------


@dataclass(frozen=True)
class BucketSpec:
    name: str
    kind: Literal["kv", "object"]
    owner: str
    readers: tuple[str, ...]
    description: str

    @property
    def stream(self) -> str:
        """The JetStream stream behind the bucket."""
        return f"KV_{self.name}" if self.kind == "kv" else f"OBJ_{self.name}"

    @property
    def write_subjects(self) -> str:
        return f"$KV.{self.name}.>" if self.kind == "kv" else f"$O.{self.name}.>"


DETECTOR_STATE = BucketSpec(
    "medbay_detector_state",
    "kv",
    "detector",
    (),
    "Detector replicas' leases (members, partitions), snapshots and watermarks per partition.",
)
PLANNER_STATE = BucketSpec(
    "medbay_planner",
    "kv",
    "planner",
    ("gateway", CLI),
    "The planner's current model version and success rates.",
)
MODELS = BucketSpec(
    "medbay_models", "object", "planner", ("gateway", CLI), "Planner model versions."
)
PLAN_BOOK = BucketSpec(
    "medbay_plans",
    "kv",
    "executor",
    ("approver", "gateway", CLI),
    "Where each plan stands: pending, approved, running, done.",
)
EXECUTOR_RAILS = BucketSpec(
    "medbay_executor",
    "kv",
    "executor",
    ("planner", "approver", "gateway", CLI),
    "Step claims, cooldowns, flap breakers, rate limit, and the catalog of its targets.",
)
APPROVER_BOOK = BucketSpec(
    "medbay_approver",
    "kv",
    "approver",
    ("gateway",),
    "The approver's record of each plan it asked about, with its deadline.",
)
BUCKETS: tuple[BucketSpec, ...] = (
    DETECTOR_STATE,
    PLANNER_STATE,
    MODELS,
    PLAN_BOOK,
    EXECUTOR_RAILS,
    APPROVER_BOOK,
)


# --- streams: publishers, readers, durables ---------------------------------------------

_CONSUMING = ("detector", "planner", "approver", "executor")
"""Services with durable consumers: each may dead-letter what it cannot take."""

PUBLISHERS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    METRICS.name: {"collector": (f"{PREFIX}.metrics.*",)},
    ISSUES.name: {"detector": (f"{PREFIX}.issues.*.*",)},
    PLANS.name: {"planner": (f"{PREFIX}.plans.*",)},
    APPROVALS.name: {
        "approver": (f"{PREFIX}.approvals.telegram.*", f"{PREFIX}.approvals.expiry.*"),
        "gateway": (f"{PREFIX}.approvals.gateway.*",),
        CLI: (f"{PREFIX}.approvals.cli.*",),
    },
    RESULTS.name: {
        "executor": (f"{PREFIX}.results.*", f"{PREFIX}.outcomes.*", f"{PREFIX}.alerts.*")
    },
    REQUESTS.name: {
        "gateway": (f"{PREFIX}.requests.gateway.*",),
        CLI: (f"{PREFIX}.requests.cli.*",),
    },
    AUDIT.name: {
        "gateway": (f"{PREFIX}.audit.breaker.gateway.*",),
        CLI: (f"{PREFIX}.audit.breaker.cli.*",),
    },
    DEADLETTER.name: {s: (f"{PREFIX}.deadletter.{s}.*",) for s in _CONSUMING},
}
"""Stream -> identity -> the subjects (patterns) it may publish on."""

READERS: Mapping[str, tuple[str, ...]] = {
    METRICS.name: ("detector", "executor", "gateway", CLI),
    ISSUES.name: ("planner", "executor", "approver", "gateway", CLI),
    PLANS.name: ("planner", "executor", "approver", "gateway", CLI),
    APPROVALS.name: ("executor", "approver", "gateway", CLI),
    RESULTS.name: ("planner", "approver", "gateway", CLI),
    REQUESTS.name: ("planner", "gateway", CLI),
    AUDIT.name: ("executor", "gateway", CLI),
    DEADLETTER.name: ("gateway", CLI),
}
"""Stream -> the identities that may read it (through consumers of their own)."""


@dataclass(frozen=True)
class Durable:
    """A durable consumer, and the one identity that consumes it."""

    stream: StreamSpec
    name: str
    identity: str
    subject: str | None = None
    """The subjects it takes (a pattern); None: the stream's first, its main events."""

    @property
    def filter_subject(self) -> str:
        return self.subject or self.stream.subjects[0]


def detector_partition(partition: int) -> Durable:
    """The durable of one METRICS partition: whichever detector replica holds the
    partition's lease consumes it."""
    return Durable(
        METRICS, f"detector-{partition}", "detector", metrics_partition_subjects(partition)
    )


DETECTOR_PARTITIONS = tuple(detector_partition(p) for p in range(METRICS.partitions))
DETECTOR_SINGLE = Durable(METRICS, "detector", "detector")
"""The one durable of the unpartitioned detector of earlier releases: still reserved to
the detector, which removes it (a durable nobody reads only shows a growing backlog)."""
PLANNER_ISSUES = Durable(ISSUES, "planner", "planner")
PLANNER_REQUESTS = Durable(REQUESTS, "planner-requests", "planner")
PLANNER_RESULTS = Durable(RESULTS, "planner-results", "planner")
APPROVER_PLANS = Durable(PLANS, "approver", "approver")
APPROVER_APPROVALS = Durable(APPROVALS, "approver-approvals", "approver")
APPROVER_ALERTS = Durable(RESULTS, "approver-alerts", "approver", f"{PREFIX}.alerts.>")
EXECUTOR_PLANS = Durable(PLANS, "executor", "executor")
EXECUTOR_APPROVALS = Durable(APPROVALS, "executor-approvals", "executor")
EXECUTOR_AUDIT = Durable(AUDIT, "executor-audit", "executor")
DURABLES: tuple[Durable, ...] = (
    *DETECTOR_PARTITIONS,
    DETECTOR_SINGLE,
    PLANNER_ISSUES,
    PLANNER_REQUESTS,
    PLANNER_RESULTS,
    APPROVER_PLANS,
    APPROVER_APPROVALS,
    APPROVER_ALERTS,
    EXECUTOR_PLANS,
    EXECUTOR_APPROVALS,
    EXECUTOR_AUDIT,
)

SANDBOX_PUBLISHERS = ("gateway", CLI)
"""Who may replay recorded events under ``sandbox.>``."""


# --- permissions ----------------------------------------------------------------------------

API = "$JS.API"


@dataclass(frozen=True)
class Permissions:
    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...]
    subscribe_allow: tuple[str, ...]

    def as_config(self) -> dict[str, dict[str, list[str]]]:
        """The ``permissions`` map of a user in the NATS server's config."""
        publish: dict[str, list[str]] = {"allow": list(self.publish_allow)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        return {"publish": publish, "subscribe": {"allow": list(self.subscribe_allow)}}


def _durable_api(stream: str, name: str) -> list[str]:
    """Every subject that works a durable consumer: create, bind, fetch, ack, delete."""
    return [
        f"{API}.CONSUMER.CREATE.{stream}.{name}",
        f"{API}.CONSUMER.CREATE.{stream}.{name}.>",
        f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"{API}.CONSUMER.DELETE.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
    ]


def _read_api(stream: str) -> list[str]:
    """Reading a stream: messages by sequence, and named consumers of one's own."""
    return [
        f"{API}.STREAM.MSG.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"{API}.CONSUMER.CREATE.{stream}.*",
        f"{API}.CONSUMER.CREATE.{stream}.*.>",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"{API}.CONSUMER.DELETE.{stream}.*",
    ]


def _bucket_api(bucket: BucketSpec, *, owner: bool) -> list[str]:
    """A bucket: get, list and watch (ordered consumers); the owner also creates and writes."""
    stream = bucket.stream
    subjects = [
        *_read_api(stream),
        f"{API}.CONSUMER.CREATE.{stream}",  # watchers: no durables live on a bucket
        f"$JS.FC.{stream}.>",  # flow control of those watchers
    ]
    if owner:
        subjects += [
            f"{API}.STREAM.CREATE.{stream}",
            f"{API}.STREAM.UPDATE.{stream}",
            f"{API}.STREAM.PURGE.{stream}",
            bucket.write_subjects,
        ]
    return subjects


def permissions(identity: str) -> Permissions:
    """What the NATS server lets ``identity`` publish and subscribe to."""
    if identity not in IDENTITIES:
        raise ValueError(f"unknown identity {identity!r}; known: {', '.join(IDENTITIES)}")
    allow: list[str] = [
        f"{API}.INFO",
        f"{API}.STREAM.NAMES",  # nats-py's object store looks its stream up by subject
        f"{API}.STREAM.INFO.*",
        f"{API}.CONSUMER.INFO.*.*",
    ]
    for spec in ALL_STREAMS:
        if spec.owner == identity:
            allow += [f"{API}.STREAM.CREATE.{spec.name}", f"{API}.STREAM.UPDATE.{spec.name}"]
        allow += PUBLISHERS.get(spec.name, {}).get(identity, ())
        if identity in READERS.get(spec.name, ()):
            allow += _read_api(spec.name)
    deny: list[str] = []
    for durable in DURABLES:
        if durable.identity == identity:
            allow += _durable_api(durable.stream.name, durable.name)
        elif identity in READERS.get(durable.stream.name, ()):
            deny += _durable_api(durable.stream.name, durable.name)
    for bucket in BUCKETS:
        if bucket.owner == identity or identity in bucket.readers:
            allow += _bucket_api(bucket, owner=bucket.owner == identity)
    if identity in SANDBOX_PUBLISHERS:
        allow.append(f"{SANDBOX}.>")
    if identity == CLI:  # `medbay status` lists streams and consumers
        allow += [f"{API}.STREAM.LIST", f"{API}.CONSUMER.LIST.*"]
    return Permissions(
        tuple(dict.fromkeys(allow)),
        tuple(dict.fromkeys(deny)),
        (f"{inbox_prefix(identity)}.>",),
    )


def publish_table() -> list[tuple[str, str, str]]:
    """(stream, subject pattern, identity) for every publish grant, for the docs."""
    return [
        (stream, subject, identity)
        for stream, grants in PUBLISHERS.items()
        for identity, subjects in grants.items()
        for subject in subjects
    ]
