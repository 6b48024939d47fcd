"""The executor as a real process on a real nats-server, fed plans and approvals:
approval gating, at-most-once steps under redelivery and racing replicas, the
allowlist, dry-run, and the flap breaker with its escalation and reset."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
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
    Approval,
    Plan,
    new_event_id,
)
from medbay.common.streams import PLANS, plan_subject, subject_for
from tests import factories
from tests.factories import step

if TYPE_CHECKING:
    from conftest import NatsServer


def counting_target(tmp_path: Path, name: str) -> str:
    """A process target whose every start appends a line to ``<name>.starts``."""
    starts = tmp_path / f"{name}.starts"
    script = f"echo start >> {starts}; exec sleep 300"
    command = json.dumps(["sh", "-c", script])
    return f"  {name}: {{kind: process, command: {command}, pidfile: '{tmp_path / name}.pid'}}\n"


def starts(tmp_path: Path, name: str) -> int:
    path = tmp_path / f"{name}.starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_config(tmp_path: Path, *, mode: str = "live", flap_max: int = 3) -> Path:
    alerts = tmp_path / "alerts.txt"
    text = (
        f"mode: {mode}\n"
        "verify_window_seconds: 0.5\n"
        "escalate_to: oncall\n"
        "targets:\n"
        + counting_target(tmp_path, "web")
        + counting_target(tmp_path, "api")
        + f"  oncall: {{kind: notifier, via: command, command: [sh, -c, 'cat >> {alerts}']}}\n"
        "safety:\n"
        "  allow: {restart_service: [web], alert_human: [oncall]}\n"
        "  cooldown_seconds: 0\n"
        f"  flap: {{max_actions: {flap_max}, window_seconds: 900}}\n"
    )
    path = tmp_path / "executor.yaml"
    path.write_text(text)
    return path


def make_plan(target: str = "web", *, approval: bool = False, plan_id: str | None = None) -> Plan:
    return factories.plan(
        step("restart_service", target),
        plan_id=plan_id or new_event_id(),
        host="test-host",
        labels={"service": target},
        requires_approval=approval,
    )


class Bus:
    """Publishes plans (each copy a new message, as a redelivery would be) and
    collects the executor's results."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.results: list[ActionResult] = []

    async def start(self) -> None:
        await self.nc.subscribe("medbay.results.>", cb=self._on_result)

    async def _on_result(self, msg: Msg) -> None:
        self.results.append(ActionResult.model_validate_json(msg.data))

    async def publish_plan(self, plan: Plan) -> None:
        headers = {**event_headers(plan), "Nats-Msg-Id": new_event_id()}
        await self.js.publish(plan_subject(plan), plan.model_dump_json().encode(), headers=headers)

    async def approve(
        self, plan_id: str, decision: Literal["approve", "reject"] = "approve"
    ) -> None:
        approval = Approval(plan_id=plan_id, decision=decision, decided_by="tester", channel="cli")
        await self.js.publish(
            subject_for(approval),
            approval.model_dump_json().encode(),
            headers=event_headers(approval),
        )

    def finished(self, plan_id: str) -> list[ActionResult]:
        return [r for r in self.results if r.plan_id == plan_id and r.status == "finished"]

    async def wait_finished(self, plan_id: str, count: int = 1, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.finished(plan_id)) < count:
            assert time.monotonic() < deadline, f"results so far: {self.results}"
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


async def test_plan_runs_live_and_a_redelivered_plan_runs_once(bus, services, tmp_path):
    services("executor", "--config", str(write_config(tmp_path)))
    try:
        plan = make_plan()
        await bus.publish_plan(plan)
        await bus.publish_plan(plan)  # a second delivery of the same plan
        await bus.wait_finished(plan.plan_id)
        await asyncio.sleep(1.5)
        assert starts(tmp_path, "web") == 1
        step = next(r for r in bus.finished(plan.plan_id) if r.step_index == 0)
        assert step.outcome == "success" and not step.dry_run
        assert step.verified is False  # no metrics here: the fix cannot be seen
    finally:
        kill_started(tmp_path)


async def test_two_racing_executors_run_a_step_once(bus, services, tmp_path):
    config = str(write_config(tmp_path, flap_max=100))
    services("executor", "--config", config)
    services("executor", "--config", config)
    try:
        plans = [make_plan() for _ in range(5)]
        for plan in plans:
            for _ in range(3):  # three copies of each, spread over both executors
                await bus.publish_plan(plan)
        for plan in plans:
            await bus.wait_finished(plan.plan_id)
        await asyncio.sleep(1.5)
        outcomes = [(r.plan_id[:6], r.step_index, r.outcome, r.output) for r in bus.results]
        assert starts(tmp_path, "web") == len(plans), outcomes
    finally:
        kill_started(tmp_path)


async def test_target_outside_the_allowlist_is_refused_and_untouched(bus, services, tmp_path):
    services("executor", "--config", str(write_config(tmp_path)))
    plan = make_plan("api")
    await bus.publish_plan(plan)
    await bus.wait_finished(plan.plan_id)
    result = bus.finished(plan.plan_id)[0]
    assert result.outcome == "refused"
    assert "api" in result.output and "allow" in result.output
    assert starts(tmp_path, "api") == 0


async def test_dry_run_reports_and_touches_nothing(bus, services, tmp_path):
    services("executor", "--config", str(write_config(tmp_path, mode="dry-run")))
    plan = make_plan()
    await bus.publish_plan(plan)
    await bus.wait_finished(plan.plan_id)
    result = bus.finished(plan.plan_id)[0]
    assert result.outcome == "dry_run" and result.dry_run
    assert "would" in result.output.lower()
    assert starts(tmp_path, "web") == 0


async def test_approval_gates_a_plan_and_is_decided_once(bus, services, tmp_path):
    services("executor", "--config", str(write_config(tmp_path)))
    try:
        rejected, approved = make_plan(approval=True), make_plan(approval=True)
        await bus.publish_plan(rejected)
        await bus.publish_plan(approved)
        await asyncio.sleep(1.0)
        assert starts(tmp_path, "web") == 0  # both wait for a person
        await bus.approve(rejected.plan_id, "reject")
        await bus.approve(approved.plan_id)
        await bus.approve(approved.plan_id)  # a second click changes nothing
        await bus.wait_finished(approved.plan_id)
        await asyncio.sleep(1.0)
        assert starts(tmp_path, "web") == 1
        assert bus.finished(rejected.plan_id) == []

        early = make_plan(approval=True)  # the approval overtakes its plan
        await bus.approve(early.plan_id)
        await asyncio.sleep(0.5)
        await bus.publish_plan(early)
        await bus.wait_finished(early.plan_id)
        assert starts(tmp_path, "web") == 2
    finally:
        kill_started(tmp_path)


async def test_flapping_target_opens_the_breaker_escalates_and_resets(
    bus, services, tmp_path, nats_server
):
    services("executor", "--config", str(write_config(tmp_path)))
    try:
        for _ in range(3):
            plan = make_plan()
            await bus.publish_plan(plan)
            await bus.wait_finished(plan.plan_id)
        assert starts(tmp_path, "web") == 3
        blocked = make_plan()
        await bus.publish_plan(blocked)
        await bus.wait_finished(blocked.plan_id, count=2)  # refused, then the alert
        refused, alert = sorted(bus.finished(blocked.plan_id), key=lambda r: r.step_index)
        assert refused.outcome == "refused" and "breaker open" in refused.output
        assert alert.action == "alert_human" and alert.outcome == "success"
        assert blocked.plan_id in (tmp_path / "alerts.txt").read_text()
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
        await bus.wait_finished(after.plan_id)
        assert bus.finished(after.plan_id)[0].outcome == "success"
        assert starts(tmp_path, "web") == 4
    finally:
        kill_started(tmp_path)
