"""Collector and detector as real processes on a real nats-server: a watched
service goes down, an issue opens and resolves, and one trace spans both services.

The server runs Medbay's generated authorization config: each service connects
as its own user, and the test watches as the CLI's identity does, through
JetStream consumers (nobody may subscribe to a stream's subjects)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest
from nats.aio.msg import Msg

from medbay.common.events import IssueOpened, IssueResolved, MetricBatch
from tests.helpers import StreamWatch, free_port, wait_port

if TYPE_CHECKING:
    from conftest import NatsServer

INTERVAL = 0.5


@pytest.fixture
def nats_server(secured_nats: NatsServer) -> NatsServer:
    return secured_nats


def start_web(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


async def test_service_down_opens_and_resolves_with_one_trace(
    nats_server, services, tmp_path: Path
):
    web_port = free_port()
    web = start_web(web_port)
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"interval_seconds: {INTERVAL}\ntop_processes: 0\nhost: e2e-host\n"
        f"services:\n  - {{name: web, check: tcp, host: 127.0.0.1, port: {web_port}}}\n"
    )
    nc = await nats.connect(nats_server.url, **nats_server.client("cli"))
    try:
        collector = services("collector", "--config", str(config))
        detector = services("detector")
        issues = await StreamWatch(nc.jetstream()).open("ISSUES")
        await asyncio.sleep(4 * INTERVAL)  # a few healthy scrapes

        web.terminate()
        web.wait(5)
        went_down = datetime.now(UTC)
        deadline = time.monotonic() + 20
        event, opened_msg = await issues.next_event("issue.opened", deadline, resource="web")
        opened = IssueOpened.model_validate(event)
        assert opened.kind == "service_down" and opened.host == "e2e-host"
        assert opened.severity == "critical" and opened.value == 0.0
        # seen down by the first or second scrape after the service went away
        assert (opened.first_seen - went_down).total_seconds() <= 3 * INTERVAL + 0.2

        web = start_web(web_port)
        came_back = datetime.now(UTC)
        event, _ = await issues.next_event("issue.resolved", time.monotonic() + 20, resource="web")
        resolved = IssueResolved.model_validate(event)
        assert resolved.fingerprint == opened.fingerprint
        assert (resolved.last_seen - came_back).total_seconds() <= 3 * INTERVAL + 0.2

        # One trace: the metric batch that revealed the problem (published in the
        # collector's span) and the issue (published in the detector's span).
        js = nc.jetstream()
        metrics = await js.pull_subscribe("medbay.metrics.*.e2e-host", stream="METRICS")
        trigger = None
        while trigger is None:
            for msg in await metrics.fetch(100, timeout=2):
                batch = MetricBatch.model_validate_json(msg.data)
                if batch.collected_at == opened.first_seen:
                    trigger = msg

        def trace_of(msg: Msg) -> str:
            assert msg.headers is not None
            return msg.headers["traceparent"].split("-")[1]

        assert trace_of(opened_msg) == trace_of(trigger)
        # and the detector logged the issue inside that trace
        lines = [json.loads(x) for x in detector.logs().splitlines() if x.startswith("{")]
        logged = [x for x in lines if x.get("event_id") == opened.event_id]
        assert logged and logged[0]["trace_id"] == trace_of(trigger)

        assert collector.stop() == 0
        assert detector.stop() == 0
        assert nats_server.violations() == []
    finally:
        web.terminate()
        await nc.close()
