"""Fixtures of the planner tests: issues, results and training rows built to order."""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from medbay.common.events import (
    ActionResult,
    IssueOpened,
    IssueUpdated,
    Severity,
    derived_event_id,
    issue_fingerprint,
)

SEEN = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)  # a Wednesday

METRIC_OF = {
    "memory": ("memory_percent", {}, 85.0),
    "cpu": ("cpu_percent", {}, 80.0),
    "disk": ("disk_percent", {"mount": "/var/log"}, 90.0),
    "service_down": ("service_up", {"service": "web"}, 0.5),
    "db_latency": ("postgres_query_latency_ms", {"service": "postgres"}, 1000.0),
    "network_errors": ("net_errors", {"interface": "eth0"}, 100.0),
    "anomaly": ("load1", {}, None),
    "other": ("custom_metric", {}, None),
}


def build_issue(
    kind: str = "memory",
    host: str = "h1",
    value: float | None = None,
    severity: str = "warning",
    n: int = 0,
    previous: str | None = None,
    seen: datetime = SEEN,
    **extra: Any,
) -> IssueOpened | IssueUpdated:
    """An issue event like the detector's: ``previous`` makes it an IssueUpdated."""
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


def build_result(
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
) -> ActionResult:
    return ActionResult(
        plan_id=plan_id,
        issue_fingerprint="f" * 16,
        issue_kind=kind,  # type: ignore[arg-type]
        step_index=step,
        action=action,  # type: ignore[arg-type]
        target=target,
        host=host,
        status=status,  # type: ignore[arg-type]
        outcome=outcome,  # type: ignore[arg-type]
        verified=verified,
        dry_run=dry_run,
        started_at=SEEN,
        finished_at=SEEN if status == "finished" else None,
    )


@pytest.fixture
def issue() -> Callable[..., IssueOpened | IssueUpdated]:
    return build_issue


@pytest.fixture
def result() -> Callable[..., ActionResult]:
    return build_result


class _Touch:
    """Unpickling it creates ``path``: what a planted pickle could run instead."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., None], tuple[pathlib.Path]]:
        return pathlib.Path.touch, (self.path,)


@pytest.fixture
def pickle_bomb() -> Callable[[pathlib.Path], bytes]:
    """A pickle whose loading would create the file it is given."""
    return lambda path: pickle.dumps(_Touch(path))
