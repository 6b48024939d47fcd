"""The whole loop on real processes: a watched service goes down, the detector
opens an issue, the planner plans a restart, the executor (live) restarts the
real process and verifies the fix, all in one trace from the collector's span.

Secured: every service connects as its own NATS user with the generated
permissions, and the server logs no permission violation on the way."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import psutil
import pytest
from nats.aio.msg import Msg

from medbay.common.events import ActionResult, MetricBatch, Plan
from tests.helpers import StreamWatch, free_port, wait_port

if TYPE_CHECKING:
    from conftest import NatsServer

INTERVAL = 0.5


def trace_of(msg: Msg) -> str:
    assert msg.headers is not None
    return msg.headers["traceparent"].split("-")[1]


@pytest.fixture
def nats_server(secured_nats: NatsServer) -> NatsServer:
    return secured_nats


async def test_service_down_is_restarted_and_verified_in_one_trace(
    nats_server, services, tmp_path: Path
):
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    pidfile = tmp_path / "web.pid"
    web = psutil.Popen(command, cwd=tmp_path, stdout=open(os.devnull, "wb"))  # noqa: SIM115
    pidfile.write_text(str(web.pid))
    wait_port(port)

    collector_yaml = tmp_path / "collector.yaml"
    collector_yaml.write_text(
        f"interval_seconds: {INTERVAL}\ntop_processes: 0\nhost: e2e-host\n"
        f"services:\n  - {{name: web, check: tcp, host: 127.0.0.1, port: {port}}}\n"
    )
    executor_yaml = tmp_path / "executor.yaml"
    executor_yaml.write_text(
        "mode: live\n"
        "verify_window_seconds: 20\n"
        "targets:\n"
        f"  web: {{kind: process, command: {json.dumps(command)}, pidfile: '{pidfile}',"
        f" cwd: '{tmp_path}'}}\n"
        "safety:\n"
        "  allow: {restart_service: [web]}\n"
    )
    nc = await nats.connect(nats_server.url, **nats_server.client("cli"))
    new_pid = None
    try:
        collector = services("collector", "--config", str(collector_yaml))
        detector = services("detector")
        planner = services("planner", wait_healthy=False)
        executor = services("executor", "--config", str(executor_yaml), wait_healthy=False)
        planner.wait_healthy()
        executor.wait_healthy()
        sub = await StreamWatch(nc.jetstream()).open("ISSUES", "PLANS", "RESULTS")
        await asyncio.sleep(4 * INTERVAL)  # healthy scrapes first

        web.send_signal(signal.SIGKILL)
        web.wait(5)
        deadline = time.monotonic() + 60
        opened, _ = await sub.next_event("issue.opened", deadline, kind="service_down")
        plan_event, plan_msg = await sub.next_event(
            "plan.created", deadline, issue_fingerprint=opened["fingerprint"]
        )
        plan = Plan.model_validate(plan_event)
        assert (plan.steps[0].action, plan.steps[0].target) == ("restart_service", "web")
        assert not plan.requires_approval
        started, _ = await sub.next_event("action.result", deadline, status="started")
        finished, result_msg = await sub.next_event("action.result", deadline, status="finished")
        result = ActionResult.model_validate(finished)
        assert result.plan_id == plan.plan_id and started["plan_id"] == plan.plan_id
        assert result.outcome == "success", result.output
        assert result.verified is True, result.output
        assert not result.dry_run

        # the restarted web server is a new, live process answering on its port
        new_pid = int(pidfile.read_text())
        assert new_pid != web.pid and psutil.pid_exists(new_pid)
        wait_port(port)

        # one trace: the collector's batch that revealed it, the plan, the result
        js = nc.jetstream()
        metrics = await js.pull_subscribe("medbay.metrics.*.e2e-host", stream="METRICS")
        trigger = None
        while trigger is None:
            for msg in await metrics.fetch(100, timeout=2):
                batch = MetricBatch.model_validate_json(msg.data)
                if batch.collected_at == datetime.fromisoformat(opened["first_seen"]):
                    trigger = msg
        assert trace_of(plan_msg) == trace_of(trigger)
        assert trace_of(result_msg) == trace_of(trigger)

        for proc in (collector, detector, planner, executor):
            assert proc.stop() == 0, proc.logs()[-2000:]
        assert nats_server.violations() == []
    finally:
        await nc.close()
        if web.is_running():
            web.kill()
        if new_pid and psutil.pid_exists(new_pid):
            psutil.Process(new_pid).kill()
