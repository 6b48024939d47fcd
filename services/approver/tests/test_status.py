"""``/status`` from a real nats-server: recent issue events and results, the executor's
plan book and breakers; and every source missing before its owner has run."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from medbay.approver import status
from medbay.common.bus import declare_streams, event_headers, make_broker
from medbay.common.events import (
    ActionResult,
    AlertRaised,
    Event,
    IssueOpened,
    IssueResolved,
    Plan,
    PlanFinished,
    PlanStep,
    Risk,
    Severity,
    new_event_id,
)
from medbay.common.streams import ISSUES, RESULTS, subject_for
from medbay.executor.plan_book import PlanBook
from medbay.executor.rails import SafetyRails
from medbay.executor.safety_config import SafetyConfig

if TYPE_CHECKING:
    from conftest import NatsServer

NOW = datetime.now(UTC)


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def publish(nc: Client, event: Event) -> None:
    await nc.jetstream().publish(
        subject_for(event), event.model_dump_json().encode(), headers=event_headers(event)
    )


def issue(kind: type, fingerprint: str, host: str) -> Any:
    return kind(
        fingerprint=fingerprint,
        host=host,
        kind="disk",
        resource="/",
        metric="disk_used_percent",
        value=96.0,
        threshold=95.0,
        severity=Severity.CRITICAL,
        detector="threshold",
        first_seen=NOW,
        last_seen=NOW,
    )


def result(step_index: int, status_: str) -> ActionResult:
    return ActionResult(
        plan_id="p1",
        issue_fingerprint="a",
        issue_kind="disk",
        step_index=step_index,
        action="cleanup_disk",
        target="tmp",
        host="db-1",
        status=status_,
        outcome=None if status_ == "started" else "success",
        verified=None if status_ == "started" else True,
        dry_run=False,
        started_at=NOW,
        finished_at=None if status_ == "started" else NOW,
    )


def finished(plan_id: str) -> PlanFinished:
    return PlanFinished(
        plan_id=plan_id,
        issue_fingerprint="a",
        issue_kind="disk",
        host="db-1",
        outcome="verified",
        steps_run=1,
        escalated=False,
        dry_run=False,
    )


def alert(plan_id: str) -> AlertRaised:
    return AlertRaised(
        alert_id=new_event_id(),
        plan_id=plan_id,
        issue_fingerprint="a",
        issue_kind="disk",
        host="db-1",
        target="oncall",
        message="disk cleaned up",
    )


async def test_nothing_is_known_before_the_other_services_ran(nc: Client):
    snapshot = await status.snapshot(nc.jetstream(), waiting=0)
    assert snapshot.open_issues is None and snapshot.last_results is None
    assert snapshot.running_plans is None and snapshot.breakers is None


async def test_status_reads_what_the_detector_and_executor_keep(
    nats_server: NatsServer, nc: Client
):
    broker = make_broker("test", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [ISSUES, RESULTS])
    await broker.stop()
    js = nc.jetstream()
    for event in (
        issue(IssueOpened, "a", "db-1"),
        issue(IssueOpened, "b", "web-1"),
        issue(IssueResolved, "b", "web-1"),
        result(0, "started"),
        result(0, "finished"),
        finished("p1"),  # plan ends and alerts share RESULTS with the step results
        alert("p1"),
    ):
        await publish(nc, event)
    plan = Plan(
        plan_id=new_event_id(),
        issue_fingerprint="a",
        issue_event_id=new_event_id(),
        host="db-1",
        issue_kind="disk",
        metric="disk_used_percent",
        value=96.0,
        threshold=95.0,
        severity=Severity.CRITICAL,
        steps=[PlanStep(action="cleanup_disk", target="tmp", risk=Risk.LOW, estimated_seconds=5)],
        confidence=0.9,
        risk=Risk.LOW,
        estimated_seconds=5,
        requires_approval=False,
        model_version="test",
    )
    await (await PlanBook.open(js)).on_plan(plan, {}, [])  # running: it needs no approval
    await SafetyRails.open(js, SafetyConfig())

    snapshot = await status.snapshot(js, waiting=1)
    assert snapshot.open_issues is not None
    assert [i.fingerprint for i in snapshot.open_issues] == ["a"]
    assert snapshot.last_results is not None
    assert [(r.status, r.outcome) for r in snapshot.last_results] == [("finished", "success")]
    assert snapshot.running_plans is not None
    assert [p.plan_id for p in snapshot.running_plans] == [plan.plan_id]
    assert snapshot.breakers == {}
    assert snapshot.waiting == 1
