"""The gateway's plain classes, without NATS: tokens, the incident book, the
metrics board, WebSocket filters and fan-out, replay's rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from medbay.common.events import MetricBatch
from medbay.common.streams import ISSUES, METRICS, RESULTS
from medbay.gateway.auth import Forbidden, Principal, TokenBook, Unauthorized
from medbay.gateway.config import MetricsConfig, TokenConfig
from medbay.gateway.hub import EventFilter, FilterError, Hub, Subscriber, split_list
from medbay.gateway.incidents import IncidentBook, IncidentFilter
from medbay.gateway.metrics_view import MetricsBoard
from medbay.gateway.replay import prefix_problem, subject_problem

OPERATOR = TokenConfig(name="olivia", token=SecretStr("o" * 20), role="operator")
VIEWER = TokenConfig(name="victor", token=SecretStr("v" * 20), role="viewer")


def book(**limits: int) -> IncidentBook:
    return IncidentBook(
        max_incidents=limits.get("max_incidents", 100),
        max_timeline_events=limits.get("max_timeline_events", 50),
        max_results=limits.get("max_results", 100),
    )


# --- tokens ---------------------------------------------------------------------------


def test_tokens_and_roles():
    tokens = TokenBook([OPERATOR, VIEWER])
    assert tokens.authorize("o" * 20, "operator") == Principal("olivia", "operator")
    assert tokens.authorize("v" * 20, "viewer") == Principal("victor", "viewer")
    with pytest.raises(Forbidden, match="victor is a viewer"):
        tokens.authorize("v" * 20, "operator")
    for wrong in (None, "", "o" * 19, "x" * 20):
        with pytest.raises(Unauthorized):
            tokens.authorize(wrong, "viewer")


def test_an_anonymous_viewer_reads_but_must_bring_a_token_to_change():
    tokens = TokenBook([OPERATOR], allow_anonymous_viewer=True)
    assert tokens.authorize(None, "viewer") == Principal("anonymous", "viewer")
    with pytest.raises(Unauthorized, match="operator role"):
        tokens.authorize(None, "operator")
    with pytest.raises(Unauthorized):
        tokens.authorize("not-a-known-token", "viewer")


# --- incidents --------------------------------------------------------------------------


def test_results_before_their_issue_and_plan_still_make_one_incident(events):
    incidents = book()
    issue = events.issue()
    plan = events.plan(issue, approval=False)
    incidents.apply(events.result(plan, "started"), "RESULTS")
    (early,) = incidents.incidents(IncidentFilter(), 10)
    assert early.state == "unknown" and early.severity is None and early.plan_status == "running"
    incidents.apply(plan, "PLANS")
    incidents.apply(issue, "ISSUES")
    incidents.apply(events.result(plan), "RESULTS")
    detail = incidents.incident(issue.fingerprint)
    assert detail is not None and detail.state == "open" and detail.resource == "cpu"
    assert [e.event.type for e in detail.timeline] == [
        "issue.opened",
        "plan.created",
        "action.result",
        "action.result",
    ]  # by time, not by arrival
    assert detail.plans[0].status == "running"  # until the executor says how it ended


def test_the_first_decision_counts_and_repeats_are_ignored(events):
    incidents = book()
    issue = events.issue()
    plan = events.plan(issue)
    incidents.apply(issue, "ISSUES")
    incidents.apply(plan, "PLANS")
    assert [p.plan.plan_id for p in incidents.pending_approvals(10)] == [plan.plan_id]
    first, second = events.approval(plan, "reject"), events.approval(plan, "approve")
    for event in (first, first, second):
        incidents.apply(event, "APPROVALS")
    progress = incidents.plan(plan.plan_id)
    assert progress is not None and progress.status == "rejected"
    assert progress.decision == first
    assert incidents.pending_approvals(10) == []
    detail = incidents.incident(issue.fingerprint)
    assert detail is not None and len(detail.timeline) == 4


def test_filters_and_newest_first(events):
    incidents = book()
    web, db = events.issue(host="web-1"), events.issue(host="db-1", kind="memory")
    incidents.apply(web, "ISSUES")
    incidents.apply(db, "ISSUES")
    incidents.apply(events.resolved(web), "ISSUES")
    everything = IncidentFilter()
    assert [i.host for i in incidents.issues(everything, 10)] == ["web-1", "db-1"]
    assert [i.host for i in incidents.issues(IncidentFilter(state="open"), 10)] == ["db-1"]
    assert [i.host for i in incidents.issues(IncidentFilter(kind="memory"), 10)] == ["db-1"]
    assert incidents.issues(IncidentFilter(host="nowhere"), 10) == []
    later = datetime.now(UTC) + timedelta(hours=1)
    assert incidents.incidents(IncidentFilter(since=later), 10) == []
    assert len(incidents.issues(everything, 1)) == 1
    (resolved,) = incidents.issues(IncidentFilter(state="resolved"), 10)
    assert resolved.resolved_at is not None


def test_bounded_by_count_age_and_timeline_length(events):
    incidents = book(max_incidents=3, max_timeline_events=10)
    issues = [events.issue(host=f"web-{i}") for i in range(5)]
    for issue in issues:
        incidents.apply(issue, "ISSUES")
    assert len(incidents) == 3 and incidents.incident(issues[0].fingerprint) is None
    plan = events.plan(issues[4])
    incidents.apply(plan, "PLANS")
    for _ in range(12):
        incidents.apply(events.result(plan, "started"), "RESULTS")
    detail = incidents.incident(issues[4].fingerprint)
    assert detail is not None and len(detail.timeline) == 10 and detail.timeline_dropped == 4
    incidents.prune(datetime.now(UTC) + timedelta(seconds=1))
    assert len(incidents) == 0 and incidents.pending_approvals(10) == []
    assert incidents.results(host=None, outcome=None, since=None, limit=10) == []


# --- metrics -----------------------------------------------------------------------------


def test_metrics_keep_a_short_history_and_bounded_series():
    board = MetricsBoard(MetricsConfig(history_points=3, max_series_per_host=2, max_hosts=2))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(20):
        board.apply(
            MetricBatch(
                host="web-1",
                collected_at=start + timedelta(seconds=i),
                samples=[
                    {"name": "a", "value": float(i)},
                    {"name": "b", "value": 1.0, "labels": {"x": "1"}},
                    {"name": "c", "value": 2.0},
                ],
            )
        )
    host = board.host("web-1")
    assert host is not None and host.dropped_series == 20
    a = next(s for s in host.series if s.name == "a")
    assert a.value == 19.0 and [v for _, v in a.history or []] == [17.0, 18.0, 19.0]
    for name in ("web-2", "web-3"):
        board.apply(MetricBatch(host=name, collected_at=start, samples=[]))
    assert [h.host for h in board.hosts()] == ["web-2", "web-3"]


# --- WebSocket filters and fan-out ----------------------------------------------------


def test_event_filters():
    f = EventFilter.parse(split_list(["issue.*,plan.created"]), ["web-1"])
    assert f.matches("issue.resolved", "web-1") and f.matches("plan.created", "web-1")
    assert not f.matches("action.result", "web-1") and not f.matches("issue.opened", "web-2")
    assert not f.matches("breaker.reset", None)
    assert EventFilter().matches("breaker.reset", None)
    for types, hosts in ((["issue"], []), (["nope.*"], []), ([], ["bad host"])):
        with pytest.raises(FilterError):
            EventFilter.parse(types, hosts)


async def test_a_full_queue_drops_only_that_client():
    dropped: list[Subscriber] = []
    hub = Hub(on_drop=dropped.append)
    who = Principal("victor", "viewer")
    slow, fast = Subscriber(who, EventFilter(), 2), Subscriber(who, EventFilter(), 10)
    hub.add(slow)
    hub.add(fast)
    for seq in range(5):
        hub.broadcast("ISSUES", seq, "issue.opened", "web-1", b'{"x": 1}')
    assert dropped == [slow] and slow.close_reason == (4408, "too slow: 2 events waiting")
    assert slow.dropped.is_set() and fast.queue.qsize() == 5
    message = await asyncio.wait_for(fast.queue.get(), 1)
    assert message.startswith('{"kind": "event", "stream": "ISSUES", "seq": 0,')
    assert message.endswith('"event": {"x": 1}}')


# --- replay rules --------------------------------------------------------------------------


def test_replay_prefixes_and_subjects():
    assert prefix_problem("sandbox.run-1") is None
    assert prefix_problem("medbay.copy") is not None and prefix_problem("a.*") is not None
    assert subject_problem("medbay.issues.*.web-1", ISSUES) is None
    assert subject_problem("medbay.issues.>", ISSUES) is None
    assert subject_problem("medbay.issues", ISSUES) is not None
    assert subject_problem("medbay.>", ISSUES) is not None
    assert subject_problem("medbay.metrics.>.x", METRICS) is not None
    for results in ("medbay.results.web-1", "medbay.outcomes.>", "medbay.alerts.*"):
        assert subject_problem(results, RESULTS) is None  # every subject of the stream
    assert "medbay.alerts.>" in (subject_problem("medbay.issues.>", RESULTS) or "")
