"""Events built to order, for every test package (``from tests.factories import ...``).

Each factory fills in a valid event and takes any field as a keyword to change it:
``plan(host="db-1", requires_approval=True)``. Ids are fresh unless given, so two
calls make two different events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from medbay.common.events import (
    ActionName,
    ActionResult,
    Approval,
    IssueOpened,
    IssueUpdated,
    Plan,
    PlanStep,
    Risk,
    Severity,
    derived_event_id,
    issue_fingerprint,
    new_event_id,
)

SEEN = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)  # a Wednesday
"""When issues built here were seen, unless told otherwise."""

METRIC_OF: dict[str, tuple[str, dict[str, str], float | None]] = {
    "memory": ("memory_percent", {}, 85.0),
    "cpu": ("cpu_percent", {}, 80.0),
    "disk": ("disk_percent", {"mount": "/var/log"}, 90.0),
    "service_down": ("service_up", {"service": "web"}, 0.5),
    "db_latency": ("postgres_query_latency_ms", {"service": "postgres"}, 1000.0),
    "network_errors": ("net_errors", {"interface": "eth0"}, 100.0),
    "error_rate": ("span_service_errors_per_second", {"service": "shop"}, 10.0),
    "anomaly": ("load1", {}, None),
    "other": ("custom_metric", {}, None),
}
"""Issue kind -> the metric, labels and threshold an issue of that kind has."""


def step(
    action: ActionName = "restart_service",
    target: str = "web",
    risk: Risk | str = Risk.LOW,
    seconds: int = 30,
) -> PlanStep:
    return PlanStep(action=action, target=target, risk=Risk(risk), estimated_seconds=seconds)


def plan(*steps: PlanStep, **changes: Any) -> Plan:
    """A plan for a service that is down on web-1: ``steps`` (default one low-risk
    restart of ``web``), needing no approval; ``changes`` override any field."""
    steps = steps or (step(),)
    fields: dict[str, Any] = {
        "plan_id": new_event_id(),
        "issue_fingerprint": "f" * 16,
        "issue_event_id": new_event_id(),
        "host": "web-1",
        "issue_kind": "service_down",
        "metric": "service_up",
        "labels": {"service": "web"},
        "value": 0.0,
        "threshold": 0.5,
        "severity": Severity.CRITICAL,
        "steps": list(steps),
        "confidence": 0.9,
        "risk": max((s.risk for s in steps), key=list(Risk).index),
        "estimated_seconds": sum(s.estimated_seconds for s in steps),
        "requires_approval": False,
        "model_version": "test",
    }
    return Plan(**{**fields, **changes})


def issue(
    kind: str = "memory",
    host: str = "h1",
    value: float | None = None,
    severity: str = "warning",
    n: int = 0,
    previous: str | None = None,
    seen: datetime = SEEN,
    **extra: Any,
) -> IssueOpened | IssueUpdated:
    """An issue event like the detector's: ``previous`` (a severity) makes it an
    IssueUpdated; ``n`` tells apart otherwise equal events."""
    metric, labels, threshold = METRIC_OF[kind]
    resource = next(iter(labels.values()), metric)
    fields: dict[str, Any] = {
        "event_id": derived_event_id("test-issue", kind, host, n, previous),
        "fingerprint": issue_fingerprint(host, kind, metric, labels),
        "host": host,
        "kind": kind,
        "resource": resource,
        "metric": metric,
        "labels": labels,
        "value": value if value is not None else (threshold or 1.0) * 1.05,
        "threshold": threshold,
        "severity": Severity(severity),
        "detector": "threshold" if threshold is not None else "likelihood",
        "first_seen": seen,
        "last_seen": seen,
        **extra,
    }
    if previous is not None:
        return IssueUpdated(previous_severity=Severity(previous), **fields)
    return IssueOpened(**fields)


def result(
    plan_id: str,
    step: int,
    action: str,
    target: str,
    *,
    kind: str = "memory",
    host: str = "h1",
    outcome: str | None = "success",
    verified: bool | None = True,
    status: str = "finished",
    dry_run: bool = False,
    **changes: Any,
) -> ActionResult:
    """Step ``step`` of plan ``plan_id``, started (``status="started"``) or finished."""
    fields: dict[str, Any] = {
        "plan_id": plan_id,
        "issue_fingerprint": "f" * 16,
        "issue_kind": kind,
        "step_index": step,
        "action": action,
        "target": target,
        "host": host,
        "status": status,
        "outcome": outcome,
        "verified": verified,
        "dry_run": dry_run,
        "started_at": SEEN,
        "finished_at": SEEN if status == "finished" else None,
    }
    return ActionResult(**{**fields, **changes})


def approval(plan_id: str, decision: str = "approve", **changes: Any) -> Approval:
    """A person's decision on a plan, by default through the CLI."""
    fields: dict[str, Any] = {
        "plan_id": plan_id,
        "decision": decision,
        "decided_by": "alice",
        "channel": "cli",
    }
    return Approval(**{**fields, **changes})


class IssueFactory(Protocol):
    """The type of ``issue``, for a fixture that hands it out."""

    def __call__(
        self,
        kind: str = "memory",
        host: str = "h1",
        value: float | None = None,
        severity: str = "warning",
        n: int = 0,
        previous: str | None = None,
        seen: datetime = SEEN,
        **extra: Any,
    ) -> IssueOpened | IssueUpdated: ...


class ResultFactory(Protocol):
    """The type of ``result``, for a fixture that hands it out."""

    def __call__(
        self,
        plan_id: str,
        step: int,
        action: str,
        target: str,
        *,
        kind: str = "memory",
        host: str = "h1",
        outcome: str | None = "success",
        verified: bool | None = True,
        status: str = "finished",
        dry_run: bool = False,
        **changes: Any,
    ) -> ActionResult: ...
