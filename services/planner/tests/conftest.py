"""Fixtures of the planner tests: issues and results built to order (by
``tests.factories``), issues of the kinds it has no metric for, executor target
catalogs, and a pickle that must never be loaded."""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from medbay.common.events import (
    IssueOpened,
    Plan,
    Severity,
    derived_event_id,
    issue_fingerprint,
)
from medbay.common.records import TargetCatalog
from medbay.planner.planning import NotPlanned
from tests import factories
from tests.factories import SEEN, IssueFactory, ResultFactory

KIND_ISSUES: dict[str, tuple[str, str, dict[str, str], float | None]] = {
    "runaway_process": (
        "worker",
        "process_cpu_percent",
        {"pid": "4242", "name": "worker", "command": "/usr/bin/worker --jobs 8"},
        90.0,
    ),
    "low_utilisation": ("api", "service_cpu_percent", {"service": "api"}, 5.0),
    "host_silent": ("h1", "seconds_since_metrics", {}, 60.0),
    "error_rate": ("api", "span_service_errors_per_second", {"service": "api"}, 10.0),
    "latency": ("api", "span_service_latency_p95_ms", {"service": "api"}, 2000.0),
    "no_traffic": ("api", "span_service_requests_per_second", {"service": "api"}, 60.0),
}
"""Issue kind -> resource, metric, labels and threshold, for the kinds
``tests.factories.issue`` does not know."""


class KindIssueFactory(Protocol):
    def __call__(self, kind: str, host: str = "h1", n: int = 0, **changes: Any) -> IssueOpened: ...


@pytest.fixture
def issue() -> IssueFactory:
    """``tests.factories.issue``: an issue event like the detector's."""
    return factories.issue


@pytest.fixture
def kind_issue() -> KindIssueFactory:
    """An opened issue of a kind in ``KIND_ISSUES``; ``changes`` override any field."""

    def make(kind: str, host: str = "h1", n: int = 0, **changes: Any) -> IssueOpened:
        resource, metric, labels, threshold = KIND_ISSUES[kind]
        fields: dict[str, Any] = {
            "event_id": derived_event_id("test-issue", kind, host, n),
            "fingerprint": issue_fingerprint(host, kind, metric, labels),
            "host": host,
            "kind": kind,
            "resource": host if kind == "host_silent" else resource,
            "metric": metric,
            "labels": labels,
            "value": (threshold or 1.0) * 1.5,
            "threshold": threshold,
            "severity": Severity.CRITICAL,
            "detector": "threshold",
            "first_seen": SEEN,
            "last_seen": SEEN,
        }
        return IssueOpened(**{**fields, **changes})

    return make


@pytest.fixture
def result() -> ResultFactory:
    """``tests.factories.result``: one step's outcome."""
    return factories.result


Targets = Mapping[str, Sequence[str] | tuple[Sequence[str], Sequence[str]]]
"""Target name -> its permitted actions, or (actions, the names it covers)."""


def make_catalog(targets: Targets, mode: str = "live") -> TargetCatalog:
    """An executor's target catalog, as it writes it at start."""
    entries = {}
    for name, spec in targets.items():
        actions, covers = spec if isinstance(spec, tuple) else (spec, ())
        entries[name] = {"kind": "command", "actions": list(actions), "covers": list(covers)}
    return TargetCatalog.model_validate(
        {"mode": mode, "targets": entries, "written_at": datetime.now(UTC)}
    )


@pytest.fixture
def catalog() -> Callable[..., TargetCatalog]:
    """``make_catalog``."""
    return make_catalog


def _planned(made: Plan | NotPlanned) -> Plan:
    assert isinstance(made, Plan), made
    return made


@pytest.fixture
def planned() -> Callable[[Plan | NotPlanned], Plan]:
    """What ``Planner.plan`` made, as a plan; the test fails if it was not planned."""
    return _planned


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
