"""The planner as a real process on a real nats-server; the tests stand in for the
detector and the executor (whose target catalog they write)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from prometheus_client import CollectorRegistry

from medbay.common.bus import DL_REASON, declare_streams, make_broker, publish_event
from medbay.common.events import ActionRequested, Event, IssueResolved, Plan, issue_fingerprint
from medbay.common.records import EXECUTOR_RAILS, TARGET_CATALOG_KEY, TargetCatalog
from medbay.common.streams import DEADLETTER, ISSUES, REQUESTS, RESULTS, StreamSpec
from medbay.planner.executor_rails import ExecutorRails
from medbay.planner.planning import plan_id_for
from medbay.planner.store import CURRENT_MODEL, ModelStore, read_success_rates
from services.planner.tests.conftest import Targets, make_catalog
from tests.helpers import headers

if TYPE_CHECKING:
    from conftest import ServiceProcess, StartService
    from medbay.planner.service import PlannerService

STARTUP_SECONDS = 90
"""Generous: importing scikit-learn takes seconds on a busy machine."""


def start_planner(services: StartService, config: Path) -> ServiceProcess:
    planner = services("planner", "--config", str(config), wait_healthy=False)
    planner.wait_healthy(STARTUP_SECONDS)
    return planner


async def write_catalog(js: JetStreamContext, targets: Targets) -> None:
    """What the executor does at start: its targets, in its KV bucket."""
    kv = await js.create_key_value(KeyValueConfig(bucket=EXECUTOR_RAILS.name))
    await kv.put(TARGET_CATALOG_KEY, make_catalog(targets).model_dump_json().encode())


def metrics(planner: ServiceProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{planner.port}/metrics", timeout=5) as r:
        text: str = r.read().decode()
    return text


def healthz(planner: ServiceProcess) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{planner.port}/healthz", timeout=5) as r:
        body: dict[str, object] = json.loads(r.read())
    return body


async def until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"no {what} in {timeout} s"
        await asyncio.sleep(0.2)


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
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await write_catalog(
        js,
        {
            "redis": ["clear_cache"],
            "api": ["restart_service"],
            "logs": (["rotate_logs", "cleanup_disk"], ["/var/log"]),
            "oncall": ["alert_human"],
        },
    )
    planner = start_planner(services, config)
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
        # a service that is not a target of the executor: not planned
        await publish(broker, issue("service_down", host="app-1"))
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
        assert [(s.action, s.target) for s in disk.steps] == [
            ("rotate_logs", "logs"),
            ("cleanup_disk", "logs"),
        ]
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
        skipped = 'medbay_planner_events_skipped_total{reason="no_target"} 1.0'
        await until(lambda: skipped in metrics(planner), "no_target count")
        assert (
            "not planned: service_down on app-1 (web): restart_service dropped: the configured "
            "api is not web and does not cover it"
        ) in planner.logs()
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
    await write_catalog(js, {"api": ["restart_service"], "oncall": ["alert_human"]})
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
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await write_catalog(
        js,
        {
            "redis": ["clear_cache", "restart_service"],
            "app-cache": ["clear_cache"],
            "api": ["restart_service"],
        },
    )
    planner = start_planner(services, config)
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
        assert 'medbay_planner_action_success_rate{action="clear_cache",kind="memory"} 0.5' in (
            metrics(planner)
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


async def test_nothing_is_planned_until_the_executor_writes_its_catalog(
    nats_server, services, issue, tmp_path: Path
):
    config = tmp_path / "planner.yaml"
    config.write_text("catalog_refresh_seconds: 0.2\nmax_event_age_seconds: 60\n")
    broker = await upstream(nats_server.url)
    planner = start_planner(services, config)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        waiting = "waiting for the executor's target catalog"
        await until(lambda: waiting in planner.logs(), "waiting")
        health = healthz(planner)["info"]
        assert isinstance(health, dict) and health["role"] == "active"
        assert health["target_catalog"] == "none yet: waiting for the executor to write it"
        recent = issue("disk", host="db-1")
        stale = issue("disk", host="db-2", timestamp=datetime.now(UTC) - timedelta(minutes=5))
        await publish(broker, recent)
        await publish(broker, stale)
        # they wait in ISSUES: the planner does not even fetch them
        await asyncio.sleep(1.0)  # five more reads of the catalog
        info = await js.consumer_info("ISSUES", "planner")
        assert (info.num_pending, info.num_ack_pending) == (2, 0)
        assert (await js.stream_info("PLANS")).state.messages == 0

        await write_catalog(js, {"logs": (["rotate_logs", "cleanup_disk"], ["/var/log"])})
        [plan] = [Plan.model_validate_json(m.data) for m in await read(js, "PLANS", 1)]
        assert plan.issue_event_id == recent.event_id
        assert [s.target for s in plan.steps] == ["logs", "logs"]
        skipped = 'medbay_planner_events_skipped_total{reason="stale"} 1.0'
        await until(lambda: skipped in metrics(planner), "stale count")
        assert planner.logs().count(waiting) == 1
        assert "target catalog of the executor (live, written" in planner.logs()
        catalog = healthz(planner)["info"]
        assert isinstance(catalog, dict) and catalog["target_catalog"]["targets"] == 1
    finally:
        await nc.close()
        await broker.stop()


class CountedRails(ExecutorRails):
    """The planner's reader of the executor's bucket, counting its reads of the catalog."""

    reads = 0

    async def catalog(self) -> TargetCatalog | None:
        try:
            return await super().catalog()
        finally:
            self.reads += 1


def catalog_watcher(monkeypatch: pytest.MonkeyPatch, js: JetStreamContext) -> PlannerService:
    """The planner service in this process, reading the catalog every 0.05 s."""
    from medbay.common import runtime
    from medbay.planner.config import PlannerConfig
    from medbay.planner.service import PlannerService

    monkeypatch.setattr(runtime, "setup_logging", lambda *args: None)  # keep caplog's handler
    monkeypatch.setattr(runtime, "setup_tracing", lambda *args: None)
    service = PlannerService(
        runtime.ServiceRuntime("planner"), PlannerConfig(catalog_refresh_seconds=0.05)
    )
    service.rails = CountedRails(js)
    return service


def catalog_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if "catalog" in r.getMessage()]


async def test_a_missing_catalog_is_only_info_within_the_grace_period_but_errors_warn(
    nats_server, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="medbay.planner")
    nc = await nats.connect(nats_server.url)
    service = catalog_watcher(monkeypatch, nc.jetstream())
    rails = service.rails
    assert isinstance(rails, CountedRails)
    watch = asyncio.create_task(service.watch_catalog(grace_seconds=3600))
    try:
        await until(lambda: rails.reads >= 5, "reads of the catalog")
        [(level, message)] = catalog_logs(caplog)
        assert level == "INFO"
        assert message.startswith(
            f"waiting for the executor's target catalog (key {TARGET_CATALOG_KEY} of KV "
            f"bucket {EXECUTOR_RAILS.name}; nothing is planned until it is written"
        )
        await nc.close()  # NATS gone: reading the catalog fails, grace period or not
        await until(lambda: len(catalog_logs(caplog)) > 1, "error reading the catalog")
        level, message = catalog_logs(caplog)[1]
        assert level == "WARNING"
        assert message.startswith("could not read the executor's target catalog")
    finally:
        watch.cancel()
        await nc.close()


async def test_a_catalog_still_missing_after_the_grace_period_is_warned_about_once(
    nats_server, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="medbay.planner")
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    service = catalog_watcher(monkeypatch, js)
    rails = service.rails
    assert isinstance(rails, CountedRails)
    watch = asyncio.create_task(service.watch_catalog(grace_seconds=0))
    try:
        await until(lambda: rails.reads >= 5, "reads of the catalog")
        [(level, message)] = catalog_logs(caplog)
        assert level == "WARNING"
        assert message.startswith(
            "still no target catalog from the executor after 0 s: start the executor "
            "(medbay run executor), or check in its log that it can write its KV bucket "
            f"(key {TARGET_CATALOG_KEY} of KV bucket {EXECUTOR_RAILS.name}; "
        )
        assert not service.catalog_known.is_set()

        await write_catalog(js, {"logs": (["rotate_logs"], ["/var/log"])})
        await asyncio.wait_for(service.wait_for_catalog(), 30)
        level, message = catalog_logs(caplog)[-1]
        assert (level, message.split(" (")[0]) == ("INFO", "target catalog of the executor")
        assert len(catalog_logs(caplog)) == 2
    finally:
        watch.cancel()
        await nc.close()


async def test_an_initial_model_is_adopted_when_there_is_none(
    nats_server, services, tmp_path: Path
):
    from medbay.planner.config import PlannerConfig
    from medbay.planner.learning import TrainingRow
    from medbay.planner.model import fit, split
    from medbay.planner.modelfile import write_file

    def lab_model(version: str) -> Path:
        config = PlannerConfig(min_outcomes=20, trained_on="lab")
        rows = [
            TrainingRow(
                f"{version}-{n}",
                "memory",
                "clear_cache" if n % 2 else "restart_service",
                "redis",
                "warning",
                {"value": 80.0 + n % 20, "kind:memory": 1.0},
                n % 3 != 0,
            )
            for n in range(100)
        ]
        train, held = split(rows, 0.2)
        path = tmp_path / f"{version}.zip"
        write_file(fit(train, config, holdout=held, version=version), path)
        return path

    config = tmp_path / "planner.yaml"
    config.write_text(f"initial_model: {lab_model('rf-lab-1')}\n")
    broker = await upstream(nats_server.url)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    planner = start_planner(services, config)
    try:
        store = await ModelStore.open(js)
        assert await store.current_version() == "rf-lab-1"
        assert (await store.load("rf-lab-1")).trained_on == "lab"
        assert "adopted initial model rf-lab-1 (trained on lab" in planner.logs()
        assert "there was no current model" in planner.logs()

        # another file, with a current model: judged on held-out outcomes, of which
        # there are none yet, so the current model stays; each file is judged once
        assert planner.stop() == 0
        config.write_text(f"initial_model: {lab_model('rf-lab-2')}\n")
        for _ in range(2):
            planner.start(wait_healthy=False)
            planner.wait_healthy(STARTUP_SECONDS)
            assert planner.stop() == 0
        assert await store.current_version() == "rf-lab-1"
        logs = planner.logs()
        assert logs.count("initial model rf-lab-2 not adopted: it validates at None") == 1
        assert logs.count("initial model rf-lab-2 was judged before; keeping rf-lab-1") == 1
    finally:
        await nc.close()
        await broker.stop()


async def test_one_problem_seen_by_two_rules_gets_one_plan_while_the_first_issue_is_open(
    nats_server, services, issue, tmp_path: Path
):
    """An error burst crosses the error-rate and the error-share rule: two issues of
    one problem. Only the first is planned; the second, still open the grace period
    after the first resolved, is planned then."""
    config = tmp_path / "planner.yaml"
    config.write_text("problem_grace_seconds: 1\n")
    broker = await upstream(nats_server.url)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await write_catalog(js, {"shop": ["restart_service"], "oncall": ["alert_human"]})
    planner = start_planner(services, config)
    try:
        by_rate = issue("error_rate", value=16.0)
        share = "span_service_error_ratio"
        by_share = issue(
            "error_rate",
            n=1,
            metric=share,
            value=0.7,
            threshold=0.5,
            fingerprint=issue_fingerprint("h1", "error_rate", share, {"service": "shop"}),
        )
        await publish(broker, by_rate)
        await publish(broker, by_share)
        (first,) = [Plan.model_validate_json(m.data) for m in await read(js, "PLANS", 1)]
        assert first.issue_event_id == by_rate.event_id
        await until(lambda: 'reason="covered"} 1.0' in metrics(planner), "the second issue waiting")
        assert (await js.stream_info("PLANS")).state.messages == 1

        resolved = IssueResolved.model_validate(
            by_rate.model_dump() | {"type": "issue.resolved", "event_id": "resolved-1"}
        )
        await publish(broker, resolved)
        plans = [Plan.model_validate_json(m.data) for m in await read(js, "PLANS", 2)]
        assert [p.issue_event_id for p in plans] == [by_rate.event_id, by_share.event_id]
        assert [(s.action, s.target) for s in plans[1].steps] == [("restart_service", "shop")]
    finally:
        await broker.stop()
        await nc.close()
