"""The gateway's views, built from events published to the real streams: an
incident's timeline, its survival across a restart, metrics, the planner's
model and the services' health."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from nats.js.api import ObjectMeta

from medbay.common.events import MetricBatch


def types_of(detail: dict[str, Any]) -> list[str]:
    return [entry["event"]["type"] for entry in detail["timeline"]]


CHAIN = [
    "issue.opened",
    "plan.created",
    "plan.approval",
    "action.result",
    "action.result",
    "plan.finished",
    "issue.resolved",
]


async def test_issue_plan_approval_and_results_make_one_timeline(gateway, bus, events):
    issue = events.issue()
    plan = events.plan(issue)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await bus.publish(issue, plan, trace_id=trace_id)
    pending = await gateway.until("/api/approvals", lambda body: len(body) == 1)
    assert pending[0]["plan"]["plan_id"] == plan.plan_id
    assert pending[0]["issue"]["fingerprint"] == issue.fingerprint

    await bus.publish(
        events.approval(plan),
        events.result(plan, "started"),
        events.result(plan),
        events.finished(plan, "verified"),
        events.resolved(issue),
    )
    path = f"/api/incidents/{issue.fingerprint}"
    detail = await gateway.until(path, lambda body: len(body["timeline"]) == len(CHAIN))
    assert types_of(detail) == CHAIN
    assert [e["trace_id"] for e in detail["timeline"][:2]] == [trace_id, trace_id]  # for Jaeger
    assert detail["timeline"][2]["trace_id"] is None  # published without one
    assert detail["state"] == "resolved" and detail["host"] == "web-1"
    (progress,) = detail["plans"]
    assert progress["status"] == "finished" and progress["outcome"] == "verified"
    assert progress["finished"]["outcome"] == "verified"
    assert progress["decision"]["decided_by"] == "someone"
    assert "approved by someone via cli" in detail["timeline"][2]["summary"]
    assert (await gateway.get("/api/approvals")).json() == []

    resolved = (await gateway.get("/api/issues?state=resolved&host=web-1&kind=cpu")).json()
    assert [i["fingerprint"] for i in resolved] == [issue.fingerprint]
    assert (await gateway.get("/api/issues?state=open")).json() == []
    assert (await gateway.get("/api/incidents?severity=warning")).json() == []
    listed = (await gateway.get("/api/incidents?limit=5")).json()
    assert listed[0]["plan_status"] == "finished" and listed[0]["plan_count"] == 1
    assert listed[0]["status"] == "verified" and listed[0]["outcome"] == "verified"
    results = (await gateway.get("/api/results?host=web-1")).json()
    assert [r["plan_id"] for r in results] == [plan.plan_id]


async def test_an_approval_before_its_plan_still_joins_the_timeline(gateway, bus, events):
    issue = events.issue(host="db-1", kind="db_latency", metric="db_latency_seconds")
    plan = events.plan(issue)
    await bus.publish(events.approval(plan, "reject"), issue, plan)
    path = f"/api/incidents/{issue.fingerprint}"
    detail = await gateway.until(path, lambda body: len(body["timeline"]) == 3)
    assert detail["plans"][0]["status"] == "rejected"
    assert (await gateway.get("/api/approvals")).json() == []


async def test_a_restarted_gateway_rebuilds_its_history_from_the_streams(gateway, bus, events):
    issue = events.issue()
    plan = events.plan(issue)
    other = events.issue(host="web-2")
    waiting = events.plan(other)
    await bus.publish(issue, plan, events.approval(plan), events.result(plan), other, waiting)
    path = f"/api/incidents/{issue.fingerprint}"
    before = await gateway.until(path, lambda body: len(body["timeline"]) == 4)
    await gateway.until("/api/approvals", lambda body: len(body) == 1)

    gateway.restart()  # waits until /healthz is 200: the history is read

    after = (await gateway.get(path)).json()
    assert types_of(after) == types_of(before) == CHAIN[:4]
    assert after["plans"] == before["plans"]
    pending = (await gateway.get("/api/approvals")).json()
    assert [p["plan"]["plan_id"] for p in pending] == [waiting.plan_id]


async def test_metrics_per_host_with_history(gateway, bus):
    for value in (10.0, 20.0, 30.0):
        batch = MetricBatch(
            host="web-1",
            collected_at=datetime.now(UTC),
            samples=[
                {"name": "cpu_percent", "value": value, "unit": "%"},
                {"name": "disk_percent", "value": 50.0, "labels": {"mount": "/"}},
            ],
        )
        await bus.publish(batch)
    host = await gateway.until(
        "/api/metrics/web-1?name=cpu_percent",
        lambda body: body["series"] and len(body["series"][0]["history"]) == 3,
    )
    (series,) = host["series"]
    assert series["value"] == 30.0 and series["unit"] == "%"
    assert [point[1] for point in series["history"]] == [10.0, 20.0, 30.0]
    hosts = (await gateway.get("/api/metrics")).json()
    assert [len(h["series"]) for h in hosts] == [2] and hosts[0]["series"][0]["history"] is None
    assert (await gateway.get("/api/metrics/nowhere")).status_code == 404


async def test_planner_model_and_success_rates(gateway, bus):
    kv = await bus.js.create_key_value(bucket="medbay_planner")
    objects = await bus.js.create_object_store("medbay_models")
    description = {
        "version": "model-7",
        "validation_accuracy": 0.86,
        "holdout_outcomes": 20,
        "training_outcomes": 80,
        "trained_at": "2026-01-05T10:00:00+00:00",
        "candidates": {"cpu": ["restart_service", "scale_up"]},
    }
    meta = ObjectMeta(name="model-7", description=json.dumps(description))
    await objects.put("model-7", b"not a real model", meta=meta)
    await kv.put("current_model", b"model-7")
    rates = {
        "actions": {"restart_service": {"successes": 3, "failures": 1, "rate": 0.75}},
        "kinds": {"cpu": {"restart_service": {"successes": 3, "failures": 1, "rate": 0.75}}},
        "targets": {},
    }
    await kv.put("success_rates", json.dumps(rates).encode())

    model = (await gateway.get("/api/model")).json()
    assert model["version"] == "model-7" and model["validation_accuracy"] == 0.86
    assert model["training_outcomes"] == 80 and model["candidates"]["cpu"][1] == "scale_up"
    assert model["success_rates"]["restart_service"]["rate"] == 0.75
    assert model["success_rates_by_kind"]["cpu"]["restart_service"]["successes"] == 3


async def test_service_health_lists_every_service(gateway):
    services = (await gateway.get("/api/services")).json()
    names = [s["service"] for s in services]
    assert set(names) == {"collector", "detector", "planner", "approver", "executor", "gateway"}
    own = services[names.index("gateway")]
    assert own["status"] == "ok" and own["detail"]["service"] == "gateway"
    assert all(s["status"] in ("ok", "unhealthy", "unreachable") for s in services)


async def test_an_executors_own_result_replaces_an_interrupted_one(gateway, bus, events):
    """A replica took the plan over and reported its step interrupted; the executor that
    ran it got through after all: its result and its end are what the incident shows."""
    issue = events.issue()
    plan = events.plan(issue).model_copy(update={"requires_approval": False})
    done = events.result(plan)
    cut_short = done.model_copy(
        update={"event_id": "interrupted-1", "outcome": "interrupted", "verified": None}
    )
    await bus.publish(
        issue,
        plan,
        events.result(plan, "started"),
        cut_short,
        events.finished(plan, "interrupted"),
    )
    path = f"/api/incidents/{issue.fingerprint}"
    detail = await gateway.until(path, lambda body: body["plans"][0]["outcome"] == "interrupted")
    assert detail["plans"][0]["results"][-1]["outcome"] == "interrupted"
    await bus.publish(done, events.finished(plan, "verified"))
    detail = await gateway.until(path, lambda body: body["plans"][0]["outcome"] == "verified")
    (progress,) = detail["plans"]
    assert [r["outcome"] for r in progress["results"]] == [None, "success"]
    assert progress["finished"]["outcome"] == "verified" and detail["status"] == "verified"
    late = cut_short.model_copy(update={"event_id": "interrupted-2"})
    await bus.publish(late, events.alert(plan))  # one stream (RESULTS): read in this order
    detail = await gateway.until(path, lambda body: len(body["plans"][0]["alerts"]) == 1)
    assert detail["plans"][0]["results"][-1]["outcome"] == "success"
