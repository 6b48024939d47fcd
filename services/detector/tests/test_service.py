"""The detector process on a real (secured) nats-server: a host whose metrics stop
opens ``host_silent``, and its return resolves it; a host that keeps sending does not."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest
from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry

from medbay.common.bus import declare_streams, make_broker, publish_event
from medbay.common.events import MetricBatch, MetricSample, derived_event_id, utc_now
from medbay.common.streams import METRICS
from tests.helpers import StreamWatch

if TYPE_CHECKING:
    from faststream.nats import NatsBroker

    from conftest import NatsServer, StartService

EVERY = 0.2  # seconds between a host's batches
SILENCE = 3.0  # seconds without a batch before a host is silent


@pytest.fixture
def nats_server(secured_nats: NatsServer) -> NatsServer:
    return secured_nats


class Host:
    """A collector's publishing: one batch every ``EVERY`` seconds while it runs."""

    def __init__(self, broker: NatsBroker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.sent = 0
        self.last_sent = 0.0  # time.monotonic() just before the last publish
        self.task: asyncio.Task[None] | None = None

    async def send(self) -> None:
        self.sent += 1
        self.last_sent = time.monotonic()
        batch = MetricBatch(
            event_id=derived_event_id("service-test", self.name, self.sent),
            host=self.name,
            collected_at=utc_now(),
            samples=[MetricSample(name="load1", value=0.5)],
        )
        await publish_event(self.broker, batch, stream=METRICS)

    async def _run(self) -> None:
        while True:
            # On a busy machine a publish may time out: a collector sends the next one.
            with contextlib.suppress(NatsError, TimeoutError):
                await self.send()
            await asyncio.sleep(EVERY)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.mark.timeout(400)
async def test_a_silent_host_opens_host_silent_and_resolves_when_it_returns(
    nats_server: NatsServer, services: StartService, tmp_path: Path
) -> None:
    config = tmp_path / "detector.yaml"
    config.write_text(
        "thresholds: []\nanomaly: []\n"
        f"silence: {{intervals: 3, min_seconds: {SILENCE}, check_seconds: 0.25}}\n"
    )
    broker = make_broker(
        "collector",
        nats_server.url,
        registry=CollectorRegistry(),
        options=nats_server.client("collector"),
    )
    await broker.connect()
    await declare_streams(broker, [METRICS])
    detector = services("detector", "--config", str(config))
    nc = await nats.connect(nats_server.url, **nats_server.client("cli"))
    steady, edge = Host(broker, "steady"), Host(broker, "edge")
    try:
        issues = await StreamWatch(nc.jetstream()).open("ISSUES")
        steady.start()
        edge.start()
        await asyncio.sleep(10 * EVERY)
        await edge.stop()

        event, _ = await issues.next_event("issue.opened", time.monotonic() + 60)
        assert time.monotonic() - edge.last_sent >= SILENCE
        assert (event["kind"], event["host"], event["resource"]) == ("host_silent", "edge", "edge")
        assert event["metric"] == "metrics_age_seconds" and event["threshold"] == SILENCE
        assert event["value"] > SILENCE and event["detail"].startswith("no metrics for ")

        edge.start()
        resolved, _ = await issues.next_event("issue.resolved", time.monotonic() + 60)
        assert (resolved["kind"], resolved["host"]) == ("host_silent", "edge")
        assert resolved["fingerprint"] == event["fingerprint"]
        assert resolved["detail"].startswith("metrics again after ")

        await asyncio.sleep(SILENCE + 1)  # both send again: nothing more
        await steady.stop()
        await edge.stop()
        info = await nc.jetstream().stream_info("ISSUES")
        assert info.state.messages == 2
        assert detector.proc is not None and detector.proc.poll() is None
        assert nats_server.violations() == []  # its consumer info is allowed
    finally:
        await steady.stop()
        await edge.stop()
        await nc.close()
        await broker.stop()
