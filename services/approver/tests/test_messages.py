"""What people read: the question, the answer, /pending and /status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

from medbay.approver import messages
from medbay.approver.book import ApprovalRecord, Decision
from medbay.approver.status import last_actions, open_issues
from medbay.common.events import (
    ActionResult,
    AlertRaised,
    IssueChange,
    IssueEvent,
    IssueOpened,
    IssueResolved,
    IssueUpdated,
    Plan,
    Risk,
    Severity,
)
from medbay.common.records import BreakerState
from tests import factories
from tests.factories import step

IssueT = TypeVar("IssueT", bound=IssueEvent)

NOW = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def make_plan(plan_id: str = "p" * 32, host: str = "web-1", threshold: float | None = 90.0) -> Plan:
    return factories.plan(
        step("clear_cache", "redis", Risk.LOW, 20),
        step("restart_service", "web", Risk.HIGH, 90),
        plan_id=plan_id,
        issue_event_id="e" * 32,
        host=host,
        issue_kind="memory",
        metric="memory_used_percent",
        value=97.5,
        threshold=threshold,
        confidence=0.82,
        requires_approval=True,
        reason="memory keeps growing",
        model_version="rules-1",
    )


def record(plan: Plan, deadline: datetime, decision: Decision | None = None) -> ApprovalRecord:
    return ApprovalRecord(
        plan_id=plan.plan_id,
        plan=plan.model_dump_json(),
        traceparent=f"00-{TRACE}-00f067aa0ba902b7-01",
        created_at=deadline - timedelta(minutes=15),
        deadline=deadline,
        decision=decision,
    )


def test_the_question_has_issue_steps_risk_confidence_duration_and_trace():
    text = messages.plan_text(make_plan(), trace_id=TRACE, deadline=NOW)
    assert "memory on web-1 (critical)" in text
    assert "memory_used_percent{service=web} = 97.5 (threshold 90)" in text
    assert "1. clear_cache redis: risk low, ~20 s" in text
    assert "2. restart_service web: risk high, ~1 min 30 s" in text
    assert "Confidence 82%, overall risk high, ~1 min 50 s in all" in text
    assert "Why: memory keeps growing" in text
    assert f"Plan: {'p' * 32}" in text
    assert f"Trace: {TRACE}" in text
    assert "Decide by 2025-01-06 12:00:00 UTC" in text


def test_an_anomaly_has_no_threshold():
    text = messages.plan_text(make_plan(threshold=None), trace_id="", deadline=NOW)
    assert "= 97.5 (no threshold: an anomaly)" in text
    assert "Trace: unknown" in text


def test_the_answer_says_who_decided_and_when():
    by_alice = Decision(
        decision="approve",
        decided_by="@alice (telegram 1)",
        channel="telegram",
        decided_at=NOW,
        event_id="x",
    )
    text = messages.final_text(record(make_plan(), NOW, by_alice))
    assert text.startswith("⚠️ Approval needed")
    assert text.endswith("✅ Approved by @alice (telegram 1) at 2025-01-06 12:00:00 UTC")
    by_cli = by_alice.model_copy(update={"decision": "reject", "channel": "cli", "decided_by": "b"})
    assert messages.decision_line(by_cli) == "❌ Rejected by b via cli at 2025-01-06 12:00:00 UTC"
    expired = by_alice.model_copy(
        update={
            "decision": "reject",
            "channel": "expiry",
            "decided_by": "expiry",
            "reason": "not decided within 15 minutes",
        }
    )
    assert messages.decision_line(expired) == (
        "⌛ Expired (not decided within 15 minutes): rejected at 2025-01-06 12:00:00 UTC"
    )
    assert messages.already_decided(by_alice) == (
        "Already approved by @alice (telegram 1) at 2025-01-06 12:00:00 UTC."
    )
    assert messages.already_decided(expired).startswith("Already rejected: the approval expired")


def test_a_long_reason_keeps_the_text_within_telegrams_limit():
    plan = make_plan().model_copy(update={"reason": "x" * 2000})
    text = messages.plan_text(plan, trace_id=TRACE, deadline=NOW)
    assert len(text) <= messages.MAX_CHARS and "x" * 499 + "…" in text


def test_a_long_alert_is_cut_but_keeps_its_plan():
    alert = AlertRaised(
        plan_id="p-1",
        alert_id="a-1",
        issue_fingerprint="f" * 16,
        issue_kind="runaway_process",
        host="h" * 200,
        target="oncall",
        message="y" * 4000,
    )
    text = messages.alert_text(alert)
    assert len(text) == messages.MAX_CHARS
    assert text.startswith(f"🚨 Alert: runaway_process on {'h' * 200}\nyyy")
    assert text.endswith("y…\n\nPlan: p-1")


def test_pending_lists_open_approvals_soonest_first_with_time_left():
    later = record(make_plan("b" * 32, host="db-1"), NOW + timedelta(minutes=12))
    sooner = record(make_plan("a" * 32), NOW + timedelta(seconds=45))
    decided = record(
        make_plan("c" * 32),
        NOW + timedelta(minutes=1),
        Decision(decision="reject", decided_by="x", channel="cli", decided_at=NOW, event_id="y"),
    )
    text = messages.pending_text([later, decided, sooner], NOW)
    lines = text.splitlines()
    assert lines[0] == "Waiting for approval (2):"
    assert "on web-1" in lines[1] and "45 s left" in lines[1] and "a" * 32 in lines[1]
    assert "on db-1" in lines[2] and "12 min left" in lines[2]
    assert "clear_cache redis, then restart_service web" in lines[1]
    assert messages.pending_text([decided], NOW) == "Nothing is waiting for approval."


def test_durations_and_windows():
    assert messages.human_duration(0.2) == "1 s"
    assert messages.human_duration(60) == "1 min"
    assert messages.human_duration(3900) == "1 h 5 min"
    assert messages.window_text(timedelta(minutes=15)) == "15 minutes"
    assert messages.window_text(timedelta(minutes=1)) == "1 minute"
    assert messages.window_text(timedelta(seconds=3)) == "3 seconds"


def issue(
    kind: type[IssueT], fingerprint: str, severity: Severity = Severity.WARNING, **extra: object
) -> IssueT:
    return kind(
        fingerprint=fingerprint,
        host="web-1",
        kind="cpu",
        resource="cpu",
        metric="cpu_percent",
        value=91.0,
        threshold=80.0,
        severity=severity,
        detector="threshold",
        first_seen=NOW,
        last_seen=NOW,
        **extra,
    )


def test_status_shows_open_issues_running_plans_last_actions_and_breakers():
    events: list[IssueChange] = [
        issue(IssueOpened, "a"),
        issue(IssueOpened, "b"),
        issue(IssueResolved, "a"),
        issue(IssueUpdated, "b", Severity.CRITICAL, previous_severity=Severity.WARNING),
        issue(IssueOpened, "c"),
    ]
    still_open = open_issues(events)
    assert [e.fingerprint for e in still_open] == ["b", "c"]  # critical first
    result = ActionResult(
        plan_id="p",
        issue_fingerprint="b",
        issue_kind="cpu",
        step_index=0,
        action="restart_service",
        target="web",
        host="web-1",
        status="finished",
        outcome="success",
        verified=True,
        dry_run=False,
        started_at=NOW,
        finished_at=NOW,
    )
    started = result.model_copy(update={"status": "started", "outcome": None})
    assert last_actions([started, result]) == [result]
    breaker = BreakerState(opened_at=NOW, reason="3 restarts in 15 min", actions=[])
    text = messages.status_text(
        messages.StatusSnapshot(
            open_issues=still_open,
            running_plans=[make_plan()],
            last_results=[result],
            breakers={"web": breaker},
            waiting=2,
        )
    )
    assert "Open issues (2):" in text and "🔴 cpu on web-1/cpu: cpu_percent = 91" in text
    assert "Running plans (1):" in text
    assert "Waiting for approval: 2 (/pending)" in text
    assert "restart_service web on web-1: success, verified" in text
    assert "web: open since 2025-01-06 12:00:00 UTC: 3 restarts in 15 min" in text
    empty = messages.status_text(messages.StatusSnapshot(None, None, None, None))
    assert "Open issues: unknown" in empty and "Last actions: unknown" in empty
    assert "No plan is running." in empty and "No breaker is open." in empty
