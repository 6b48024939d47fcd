"""Honest outcomes: an incident says what was done about it. A plan is over only when
the executor says how it ended (PlanFinished), only ``verified`` means fixed, alerts
join the timeline, and an issue nobody planned for reads ``not_planned``; read from
RESULTS's history and live, and sent to WebSocket clients."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any, get_args

import pytest
import websockets

from medbay.common.events import IssueResolved, PlanOutcome
from medbay.gateway.incidents import IncidentBook, IncidentFilter, incident_status
from medbay.gateway.schemas import IncidentSummary
from tests import factories

TOKEN = "viewer-token-0123456789abc"


def book() -> IncidentBook:
    return IncidentBook(max_incidents=100, max_timeline_events=100, max_results=100)


def only(incidents: IncidentBook) -> IncidentSummary:
    (summary,) = incidents.incidents(IncidentFilter(), 10)
    return summary


# --- the status of an incident ----------------------------------------------------------------


@pytest.mark.parametrize("outcome", get_args(PlanOutcome))
def test_every_outcome_is_the_status_of_its_incident(events, outcome):
    incidents = book()
    issue = events.issue()
    plan = events.plan(issue, approval=False)
    for event, stream in [(issue, "ISSUES"), (plan, "PLANS"), (events.result(plan), "RESULTS")]:
        incidents.apply(event, stream)
    incidents.apply(events.finished(plan, outcome, detail="why, in words"), "RESULTS")
    summary = only(incidents)
    assert summary.status == outcome and summary.outcome == outcome
    assert summary.plan_status == ("rejected" if outcome in ("rejected", "expired") else "finished")
    progress = incidents.plan(plan.plan_id)
    assert progress is not None and progress.outcome == outcome
    assert progress.finished is not None and progress.finished.detail == "why, in words"


def test_the_status_of_an_incident_whose_plan_is_not_over():
    assert incident_status(None, None) == "not_planned"
    assert incident_status("pending_approval", None) == "pending_approval"
    assert incident_status("queued", None) == "queued"
    assert incident_status("running", None) == "running"
    assert incident_status("finished", "refused") == "refused"


def test_a_plan_runs_until_the_executor_says_how_it_ended(events):
    incidents = book()
    issue = events.issue()
    plan = events.plan(issue, approval=False)
    incidents.apply(issue, "ISSUES")
    assert only(incidents).status == "not_planned"  # raised, no plan (yet)
    incidents.apply(plan, "PLANS")
    assert only(incidents).status == "queued"
    incidents.apply(events.result(plan, "started"), "RESULTS")
    assert only(incidents).status == "running"
    incidents.apply(events.result(plan), "RESULTS")  # a verified step: the plan may go on
    summary = only(incidents)
    assert summary.status == "running" and summary.plan_status == "running"
    assert summary.outcome is None

    ended = events.finished(plan, "refused", detail="restart_service web: breaker open")
    incidents.apply(ended, "RESULTS")
    incidents.apply(events.finished(plan, "verified"), "RESULTS")  # the first word counts
    summary = only(incidents)
    assert summary.status == "refused" and summary.plan_status == "finished"
    detail = incidents.incident(issue.fingerprint)
    assert detail is not None
    entry = detail.timeline[-2]
    assert entry.stream == "RESULTS" and entry.event == ended
    assert entry.summary == (
        f"plan {plan.plan_id} ended: refused by the executor: nothing was fixed"
        " (restart_service web: breaker open)"
    )


def test_alerts_join_the_timeline_and_an_escalation_is_said(events):
    incidents = book()
    issue = events.issue()
    plan = events.plan(issue, approval=False)
    incidents.apply(issue, "ISSUES")
    incidents.apply(plan, "PLANS")
    incidents.apply(events.result(plan), "RESULTS")
    alert = events.alert(plan, "oncall")
    incidents.apply(alert, "RESULTS")
    incidents.apply(events.finished(plan, "not_fixed", escalated=True), "RESULTS")
    assert only(incidents).status == "not_fixed"
    detail = incidents.incident(issue.fingerprint)
    assert detail is not None
    summaries = [
        e.summary for e in detail.timeline if e.event.type in ("alert.raised", "plan.finished")
    ]
    assert summaries == [
        "alert sent to oncall",
        f"plan {plan.plan_id} ended: not fixed: no fix could be verified, a person was alerted",
    ]
    (progress,) = detail.plans
    assert progress.alerts == [alert]
    (episode,) = detail.episodes
    assert [e.event.type for e in episode.timeline][-2:] == ["alert.raised", "plan.finished"]


def test_a_decision_against_the_plan_ends_it_before_the_executor_says_so(events):
    incidents = book()
    for channel, outcome in (("gateway", "rejected"), ("expiry", "expired")):
        issue = events.issue(host=f"web-{channel}")
        plan = events.plan(issue)
        incidents.apply(issue, "ISSUES")
        incidents.apply(plan, "PLANS")
        assert incidents.incidents(IncidentFilter(host=issue.host), 1)[0].status == (
            "pending_approval"
        )
        decision = factories.approval(plan.plan_id, "reject", channel=channel, decided_by="x")
        incidents.apply(decision, "APPROVALS")
        (summary,) = incidents.incidents(IncidentFilter(host=issue.host), 1)
        assert summary.status == outcome and summary.plan_status == "rejected"


def test_outcomes_and_alerts_before_their_plan_and_issue_make_one_incident(events):
    incidents = book()
    issue = events.issue()
    plan = events.plan(issue)
    incidents.apply(events.finished(plan, "dry_run"), "RESULTS")
    incidents.apply(events.alert(plan), "RESULTS")
    early = only(incidents)
    assert early.state == "unknown" and early.host == issue.host and early.status == "dry_run"
    incidents.apply(plan, "PLANS")
    incidents.apply(issue, "ISSUES")
    summary = only(incidents)
    assert summary.status == "dry_run" and summary.pending_approval is False
    assert incidents.pending_approvals(10) == []  # it is over, whatever it needed


def test_an_issue_that_opens_again_has_no_plan_until_one_is_made_for_it(events):
    incidents = book()
    first = factories.issue("cpu", "web-1", seen=factories.SEEN)
    plan = factories.plan(
        issue_fingerprint=first.fingerprint,
        host="web-1",
        issue_kind="cpu",
        timestamp=factories.SEEN + timedelta(seconds=10),
    )
    data = first.model_dump(exclude={"event_id", "timestamp", "type"})
    resolved = IssueResolved(**{**data, "last_seen": factories.SEEN + timedelta(minutes=2)})
    again = factories.issue("cpu", "web-1", seen=factories.SEEN + timedelta(minutes=5), n=1)
    incidents.apply(first, "ISSUES")
    incidents.apply(plan, "PLANS")
    incidents.apply(events.finished(plan, "verified"), "RESULTS")
    incidents.apply(resolved, "ISSUES")
    incidents.apply(again, "ISSUES")
    summary = only(incidents)
    assert summary.recurrences == 1 and summary.state == "open"
    assert summary.status == "not_planned" and summary.plan_status is None  # not "verified"

    later = factories.plan(
        issue_fingerprint=first.fingerprint,
        host="web-1",
        issue_kind="cpu",
        timestamp=factories.SEEN + timedelta(minutes=5, seconds=10),
    )
    incidents.apply(later, "PLANS")
    assert only(incidents).status == "queued"


def test_an_issue_says_what_was_wrong():
    incidents = book()
    issue = factories.issue("service_down", "web-1", detail="connection refused")
    incidents.apply(issue, "ISSUES")
    assert only(incidents).detail == "connection refused"
    found = incidents.issues(IncidentFilter(), 1)
    assert found[0].detail == "connection refused"


# --- read from the streams ------------------------------------------------------------------


async def next_event(ws: Any) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message["kind"] == "event":
            return message


async def test_outcomes_and_alerts_are_read_from_history_and_live(start_gateway, bus, events):
    refused_issue, planless_issue = events.issue(host="web-1"), events.issue(host="web-2")
    refused = events.plan(refused_issue, approval=False)
    await bus.publish(
        refused_issue,
        planless_issue,
        refused,
        events.result(refused),
        events.alert(refused),
        events.finished(refused, "refused", escalated=True),
    )
    gateway = start_gateway()  # reads them as history

    listed = await gateway.until("/api/incidents", lambda body: len(body) == 2)
    status = {i["host"]: (i["status"], i["plan_status"], i["outcome"]) for i in listed}
    assert status == {
        "web-1": ("refused", "finished", "refused"),
        "web-2": ("not_planned", None, None),
    }
    detail = (await gateway.get(f"/api/incidents/{refused_issue.fingerprint}")).json()
    assert [e["event"]["type"] for e in detail["timeline"]][-2:] == [
        "alert.raised",
        "plan.finished",
    ]
    (progress,) = detail["plans"]
    assert progress["outcome"] == "refused" and progress["finished"]["escalated"] is True
    assert [a["target"] for a in progress["alerts"]] == ["oncall"]

    async with websockets.connect(
        f"{gateway.ws_url}?token={TOKEN}&types=plan.finished,alert.*"
    ) as ws:
        assert json.loads(await ws.recv())["kind"] == "hello"
        later = events.plan(planless_issue, approval=False)
        await bus.publish(later, events.alert(later, "ops"), events.finished(later, "alerted"))
        received = [await next_event(ws), await next_event(ws)]
    assert [(m["stream"], m["type"], m["host"]) for m in received] == [
        ("RESULTS", "alert.raised", "web-2"),
        ("RESULTS", "plan.finished", "web-2"),
    ]
    assert received[1]["event"]["outcome"] == "alerted"
    path = f"/api/incidents/{planless_issue.fingerprint}"
    assert (await gateway.until(path, lambda body: body["status"] == "alerted"))[
        "outcome"
    ] == "alerted"

    events_read = (await gateway.get("/api/events")).json()
    assert {"plan.finished", "alert.raised"} <= {e["type"] for e in events_read}
    metrics = (await gateway.get("/metrics")).text
    assert 'medbay_gateway_unreadable_events_total{stream="RESULTS"}' not in metrics
