"""Changes made through the gateway become events on the real streams, naming the
token's owner: approvals, quick actions, breaker resets; and replays into a sandbox."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from medbay.common.events import Approval
from medbay.common.records import BreakerState, RecordedAction, TargetState, target_key
from medbay.executor.plan_book import PlanBook
from medbay.executor.rails import SafetyRails
from medbay.executor.safety_config import SafetyConfig


async def arrived(
    received: list[dict[str, Any]], count: int = 1, timeout: float = 5.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(received) < count:
        assert time.monotonic() < deadline, f"only {received}"
        await asyncio.sleep(0.02)
    return received


async def test_approve_publishes_an_approval_by_the_token_owner(gateway, bus, events):
    approvals = await bus.collect("medbay.approvals.>")
    issue = events.issue()
    plan = events.plan(issue)
    await bus.publish(issue, plan)
    await gateway.until("/api/approvals", lambda body: len(body) == 1)

    response = await gateway.post(f"/api/approvals/{plan.plan_id}/approve", {"reason": "ok"})
    assert response.status_code == 202, response.text
    (approval,) = await arrived(approvals)
    assert approval["plan_id"] == plan.plan_id and approval["decision"] == "approve"
    assert approval["channel"] == "gateway" and approval["decided_by"] == "olivia"
    assert approval["reason"] == "ok"

    # the gateway reads its own approval back: the plan no longer waits
    await gateway.until(f"/api/plans/{plan.plan_id}", lambda body: body["status"] == "queued")
    again = await gateway.post(f"/api/approvals/{plan.plan_id}/reject")
    assert again.status_code == 409 and "queued" in again.json()["detail"]
    missing = await gateway.post("/api/approvals/no-such-plan/approve")
    assert missing.status_code == 404


async def test_a_plan_the_executor_already_decided_is_a_conflict(gateway, bus, events):
    issue = events.issue()
    plan = events.plan(issue)
    await bus.publish(issue, plan)
    await gateway.until("/api/approvals", lambda body: len(body) == 1)
    book = await PlanBook.open(bus.js)  # the executor's record: rejected on Telegram
    await book.on_plan(plan, {}, ["the planner asks for approval"])
    rejection = Approval(
        plan_id=plan.plan_id, decision="reject", decided_by="tg:ann", channel="telegram"
    )
    await book.on_approval(rejection)

    response = await gateway.post(f"/api/approvals/{plan.plan_id}/approve")
    assert response.status_code == 409
    assert response.json()["detail"] == f"plan {plan.plan_id} is already rejected by tg:ann"


async def test_quick_action_publishes_an_action_request(gateway, bus):
    requests = await bus.collect("medbay.requests.>")
    body = {
        "host": "web-1",
        "action": "scale_up",
        "target": "api",
        "params": {"replicas": 2},
        "reason": "traffic",
    }
    response = await gateway.post("/api/actions", body)
    assert response.status_code == 202, response.text
    (request,) = await arrived(requests)
    assert request["type"] == "action.requested" and request["requested_by"] == "olivia"
    assert request["channel"] == "gateway" and request["params"] == {"replicas": 2}
    assert request["event_id"] == response.json()["request"]["event_id"]

    wrong = await gateway.post("/api/actions", {**body, "params": {"bogus": 1}})
    assert wrong.status_code == 422
    assert "bogus" in wrong.json()["detail"] and "replicas" in wrong.json()["detail"]
    unknown = await gateway.post("/api/actions", {**body, "action": "format_disk"})
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("action:")


async def test_breaker_reset_asks_the_executor_and_records_who(gateway, bus):
    resets = await bus.collect("medbay.audit.>")
    rails = await SafetyRails.open(bus.js, SafetyConfig())
    now = datetime.now(UTC)
    state = TargetState(
        target="web.1",
        breaker=BreakerState(
            opened_at=now,
            reason="3 actions in 15 min",
            actions=[RecordedAction(action="restart_service", at=now)],
        ),
    )
    await rails.kv.put(target_key("web.1"), state.model_dump_json().encode())

    listed = (await gateway.get("/api/breakers")).json()
    assert [(b["target"], b["reason"]) for b in listed] == [("web.1", "3 actions in 15 min")]
    response = await gateway.post("/api/breakers/web.1/reset")
    assert response.status_code == 202, response.text
    (reset,) = await arrived(resets)
    assert reset["target"] == "web.1" and reset["reset_by"] == "olivia"
    assert reset["channel"] == "gateway"
    # the gateway wrote nothing: the executor, the rails' only writer, closes it
    assert len((await gateway.get("/api/breakers")).json()) == 1
    assert await rails.reset_breaker("web.1", by=f"{reset['reset_by']} (gateway)")
    assert (await gateway.get("/api/breakers")).json() == []
    assert (await gateway.post("/api/breakers/web.1/reset")).status_code == 409


async def test_replay_republishes_a_time_range_under_a_sandbox_prefix(gateway, bus, events):
    issues = [events.issue(host=f"web-{i}") for i in range(3)]
    await bus.publish(*issues)
    replayed = await bus.collect("sandbox.>")
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    body = {"stream": "ISSUES", "since": since, "prefix": "sandbox"}
    response = await gateway.post("/api/replay", body)
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 3 and response.json()["requested_by"] == "olivia"
    await arrived(replayed, 3)
    assert [r["host"] for r in replayed] == ["web-0", "web-1", "web-2"]

    ancient = {**body, "since": "0001-01-01T00:00:00+00:01"}  # before the first day in UTC
    assert (await gateway.post("/api/replay", ancient)).status_code == 422
    only_web_1 = {**body, "subject": "medbay.issues.*.web-1"}
    assert (await gateway.post("/api/replay", only_web_1)).json()["count"] == 1
    live = await gateway.post("/api/replay", {**body, "prefix": "medbay.copy"})
    assert live.status_code == 422 and "prefix" in live.json()["detail"]
    outside = await gateway.post("/api/replay", {**body, "subject": "medbay.plans.>"})
    assert outside.status_code == 422 and "subject" in outside.json()["detail"]


async def test_a_replay_of_results_carries_plan_outcomes_and_alerts(gateway, bus, events):
    plan = events.plan(events.issue(), approval=False)
    await bus.publish(events.result(plan), events.alert(plan), events.finished(plan, "not_fixed"))
    replayed = await bus.collect("sandbox.>")
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    body = {"stream": "RESULTS", "since": since, "prefix": "sandbox.results"}
    response = await gateway.post("/api/replay", body)
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 3
    assert [r["type"] for r in await arrived(replayed, 3)] == [
        "action.result",
        "alert.raised",
        "plan.finished",
    ]
    outcomes = await gateway.post("/api/replay", {**body, "subject": "medbay.outcomes.>"})
    assert outcomes.json()["count"] == 1
