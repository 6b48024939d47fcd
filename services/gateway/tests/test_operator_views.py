"""What an operator needs at a glance: the executor's mode, the services the
collector checks, an incident's episodes, quick actions by what they do, the
approver's real deadlines, and the events before a page was opened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
import pytest

from medbay.approver.book import ApprovalBook, ApprovalRecord
from medbay.common import runtime
from medbay.common.events import (
    ActionRequested,
    Event,
    MetricBatch,
    Plan,
    PlanStep,
    Risk,
    Severity,
)
from medbay.common.records import approval_key
from medbay.common.runtime import ServiceRuntime
from medbay.gateway.config import HealthConfig, MetricsConfig
from medbay.gateway.health import HealthBoard
from medbay.gateway.hub import RecentEvents
from medbay.gateway.incidents import IncidentBook, IncidentFilter, quick_action_of
from medbay.gateway.metrics_view import MetricsBoard

EventT = TypeVar("EventT", bound=Event)


def book() -> IncidentBook:
    return IncidentBook(max_incidents=100, max_timeline_events=100, max_results=100)


# --- the executor's mode ------------------------------------------------------------------


def test_a_service_states_facts_in_its_health_body(monkeypatch):
    monkeypatch.setattr(runtime, "setup_logging", lambda *args: None)
    monkeypatch.setattr(runtime, "setup_tracing", lambda *args: None)
    rt = ServiceRuntime("executor")
    assert rt.health()[1]["info"] == {}
    rt.info["mode"] = "dry-run"
    assert rt.health()[1]["info"] == {"mode": "dry-run"}


async def test_services_pass_the_facts_of_each_health_body_through():
    bodies = {
        "executor": {"service": "executor", "status": "ok", "info": {"mode": "dry-run"}},
        "planner": {"service": "planner", "status": "ok"},  # an older service: no info
    }

    def answer(request: httpx.Request) -> httpx.Response:
        name = next((n for n in bodies if f"/{n}/" in request.url.path), None)
        return httpx.Response(200, json=bodies[name]) if name else httpx.Response(503, text="x")

    urls = {n: f"http://medbay/{n}/healthz" for n in runtime_names()}
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        board = HealthBoard(
            HealthConfig(urls=urls),
            own_url="http://gateway/healthz",
            own_health=lambda: (True, {"service": "gateway", "info": {"x": 1}}),
            client=client,
        )
        found = {s.service: s for s in await board.services()}
    assert found["executor"].info == {"mode": "dry-run"}
    assert found["planner"].info == {} and found["detector"].info == {}
    assert found["gateway"].info == {"x": 1}


def runtime_names() -> list[str]:
    from medbay.common.settings import DEFAULT_HTTP_PORTS

    return [n for n in DEFAULT_HTTP_PORTS if n != "gateway"]


# --- the services the collector checks ------------------------------------------------------


def test_checked_services_are_up_or_down_since_their_last_change():
    board = MetricsBoard(MetricsConfig())
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def report(second: int, nginx: float, db: float) -> None:
        samples = [
            {"name": "service_up", "value": nginx, "labels": {"service": "nginx"}},
            {"name": "service_up", "value": db, "labels": {"service": "postgres"}},
            {"name": "cpu_percent", "value": 3.0},
        ]
        at = start + timedelta(seconds=second)
        board.apply(MetricBatch(host="web-1", collected_at=at, samples=samples))

    report(0, 1.0, 1.0)
    report(10, 0.0, 1.0)
    report(20, 0.0, 1.0)
    nginx, postgres = board.checked_services()
    assert (nginx.host, nginx.service, nginx.up) == ("web-1", "nginx", False)
    assert nginx.since == start + timedelta(seconds=10)
    assert nginx.checked_at == start + timedelta(seconds=20)
    assert (postgres.service, postgres.up, postgres.since) == ("postgres", True, start)


# --- episodes ----------------------------------------------------------------------------------


def test_a_recurring_issue_is_one_incident_in_episodes(events):
    incidents = book()
    issue = events.issue()
    fixes = []
    start = datetime.now(UTC) - timedelta(hours=1)
    for i in range(3):

        def at(minute: int, event: EventT, i: int = i) -> EventT:
            when = start + timedelta(minutes=10 * i + minute)
            return event.model_copy(update={"event_id": f"{event.event_id}{i}", "timestamp": when})

        plan = events.plan(issue, approval=False)
        fixes.append(plan)
        incidents.apply(at(0, issue), "ISSUES")
        incidents.apply(at(1, plan), "PLANS")
        incidents.apply(at(2, events.resolved(issue)), "ISSUES")
        incidents.apply(at(3, events.result(plan)), "RESULTS")  # after the issue resolved
    (summary,) = incidents.incidents(IncidentFilter(), 10)
    assert summary.recurrences == 2
    detail = incidents.incident(issue.fingerprint)
    assert detail is not None and [e.number for e in detail.episodes] == [3, 2, 1]
    latest = detail.episodes[0]
    assert latest.state == "resolved" and latest.resolved_at is not None
    assert [p.plan_id for p in latest.plans] == [fixes[2].plan_id]
    assert [e.event.type for e in latest.timeline] == [
        "issue.opened",
        "plan.created",
        "issue.resolved",
        "action.result",  # with its plan, not in the next episode
    ]
    assert sum(len(e.timeline) for e in detail.episodes) == len(detail.timeline)


def test_an_incident_seen_once_has_one_episode_and_no_recurrence(events):
    incidents = book()
    issue = events.issue()
    incidents.apply(issue, "ISSUES")
    detail = incidents.incident(issue.fingerprint)
    assert detail is not None and detail.recurrences == 0
    assert [(e.number, e.state) for e in detail.episodes] == [(1, "open")]


# --- quick actions -----------------------------------------------------------------------------


def manual_plan(reason: str, approval: bool = True) -> Plan:
    return Plan(
        plan_id="q" * 16,
        issue_fingerprint="r" * 16,
        issue_event_id="e" * 16,
        host="vm",
        issue_kind="other",
        metric="manual_request",
        value=0.0,
        severity=Severity.WARNING,
        steps=[
            PlanStep(action="restart_service", target="nginx", risk=Risk.LOW, estimated_seconds=5)
        ],
        confidence=1.0,
        risk=Risk.LOW,
        estimated_seconds=5,
        requires_approval=approval,
        reason=reason,
        model_version="manual",
    )


def test_a_quick_action_is_listed_by_what_it_does_and_who_asked(events):
    plan = manual_plan("requested by olivia via gateway: stuck; needs approval: risky host")
    incidents = book()
    incidents.apply(plan, "PLANS")
    (summary,) = incidents.incidents(IncidentFilter(), 10)
    for info in (summary.quick_action, incidents.pending_approvals(10)[0].quick_action):
        assert info is not None
        assert (info.action, info.target) == ("restart_service", "nginx")
        assert (info.requested_by, info.channel, info.reason) == ("olivia", "gateway", "stuck")
    assert quick_action_of(events.plan(events.issue())) is None


def test_a_quick_action_the_planner_made_is_recognized():
    from medbay.planner.config import PlannerConfig
    from medbay.planner.planning import Planner
    from medbay.planner.rates import SuccessRates

    planner = Planner(PlannerConfig.model_validate({}), SuccessRates())
    for reason, held in (("", {}), ("stuck worker", {"actions": ["kill_process"]})):
        request = ActionRequested(
            host="app-1",
            action="kill_process",
            target="api",
            requested_by="ada",
            channel="cli",
            reason=reason,
        )
        planner.config = PlannerConfig.model_validate({"require_approval": held})
        info = quick_action_of(planner.plan_request(request))
        assert info is not None and (info.action, info.target) == ("kill_process", "api")
        assert (info.requested_by, info.channel, info.reason) == ("ada", "cli", reason)


# --- recent events ----------------------------------------------------------------------------


def test_recent_events_newest_last_with_metric_batches_kept_apart():
    recent = RecentEvents(3, 1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        recent.add(start + timedelta(seconds=i), f"e{i}")
    recent.add(start + timedelta(seconds=10), "m0", metric=True)
    recent.add(start + timedelta(seconds=3, milliseconds=500), "m1", metric=True)
    assert recent.latest(10) == ["e2", "e3", "m1", "e4"]
    assert recent.latest(2) == ["m1", "e4"]


async def test_recent_events_are_served_as_the_websocket_sends_them(gateway, bus, events):
    issue = events.issue()
    plan = events.plan(issue)
    await bus.publish(issue, plan)
    body = await gateway.until("/api/events", lambda body: len(body) == 2)
    assert [m["type"] for m in body] == ["issue.opened", "plan.created"]  # newest last
    first = body[0]
    assert first["kind"] == "event" and first["stream"] == "ISSUES" and first["seq"] >= 1
    assert first["host"] == issue.host and first["event"]["event_id"] == issue.event_id
    assert len((await gateway.get("/api/events?limit=1")).json()) == 1


# --- approval deadlines -------------------------------------------------------------------------


async def test_pending_approvals_carry_the_approvers_deadline(gateway, bus, events):
    issue = events.issue()
    known, unknown, unreadable = (events.plan(issue) for _ in range(3))
    await bus.publish(issue, known, unknown, unreadable)
    body = await gateway.until("/api/approvals", lambda body: len(body) == 3)
    assert [p["deadline"] for p in body] == [None, None, None]  # no approver: no bucket

    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=42)
    approver = await ApprovalBook.open(bus.js)
    record = ApprovalRecord(plan_id=known.plan_id, plan=known.model_dump_json(), deadline=deadline)
    await approver.kv.put(approval_key(known.plan_id), record.model_dump_json().encode())
    await approver.kv.put(approval_key(unreadable.plan_id), b'{"plan_id": 7}')
    body = await gateway.until("/api/approvals", lambda body: body[0]["deadline"] is not None)
    found = {p["plan"]["plan_id"]: p["deadline"] for p in body}
    assert datetime.fromisoformat(found[known.plan_id]) == deadline
    assert found[unknown.plan_id] is None and found[unreadable.plan_id] is None


@pytest.mark.parametrize("plan_id", ["p1", "web.1/x"])
def test_the_approver_keys_its_records_where_the_gateway_reads(plan_id):
    from medbay.approver.book import plan_key

    assert plan_key(plan_id) == approval_key(plan_id)


# --- the executor's mode, end to end ------------------------------------------------------------


async def test_the_executor_states_its_mode_to_the_gateway(services, start_gateway, tmp_path):
    config = tmp_path / "executor.yaml"
    config.write_text("targets:\n  oncall: {kind: notifier, via: log}\n")
    executor = services("executor", "--config", str(config))  # dry-run unless told otherwise
    url = f"http://127.0.0.1:{executor.port}/healthz"
    gateway = start_gateway(f"health: {{urls: {{executor: '{url}'}}}}\n")
    found = await gateway.until(
        "/api/services",
        lambda body: any(s["service"] == "executor" and s["status"] == "ok" for s in body),
        timeout=15,
    )
    (state,) = [s for s in found if s["service"] == "executor"]
    assert state["info"] == {"mode": "dry-run"} and state["detail"]["info"] == state["info"]
