"""The executor as a real process on a real nats-server, fed plans and approvals:
approval gating, at-most-once steps under redelivery and racing replicas, the
allowlist, dry-run, the catalog of targets it writes, how every plan ends (its
``PlanFinished`` and plan-book outcome), alerts for the approver's Telegram bot,
and the flap breaker with its escalation (once per opening) and reset, down to a
crash loop of a real service watched by a real collector."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import nats
import psutil
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from medbay.common.bus import declare_streams, event_headers, make_broker
from medbay.common.events import (
    ActionResult,
    AlertRaised,
    Approval,
    Plan,
    PlanFinished,
    PlanStep,
    new_event_id,
)
from medbay.common.records import (
    EXECUTOR_RAILS,
    PLAN_BOOK,
    PlanRecord,
    read_plan,
    read_target_catalog,
)
from medbay.common.streams import PLANS, plan_subject, subject_for
from tests import factories
from tests.factories import step
from tests.helpers import free_port, wait_port

if TYPE_CHECKING:
    from conftest import NatsServer, StartService

WAIT = 60.0
"""Seconds to wait for a result: generous, for a busy shared machine."""


def counting_target(tmp_path: Path, name: str) -> str:
    """A process target whose every start appends a line to ``<name>.starts``."""
    starts = tmp_path / f"{name}.starts"
    script = f"echo start >> {starts}; exec sleep 300"
    command = json.dumps(["sh", "-c", script])
    return f"  {name}: {{kind: process, command: {command}, pidfile: '{tmp_path / name}.pid'}}\n"


def starts(tmp_path: Path, name: str) -> int:
    path = tmp_path / f"{name}.starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def alerts(tmp_path: Path) -> str:
    """Everything the escalation notifier ``oncall`` was given."""
    path = tmp_path / "alerts.txt"
    return path.read_text() if path.exists() else ""


def write_config(
    tmp_path: Path, *, mode: str = "live", flap_max: int = 3, escalate_to: str = "oncall"
) -> Path:
    tried = tmp_path / "flaky.tried"
    flaky = f"[ -e {tried} ] || {{ touch {tried}; exit 1; }}; cat >> {tmp_path / 'alerts.txt'}"
    text = (
        f"mode: {mode}\n"
        "verify_window_seconds: 0.5\n"
        f"escalate_to: {escalate_to}\n"
        "targets:\n"
        + counting_target(tmp_path, "web")
        + counting_target(tmp_path, "api")
        + f"  broken: {{kind: process, command: [sh, -c, 'exit 3'], start_check_seconds: 0.5,"
        f" pidfile: '{tmp_path / 'broken.pid'}'}}\n"
        f"  slow: {{kind: process, command: [sleep, '300'], start_check_seconds: 60,"
        f" pidfile: '{tmp_path / 'slow.pid'}'}}\n"
        f"  oncall: {{kind: notifier, via: command,"
        f" command: [sh, -c, 'cat >> {tmp_path / 'alerts.txt'}']}}\n"
        "  bot: {kind: notifier, via: telegram}\n"
        f"  flaky: {{kind: notifier, via: command, command: [sh, -c, {json.dumps(flaky)}]}}\n"
        "  mute: {kind: notifier, via: log}\n"
        "  cache: {kind: redis, url: 'redis://127.0.0.1:1/0', covers: [sessions]}\n"
        "  missing: {kind: process, command: [/nonexistent/program]}\n"
        "safety:\n"
        "  allow: {restart_service: [web, broken, slow, missing], alert_human: [oncall, bot]}\n"
        "  cooldown_seconds: 0\n"
        f"  flap: {{max_actions: {flap_max}, window_seconds: 900}}\n"
    )
    path = tmp_path / "executor.yaml"
    path.write_text(text)
    return path


def make_plan(
    target: str = "web",
    *,
    approval: bool = False,
    plan_id: str | None = None,
    steps: tuple[PlanStep, ...] = (),
    **changes: object,
) -> Plan:
    return factories.plan(
        *(steps or (step("restart_service", target),)),
        plan_id=plan_id or new_event_id(),
        host="test-host",
        labels={"service": target},
        requires_approval=approval,
        **changes,
    )


class Bus:
    """Publishes plans (each copy a new message, as a redelivery would be) and
    collects what the executor publishes: step results, plan ends and alerts."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.results: list[ActionResult] = []
        self.ends: list[PlanFinished] = []
        self.alerts: list[AlertRaised] = []

    async def start(self) -> None:
        await self.nc.subscribe("medbay.results.>", cb=self._on_result)
        await self.nc.subscribe("medbay.outcomes.>", cb=self._on_end)
        await self.nc.subscribe("medbay.alerts.>", cb=self._on_alert)

    async def _on_result(self, msg: Msg) -> None:
        self.results.append(ActionResult.model_validate_json(msg.data))

    async def _on_end(self, msg: Msg) -> None:
        self.ends.append(PlanFinished.model_validate_json(msg.data))

    async def _on_alert(self, msg: Msg) -> None:
        self.alerts.append(AlertRaised.model_validate_json(msg.data))

    async def publish_plan(self, plan: Plan) -> None:
        headers = {**event_headers(plan), "Nats-Msg-Id": new_event_id()}
        await self.js.publish(plan_subject(plan), plan.model_dump_json().encode(), headers=headers)

    async def approve(
        self,
        plan_id: str,
        decision: Literal["approve", "reject"] = "approve",
        channel: Literal["cli", "expiry"] = "cli",
        reason: str = "",
    ) -> None:
        approval = Approval(
            plan_id=plan_id,
            decision=decision,
            decided_by="tester" if channel == "cli" else "expiry",
            channel=channel,
            reason=reason,
        )
        await self.js.publish(
            subject_for(approval),
            approval.model_dump_json().encode(),
            headers=event_headers(approval),
        )

    def finished(self, plan_id: str) -> list[ActionResult]:
        return sorted(
            (r for r in self.results if r.plan_id == plan_id and r.status == "finished"),
            key=lambda r: r.step_index,
        )

    async def wait_finished(self, plan_id: str, count: int = 1, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.finished(plan_id)) < count:
            assert time.monotonic() < deadline, f"results so far: {self.results}"
            await asyncio.sleep(0.05)

    async def wait_end(self, plan_id: str, timeout: float = WAIT) -> PlanFinished:
        """How the plan ended (its one PlanFinished)."""
        deadline = time.monotonic() + timeout
        while not (ends := [e for e in self.ends if e.plan_id == plan_id]):
            assert time.monotonic() < deadline, f"no end of {plan_id}; results: {self.results}"
            await asyncio.sleep(0.05)
        return ends[0]

    async def record(self, plan_id: str, timeout: float = WAIT) -> PlanRecord:
        """The plan's record in the executor's plan book, once it has an outcome: the
        executor announces the end (PlanFinished) before it writes the record."""
        book = await self.js.key_value(PLAN_BOOK.name)
        deadline = time.monotonic() + timeout
        while True:
            record, _ = await read_plan(book, plan_id)
            if record is not None and record.outcome is not None:
                return record
            assert time.monotonic() < deadline, f"{plan_id} has no outcome: {record}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    broker = make_broker("test", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [PLANS])  # the planner's stream; no planner here
    await broker.stop()
    nc = await nats.connect(nats_server.url)
    b = Bus(nc)
    await b.start()
    yield b
    await nc.close()


def kill_started(tmp_path: Path) -> None:
    for pidfile in tmp_path.glob("*.pid"):
        with contextlib.suppress(ValueError, psutil.Error):
            psutil.Process(int(pidfile.read_text())).kill()


async def test_the_catalog_of_targets_is_written_at_start(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    catalog = await read_target_catalog(await bus.js.key_value(EXECUTOR_RAILS.name))
    assert catalog is not None and catalog.mode == "live"
    assert catalog.targets["web"].kind == "process"
    assert catalog.targets["web"].actions == ["restart_service"]
    assert catalog.targets["api"].actions == []  # configured, not allowlisted
    assert catalog.targets["bot"].actions == ["alert_human"]
    assert catalog.targets["cache"].covers == ["sessions"]
    assert catalog.resolve("restart_service", "web") == "web"
    assert catalog.resolve("restart_service", "api") is None


async def test_plan_runs_live_and_a_redelivered_plan_runs_once(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    try:
        plan = make_plan()
        await bus.publish_plan(plan)
        await bus.publish_plan(plan)  # a second delivery of the same plan
        end = await bus.wait_end(plan.plan_id)
        await asyncio.sleep(1.5)
        assert starts(tmp_path, "web") == 1
        step, alert = bus.finished(plan.plan_id)
        assert step.outcome == "success" and not step.dry_run
        assert step.verified is False  # no metrics here: the fix cannot be seen
        assert end.outcome == "not_fixed" and end.steps_run == 1 and not end.dry_run
        assert alert.action == "alert_human" and alert.target == "oncall"
        assert alert.outcome == "success" and end.escalated
        assert "escalated to oncall" in end.detail
        assert [e.plan_id for e in bus.ends].count(plan.plan_id) == 1
        record = await bus.record(plan.plan_id)
        assert (record.state, record.outcome) == ("done", "not_fixed")
    finally:
        kill_started(tmp_path)


async def test_two_racing_executors_run_a_step_once(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path, flap_max=100))
    services("executor", "--config", config)
    services("executor", "--config", config)
    try:
        plans = [make_plan() for _ in range(5)]
        for plan in plans:
            for _ in range(3):  # three copies of each, spread over both executors
                await bus.publish_plan(plan)
        for plan in plans:
            await bus.wait_end(plan.plan_id)
        await asyncio.sleep(1.5)
        outcomes = [(r.plan_id[:6], r.step_index, r.outcome, r.output) for r in bus.results]
        assert starts(tmp_path, "web") == len(plans), outcomes
        assert {e.outcome for e in bus.ends} == {"not_fixed"}
    finally:
        kill_started(tmp_path)


async def test_target_outside_the_allowlist_is_refused_and_untouched(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    plan = make_plan("api")
    await bus.publish_plan(plan)
    end = await bus.wait_end(plan.plan_id)
    [result] = bus.finished(plan.plan_id)
    assert result.outcome == "refused"
    assert "api" in result.output and "allow" in result.output
    assert starts(tmp_path, "api") == 0
    assert (end.outcome, end.steps_run, end.escalated) == ("refused", 0, False)
    assert "step 1 (restart_service api) refused: target 'api' is not allowlisted" in end.detail
    assert alerts(tmp_path) == ""  # the executor chose not to act: nobody is paged for it


async def test_dry_run_reports_and_touches_nothing(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path, mode="dry-run")))
    plan = make_plan()
    await bus.publish_plan(plan)
    end = await bus.wait_end(plan.plan_id)
    [result] = bus.finished(plan.plan_id)
    assert result.outcome == "dry_run" and result.dry_run
    assert "would" in result.output.lower()
    assert starts(tmp_path, "web") == 0
    assert (end.outcome, end.dry_run, end.escalated) == ("dry_run", True, False)

    doomed = make_plan(steps=(step("restart_service", "missing"), step("alert_human", "bot")))
    await bus.publish_plan(doomed)
    end = await bus.wait_end(doomed.plan_id)
    would_fail, alert = bus.finished(doomed.plan_id)
    assert would_fail.outcome == "failure" and would_fail.dry_run  # never reported as fine
    assert "/nonexistent/program is not an executable file" in would_fail.output
    assert alert.outcome == "dry_run" and "would hand the alert" in alert.output
    assert (end.outcome, end.escalated) == ("dry_run", False)
    assert "step 1 (restart_service missing) would fail: cannot start the command" in end.detail
    assert bus.alerts == []  # nothing handed to the approver's bot in dry-run


async def test_approval_gates_a_plan_and_is_decided_once(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    try:
        rejected, approved = make_plan(approval=True), make_plan(approval=True)
        await bus.publish_plan(rejected)
        await bus.publish_plan(approved)
        await asyncio.sleep(1.0)
        assert starts(tmp_path, "web") == 0  # both wait for a person
        await bus.approve(rejected.plan_id, "reject", reason="not now")
        await bus.approve(approved.plan_id)
        await bus.approve(approved.plan_id)  # a second click changes nothing
        await bus.wait_finished(approved.plan_id)
        end = await bus.wait_end(rejected.plan_id)
        assert (end.outcome, end.steps_run, end.escalated) == ("rejected", 0, False)
        assert end.detail == "rejected by tester (cli): not now"
        record = await bus.record(rejected.plan_id)
        assert (record.state, record.outcome) == ("rejected", "rejected")
        await asyncio.sleep(1.0)
        assert starts(tmp_path, "web") == 1
        assert bus.finished(rejected.plan_id) == []

        early = make_plan(approval=True)  # the approval overtakes its plan
        await bus.approve(early.plan_id)
        await asyncio.sleep(0.5)
        await bus.publish_plan(early)
        await bus.wait_finished(early.plan_id)
        assert starts(tmp_path, "web") == 2

        early_no = make_plan(approval=True)  # so does a rejection
        await bus.approve(early_no.plan_id, "reject")
        await asyncio.sleep(0.5)
        await bus.publish_plan(early_no)
        assert (await bus.wait_end(early_no.plan_id)).outcome == "rejected"
    finally:
        kill_started(tmp_path)


async def test_a_plan_nobody_decided_on_expires_and_people_are_told(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path, escalate_to="bot")))
    plan = make_plan(approval=True)
    await bus.publish_plan(plan)
    await asyncio.sleep(1.0)
    await bus.approve(plan.plan_id, "reject", channel="expiry", reason="not decided within 10 min")
    end = await bus.wait_end(plan.plan_id)
    assert (end.outcome, end.steps_run, end.escalated) == ("expired", 0, True)
    assert "nobody decided on the plan in time: not decided within 10 min" in end.detail
    [alert] = bus.alerts  # through the approver's Telegram bot
    assert (alert.plan_id, alert.target) == (plan.plan_id, "bot")
    assert alert.message.startswith(
        "Medbay: service_down on test-host needs a person: nobody decided on the plan in time"
    )
    assert f"Nothing was run. The plan ({plan.plan_id}) was:\n  1. restart_service web" in (
        alert.message
    )
    [escalation] = bus.finished(plan.plan_id)
    assert escalation.output.startswith("handed the alert to the approver's Telegram bot")
    assert starts(tmp_path, "web") == 0
    record = await bus.record(plan.plan_id)
    assert (record.state, record.outcome) == ("rejected", "expired")


async def test_a_plan_too_old_to_run_expires_untouched(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    stale = make_plan(timestamp=datetime.now(UTC) - timedelta(hours=1))
    await bus.publish_plan(stale)
    end = await bus.wait_end(stale.plan_id)
    assert (end.outcome, end.steps_run, end.escalated) == ("expired", 0, False)
    assert re.fullmatch(
        r"not run: it was \d+ s old when it arrived \(max_plan_age_seconds 900\); "
        r"the situation has moved on",
        end.detail,
    )
    record = await bus.record(stale.plan_id)
    assert (record.state, record.outcome) == ("done", "expired")
    await bus.publish_plan(stale)  # a redelivery changes nothing
    await asyncio.sleep(1.0)
    assert [e.plan_id for e in bus.ends] == [stale.plan_id]
    assert starts(tmp_path, "web") == 0 and bus.finished(stale.plan_id) == []


async def test_a_step_that_fails_ends_the_plan_failed_and_escalated(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    plan = make_plan("broken")
    await bus.publish_plan(plan)
    end = await bus.wait_end(plan.plan_id)
    step_result, alert = bus.finished(plan.plan_id)
    assert step_result.outcome == "failure" and "exited within 0.5 s" in step_result.output
    assert (end.outcome, end.steps_run, end.escalated) == ("failed", 1, True)
    assert alert.outcome == "success"
    text = alerts(tmp_path)
    assert "service_down on test-host needs a person: every step failed." in text
    assert 'Issue: service_up{service="broken"} = 0, below its threshold 0.5 (critical).' in text
    assert "  1. restart_service broken: failure: " in text


async def test_alerts_for_the_approvers_bot_and_a_refused_alert(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    plan = make_plan(steps=(step("alert_human", "bot"),), value=0.0)
    await bus.publish_plan(plan)
    end = await bus.wait_end(plan.plan_id)
    [result] = bus.finished(plan.plan_id)
    assert result.outcome == "success"
    assert result.output.startswith("handed the alert to the approver's Telegram bot: ")
    assert (end.outcome, end.steps_run, end.escalated) == ("alerted", 1, True)
    [alert] = bus.alerts
    assert (alert.plan_id, alert.target, alert.host) == (plan.plan_id, "bot", "test-host")
    assert alert.issue_fingerprint == plan.issue_fingerprint
    assert alert.event_id == alert.alert_id
    assert "service_down on test-host needs a person: the plan asks for one" in alert.message
    assert 'service_up{service="web"} = 0, below its threshold 0.5' in alert.message

    again = make_plan(steps=(step("alert_human", "bot"),))
    await bus.publish_plan(again)
    await bus.wait_end(again.plan_id)
    assert len({a.alert_id for a in bus.alerts}) == 2  # one id per plan step

    refused = make_plan(steps=(step("alert_human", "mute"),))  # not allowlisted
    await bus.publish_plan(refused)
    end = await bus.wait_end(refused.plan_id)
    first, escalation = bus.finished(refused.plan_id)
    assert first.outcome == "refused"
    assert end.outcome == "refused"  # never "a person was alerted"
    assert escalation.target == "oncall" and end.escalated  # so the executor tells someone
    assert "step 1 (alert_human mute) was refused: target 'mute' is not allowlisted" in alerts(
        tmp_path
    )


async def test_a_step_cut_short_by_a_crash_ends_the_plan_interrupted(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    config = str(write_config(tmp_path))
    executor = services("executor", "--config", config)
    try:
        plan = make_plan("slow")  # started, then checked for a minute
        await bus.publish_plan(plan)
        deadline = time.monotonic() + WAIT
        while not any(r.plan_id == plan.plan_id and r.status == "started" for r in bus.results):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        executor.stop(signal.SIGKILL)
        services("executor", "--config", config)  # resumes the plan
        end = await bus.wait_end(plan.plan_id)
        assert (end.outcome, end.steps_run, end.escalated) == ("interrupted", 1, False)
        [result] = bus.finished(plan.plan_id)
        assert result.outcome == "interrupted" and "not run twice" in result.output
        record = await bus.record(plan.plan_id)
        assert (record.state, record.outcome) == ("done", "interrupted")
    finally:
        kill_started(tmp_path)


async def test_flapping_target_opens_the_breaker_escalates_once_and_resets(
    bus: Bus, services: StartService, tmp_path: Path, nats_server: NatsServer
) -> None:
    services("executor", "--config", str(write_config(tmp_path)))
    try:
        for _ in range(3):  # no metrics: none verified, each escalated
            plan = make_plan()
            await bus.publish_plan(plan)
            assert (await bus.wait_end(plan.plan_id)).outcome == "not_fixed"
        assert starts(tmp_path, "web") == 3
        # the third opened the breaker, and its escalation said so
        assert alerts(tmp_path).count("Breaker open for 'web'") == 1
        assert plan.plan_id in alerts(tmp_path)

        blocked = make_plan()
        await bus.publish_plan(blocked)
        end = await bus.wait_end(blocked.plan_id)
        [refused] = bus.finished(blocked.plan_id)  # and no second alert for this opening
        assert refused.outcome == "refused" and "breaker open" in refused.output
        assert (end.outcome, end.escalated) == ("refused", False)
        assert f"people were told of this breaker when it opened (plan {plan.plan_id})" in (
            end.detail
        )
        assert blocked.plan_id not in alerts(tmp_path)
        assert starts(tmp_path, "web") == 3

        out = subprocess.run(
            [sys.executable, "-m", "medbay.cli.main", "breaker", "reset", "web", "--by", "me"],
            env={**os.environ, "MEDBAY_NATS_URL": nats_server.url},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        after = make_plan()
        await bus.publish_plan(after)
        await bus.wait_end(after.plan_id)
        assert bus.finished(after.plan_id)[0].outcome == "success"
        assert starts(tmp_path, "web") == 4
    finally:
        kill_started(tmp_path)


async def test_a_breaker_escalation_that_failed_is_tried_again(
    bus: Bus, services: StartService, tmp_path: Path
) -> None:
    config = write_config(tmp_path, flap_max=1, escalate_to="flaky")  # fails the first time
    services("executor", "--config", str(config))
    try:
        opener = make_plan()  # its restart opens the breaker; nothing is verified
        await bus.publish_plan(opener)
        end = await bus.wait_end(opener.plan_id)
        assert (end.outcome, end.escalated) == ("not_fixed", False)
        assert "the escalation to flaky failed: ran sh -c" in end.detail
        assert alerts(tmp_path) == ""

        blocked = make_plan()
        await bus.publish_plan(blocked)
        end = await bus.wait_end(blocked.plan_id)
        assert (end.outcome, end.escalated) == ("refused", True)  # nobody had been told yet
        text = alerts(tmp_path)
        assert text.startswith("Medbay: service_down on test-host needs a person: the flap breaker")
        assert blocked.plan_id in text and starts(tmp_path, "web") == 1
    finally:
        kill_started(tmp_path)


# --- a crash loop, watched by a real collector -------------------------------------------


def crash_loop_configs(tmp_path: Path, port: int) -> tuple[Path, Path]:
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    executor = tmp_path / "executor.yaml"
    executor.write_text(
        "mode: live\n"
        "verify_window_seconds: 30\n"
        "escalate_to: oncall\n"
        "targets:\n"
        f"  web: {{kind: process, command: {json.dumps(command)}, pidfile: '{tmp_path}/web.pid',"
        f" cwd: '{tmp_path}', start_check_seconds: 0.5}}\n"
        f"  oncall: {{kind: notifier, via: command,"
        f" command: [sh, -c, 'cat >> {tmp_path / 'alerts.txt'}']}}\n"
        "safety:\n"
        "  allow: {restart_service: [web], alert_human: [oncall]}\n"
        "  cooldown_seconds: 0\n"
        "  flap: {max_actions: 2, window_seconds: 900}\n"
    )
    collector = tmp_path / "collector.yaml"
    collector.write_text(
        "interval_seconds: 0.5\ntop_processes: 0\nhost: lab-host\n"
        f"services:\n  - {{name: web, check: tcp, host: 127.0.0.1, port: {port}}}\n"
    )
    return executor, collector


def crash(tmp_path: Path) -> None:
    """The service dies, as it does in a crash loop (if it is running)."""
    with contextlib.suppress(ValueError, OSError, psutil.Error):
        proc = psutil.Process(int((tmp_path / "web.pid").read_text()))
        proc.kill()
        proc.wait(10)


def reopened_issue_plan() -> Plan:
    """What the planner makes of the issue each time it opens again."""
    return factories.plan(
        step("restart_service", "web"),
        host="lab-host",
        labels={"service": "web"},
        value=0.0,
        threshold=0.5,
    )


async def test_a_crash_loop_trips_the_breaker_and_escalates_once_per_opening(
    bus: Bus, services: StartService, tmp_path: Path, nats_server: NatsServer
) -> None:
    port = free_port()
    executor_yaml, collector_yaml = crash_loop_configs(tmp_path, port)
    web = psutil.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (tmp_path / "web.pid").write_text(str(web.pid))
    wait_port(port)
    services("collector", "--config", str(collector_yaml))
    services("executor", "--config", str(executor_yaml))
    # Verifying nothing, the executor reads no metrics (it follows a host's while it
    # verifies a fix there).
    assert await bus.js.consumers_info("METRICS") == []

    async def round_of_the_loop() -> PlanFinished:
        crash(tmp_path)
        plan = reopened_issue_plan()
        await bus.publish_plan(plan)
        return await bus.wait_end(plan.plan_id, timeout=90)

    def escalations() -> list[ActionResult]:
        return [r for r in bus.results if r.action == "alert_human" and r.status == "finished"]

    try:
        for _ in range(2):  # restarted, seen back up by the collector: verified
            end = await round_of_the_loop()
            assert (end.outcome, end.escalated) == ("verified", False), end.detail
            assert 'service_up{service="web"} back to 1' in end.detail
        wait_port(port)

        first = await round_of_the_loop()  # two restarts in the flap window: breaker open
        assert (first.outcome, first.steps_run, first.escalated) == ("refused", 0, True)
        [alert] = escalations()
        assert alert.outcome == "success" and alert.plan_id == first.plan_id
        text = alerts(tmp_path)
        assert text.startswith(
            "Medbay: service_down on lab-host needs a person: the flap breaker of 'web' is open.\n"
        )
        assert "refused: breaker open for 'web'" in text and "2 restart_service" in text
        assert 'Issue: service_up{service="web"} = 0, below its threshold 0.5 (critical).' in text
        assert f"Tried (plan {first.plan_id}):\n  1. restart_service web: refused: " in text

        second = await round_of_the_loop()  # the same opening: nobody is paged again
        assert (second.outcome, second.escalated) == ("refused", False)
        assert f"when it opened (plan {first.plan_id})" in second.detail
        assert len(escalations()) == 1

        out = subprocess.run(
            [sys.executable, "-m", "medbay.cli.main", "breaker", "reset", "web", "--by", "me"],
            env={**os.environ, "MEDBAY_NATS_URL": nats_server.url},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        for _ in range(2):
            assert (await round_of_the_loop()).outcome == "verified"
        reopened = await round_of_the_loop()  # a new opening is escalated again, once
        assert (reopened.outcome, reopened.escalated) == ("refused", True)
        assert len(escalations()) == 2
        restarts = [
            r for r in bus.results if r.action == "restart_service" and r.status == "started"
        ]
        assert len(restarts) == 4  # two per opening, as the flap rule says
    finally:
        crash(tmp_path)
        if web.is_running():
            web.kill()
