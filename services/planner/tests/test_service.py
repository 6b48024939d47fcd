"""The planner as a real process on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import nats
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from medbay.common.bus import DL_REASON, declare_streams, make_broker, publish_event
from medbay.common.events import ActionRequested, Event, Plan
from medbay.common.streams import DEADLETTER, ISSUES, REQUESTS, RESULTS, StreamSpec
from medbay.planner.planning import plan_id_for
from medbay.planner.store import CURRENT_MODEL, ModelStore, read_success_rates
from tests.helpers import headers

if TYPE_CHECKING:
    from conftest import ServiceProcess, StartService

STARTUP_SECONDS = 90
"""Generous: importing scikit-learn takes seconds on a busy machine."""


def start_planner(services: StartService, config: Path) -> ServiceProcess:
    planner = services("planner", "--config", str(config), wait_healthy=False)
    planner.wait_healthy(STARTUP_SECONDS)
    return planner


async def upstream(url: str) -> NatsBroker:
    """A broker standing in for the detector and executor, which own these streams."""
    broker = make_broker("test", url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [ISSUES, RESULTS, DEADLETTER])
    return broker


async def publish(broker: NatsBroker, event: Event, stream: StreamSpec = ISSUES) -> None:
    await publish_event(broker, event, stream=stream)


async def read(js: JetStreamContext, stream: str, want: int, timeout: float = 30.0) -> list[Msg]:
    """The first ``want`` messages of ``stream`` (fewer if they do not come in time)."""
    sub = await js.pull_subscribe(f"medbay.{stream.lower()}.>", stream=stream)
    got: list[Msg] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        try:
            msgs = await sub.fetch(want - len(got), timeout=1)
        except TimeoutError:  # nats-py raises its own or the built-in one
            continue
        for msg in msgs:
            await msg.ack()
        got += msgs
    await sub.unsubscribe()
    return got


async def test_issues_become_plans_and_bad_ones_are_dead_lettered(
    nats_server, services, issue, tmp_path: Path
):
    config = tmp_path / "planner.yaml"
    config.write_text(
        "action_targets: {clear_cache: redis}\n"
        "host_targets: {'app-*': {restart_service: api}}\n"
        "require_approval: {hosts: ['db-*']}\n"
    )
    broker = await upstream(nats_server.url)
    planner = start_planner(services, config)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        good = issue("memory", host="app-1")
        data = good.model_dump(mode="json")
        bad = {
            "malformed": b'{"type": "issue.opened", "host": ',
            "version": json.dumps(data | {"schema_version": 2}).encode(),
            "kind": json.dumps(data | {"kind": "weather"}).encode(),
            "nan": json.dumps(data | {"value": math.nan}).encode(),
        }
        for payload in bad.values():
            await js.publish("medbay.issues.opened.app-1", payload, timeout=5)
        await publish(broker, good)
        # the same issue event again (as after a redelivery): no second plan
        await js.publish(
            "medbay.issues.opened.app-1",
            good.model_dump_json().encode(),
            headers={"Nats-Msg-Id": "another-copy"},
            timeout=5,
        )
        await publish(broker, issue("cpu", host="app-1", severity="warning", previous="critical"))
        escalated = issue("disk", host="db-1", severity="critical", previous="warning")
        await publish(broker, escalated)
        request = ActionRequested(
            host="web-1", action="reboot", target="web-1", requested_by="ada", channel="cli"
        )
        await publish(broker, request, stream=REQUESTS)

        plans = [Plan.model_validate_json(m.data) for m in await read(js, "PLANS", 3)]
        by_event = {p.issue_event_id: p for p in plans}
        assert set(by_event) == {good.event_id, escalated.event_id, request.event_id}
        # issues are handled in order: the copy and the de-escalation made no plan
        assert (await js.stream_info("PLANS")).state.messages == 3
        memory, disk = by_event[good.event_id], by_event[escalated.event_id]
        assert memory.plan_id == plan_id_for(good.event_id)
        assert [(s.action, s.target) for s in memory.steps] == [
            ("clear_cache", "redis"),
            ("restart_service", "api"),
        ]
        assert memory.model_version == "rules-v1" and memory.confidence == 0.7
        assert memory.estimated_seconds == 40 and memory.risk == "low"
        assert not memory.requires_approval
        assert memory.features["kind:memory"] == 1.0 and memory.features["value"] == good.value
        assert [s.action for s in disk.steps] == ["rotate_logs", "cleanup_disk"]
        assert disk.requires_approval and "db-*" in disk.reason
        manual = by_event[request.event_id]
        assert [(s.action, s.target) for s in manual.steps] == [("reboot", "web-1")]
        assert manual.model_version == "manual" and manual.requires_approval

        letters = await read(js, "DEADLETTER", len(bad))
        reasons = [headers(m)[DL_REASON] for m in letters]
        assert [m.data for m in letters] == list(bad.values())
        assert "Invalid JSON" in reasons[0]
        assert "schema_version" in reasons[1]
        assert "kind" in reasons[2]
        assert "value: Input should be a finite number" in reasons[3]
        assert planner.proc is not None and planner.proc.poll() is None
    finally:
        await nc.close()
        await broker.stop()


async def test_a_planted_pickle_is_refused_unrun_and_the_rules_plan(
    nats_server, services, issue, pickle_bomb, tmp_path: Path
):
    marker = tmp_path / "pickle-ran"
    config = tmp_path / "planner.yaml"
    config.write_text("host_targets: {'app-*': {restart_service: api}}\n")
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    store = await ModelStore.open(js)
    await store.objects.put("rf-planted", pickle_bomb(marker))
    await store.kv.put(CURRENT_MODEL, b"rf-planted")
    broker = await upstream(nats_server.url)
    planner = start_planner(services, config)
    try:
        good = issue("memory", host="app-1")
        await publish(broker, good)
        [plan] = [Plan.model_validate_json(m.data) for m in await read(js, "PLANS", 1)]
        assert plan.issue_event_id == good.event_id and plan.model_version == "rules-v1"
        assert not marker.exists()
        refusals = [line for line in planner.logs().splitlines() if "rf-planted" in line]
        assert len(refusals) == 1 and "current model rf-planted refused: " in refusals[0]
        assert "no model yet: planning by rules" in planner.logs()
    finally:
        await nc.close()
        await broker.stop()


async def test_outcomes_train_a_model_that_survives_a_restart(
    nats_server, services, issue, result, tmp_path: Path
):
    config = tmp_path / "planner.yaml"
    config.write_text(
        "min_outcomes: 20\nretrain_every: 20\n"
        "host_targets:\n"
        "  'cache-*': {clear_cache: redis, restart_service: redis}\n"
        "  'app-*': {clear_cache: app-cache, restart_service: api}\n"
    )
    broker = await upstream(nats_server.url)
    planner = start_planner(services, config)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        hosts = [f"cache-{i}" for i in range(8)] + [f"app-{i}" for i in range(8)]
        for n, host in enumerate(hosts):
            await publish(broker, issue("memory", host=host, n=n))
        plans = [Plan.model_validate_json(m.data) for m in await read(js, "PLANS", len(hosts))]
        assert len(plans) == len(hosts)
        # clearing the cache works on cache hosts; app hosts need the restart
        for plan in plans:
            on_cache = plan.host.startswith("cache")
            steps = plan.steps[:1] if on_cache else plan.steps
            for index, step in enumerate(steps):
                works = on_cache or step.action == "restart_service"
                outcome = "success" if works else "failure"
                done = result(
                    plan.plan_id, index, step.action, step.target, host=plan.host, outcome=outcome
                )
                await publish(broker, done, stream=RESULTS)

        # 24 outcomes: a model is trained after 20 of them, in the background
        kv = await js.key_value("medbay_planner")
        version, rates = None, None
        for _ in range(120):
            try:
                current = await kv.get(CURRENT_MODEL)
                assert current.value is not None
                version = current.value.decode()
                rates = await read_success_rates(js)
            except nats.js.errors.KeyNotFoundError:
                pass
            if version and rates and rates["actions"]["clear_cache"]["failures"] == 8:
                break
            await asyncio.sleep(0.5)
        assert version, planner.logs()[-3000:]
        assert rates is not None
        assert rates["actions"]["clear_cache"] == {"successes": 8, "failures": 8, "rate": 0.5}
        assert rates["actions"]["restart_service"] == {"successes": 8, "failures": 0, "rate": 1.0}
        store = await ModelStore.open(js)
        info = await store.objects.get_info(version)
        assert info.description is not None
        summary = json.loads(info.description)
        assert summary["version"] == version and summary["validation_accuracy"] is not None
        assert summary["candidates"] == {"memory": ["restart_service", "clear_cache"]}
        loaded = await store.load_current()
        assert loaded is not None and loaded.version == version
        assert (await store.load(version)).validation_accuracy == summary["validation_accuracy"]

        assert planner.stop() == 0
        planner.start(wait_healthy=False)
        planner.wait_healthy(STARTUP_SECONDS)
        # rebuilt from PLANS and RESULTS, and planning with the stored model
        with urllib.request.urlopen(f"http://127.0.0.1:{planner.port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'medbay_planner_action_success_rate{action="clear_cache",kind="memory"} 0.5' in (
            metrics
        )
        fresh = issue("memory", host="cache-3", n=100)
        await publish(broker, fresh)
        later = [Plan.model_validate_json(m.data) for m in await read(js, "PLANS", 17)]
        assert later[-1].issue_event_id == fresh.event_id
        assert later[-1].model_version == version
        assert later[-1].steps[0].action == "clear_cache"
    finally:
        await nc.close()
        await broker.stop()
