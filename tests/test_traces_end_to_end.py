"""Trace-derived issues on real processes: an application traced with the official
OpenTelemetry SDK (its own OTLP/HTTP exporter, configured by the standard
environment variables) sends spans to the collector; an error burst opens an
``error_rate`` issue, a slow period a ``latency`` issue and stopping the
application a ``no_traffic`` issue; each resolves when the condition clears, and
the trace figures reach the plans the planner makes.

The detector runs its default rules; only the silence limit is shortened (from
60 s) to keep the test short.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import nats
import pytest

from medbay.common.events import IssueOpened, Plan
from tests.helpers import StreamWatch, free_port, wait_port

if TYPE_CHECKING:
    from conftest import NatsServer

INTERVAL = 1.0
APP = Path(__file__).with_name("trace_app.py")


@pytest.fixture
def nats_server(secured_nats: NatsServer) -> NatsServer:
    return secured_nats


def start_app(port: int, otlp_port: int) -> subprocess.Popen[bytes]:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{otlp_port}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_port(port, timeout=30)
    return proc


def switch(port: int, mode: str) -> None:
    httpx.get(f"http://127.0.0.1:{port}/control/{mode}", timeout=10).raise_for_status()


async def test_error_burst_slow_period_and_silence_open_and_resolve(
    nats_server: NatsServer, services, tmp_path: Path
) -> None:
    app_port, otlp_port = free_port(), free_port()
    collector_yaml = tmp_path / "collector.yaml"
    collector_yaml.write_text(
        f"interval_seconds: {INTERVAL}\ntop_processes: 0\nhost: e2e-host\n"
        f"otlp: {{host: 127.0.0.1, port: {otlp_port}}}\n"
    )
    detector_yaml = tmp_path / "detector.yaml"
    detector_yaml.write_text("traffic: {min_seconds: 8}\n")
    app_command = [sys.executable, str(APP), "--port", str(app_port)]
    executor_yaml = tmp_path / "executor.yaml"
    executor_yaml.write_text(
        "mode: dry-run\n"
        "escalate_to: oncall\n"
        "targets:\n"
        f"  shop: {{kind: process, command: {json.dumps(app_command)}}}\n"
        "  oncall: {kind: notifier, via: log}\n"
        "safety:\n"
        "  allow: {restart_service: [shop], alert_human: [oncall]}\n"
    )
    nc = await nats.connect(nats_server.url, **nats_server.client("cli"))
    app = None
    try:
        services("collector", "--config", str(collector_yaml))
        services("detector", "--config", str(detector_yaml))
        planner = services("planner", wait_healthy=False)
        executor = services("executor", "--config", str(executor_yaml), wait_healthy=False)
        planner.wait_healthy()
        executor.wait_healthy()
        watch = await StreamWatch(nc.jetstream()).open("ISSUES", "PLANS")
        app = start_app(app_port, otlp_port)
        await asyncio.sleep(6 * INTERVAL)
        with pytest.raises(AssertionError, match=r"no issue\.opened"):  # healthy: nothing opens
            await watch.next_event("issue.opened", time.monotonic() + 2)

        switch(app_port, "errors")
        deadline = time.monotonic() + 60
        event, _ = await watch.next_event(
            "issue.opened", deadline, kind="error_rate", metric="span_service_errors_per_second"
        )
        errors = IssueOpened.model_validate(event)
        assert (errors.host, errors.resource) == ("e2e-host", "shop")
        assert errors.value > 10
        assert errors.signals["errors_per_second"] > 10
        plan_event, _ = await watch.next_event(
            "plan.created", deadline, issue_fingerprint=errors.fingerprint
        )
        plan = Plan.model_validate(plan_event)
        assert (plan.steps[0].action, plan.steps[0].target) == ("restart_service", "shop")
        assert plan.features["trace:present"] == 1.0
        assert plan.features["trace:errors_per_second"] == errors.signals["errors_per_second"]
        assert plan.features["trace:error_ratio"] == errors.signals["error_ratio"] > 0.3
        switch(app_port, "normal")
        await watch.next_event(
            "issue.resolved", time.monotonic() + 60, fingerprint=errors.fingerprint
        )

        switch(app_port, "slow")
        deadline = time.monotonic() + 60
        event, _ = await watch.next_event("issue.opened", deadline, kind="latency")
        slow = IssueOpened.model_validate(event)
        assert slow.resource == "shop" and slow.value > 2000
        assert slow.metric == "span_service_latency_p95_ms"
        plan_event, _ = await watch.next_event(
            "plan.created", deadline, issue_fingerprint=slow.fingerprint
        )
        assert Plan.model_validate(plan_event).features["trace:latency_p95_ms"] > 2000
        switch(app_port, "normal")
        await watch.next_event(
            "issue.resolved", time.monotonic() + 60, fingerprint=slow.fingerprint
        )

        app.kill()
        app.wait(10)
        deadline = time.monotonic() + 60
        event, _ = await watch.next_event("issue.opened", deadline, kind="no_traffic")
        silent = IssueOpened.model_validate(event)
        assert silent.resource == "shop" and "shop" in silent.detail
        app = start_app(app_port, otlp_port)
        await watch.next_event(
            "issue.resolved", time.monotonic() + 60, fingerprint=silent.fingerprint
        )
    finally:
        await nc.close()
        if app is not None and app.poll() is None:
            app.kill()
            app.wait(10)
