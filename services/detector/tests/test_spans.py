"""The spans of the remediation path, as real detector and planner processes export
them over OTLP/HTTP: the detector's issue span and the planner's plan span are
marked critical (so tail sampling keeps their traces), and the plan continues the
issue's trace; the evaluation of every batch is not marked."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import nats
import pytest
from nats.js.api import KeyValueConfig
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import CollectorRegistry

from medbay.common.bus import declare_streams, make_broker, publish_event
from medbay.common.events import MetricBatch, MetricSample, utc_now
from medbay.common.records import EXECUTOR_RAILS, TARGET_CATALOG_KEY, TargetCatalog
from medbay.common.streams import METRICS, RESULTS
from medbay.common.telemetry import CRITICAL_SPAN_ATTRIBUTE
from tests.helpers import StreamWatch

if TYPE_CHECKING:
    from conftest import NatsServer, StartService


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver keeping every span it is sent, by name."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["name"] == name]


def _value(value: AnyValue) -> object:
    field = value.WhichOneof("value")
    return None if field is None else getattr(value, field)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        found = [
            {
                "name": span.name,
                "trace_id": span.trace_id.hex(),
                "attributes": {a.key: _value(a.value) for a in span.attributes},
            }
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        with self.server.lock:
            self.server.spans += found
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_issue_and_plan_spans_are_critical_and_share_a_trace(
    nats_server: NatsServer, services: StartService, receiver: Receiver
) -> None:
    broker = make_broker("test", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [METRICS, RESULTS])  # the collector's and the executor's
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket=EXECUTOR_RAILS.name))
        catalog = TargetCatalog.model_validate(
            {
                "mode": "live",
                "targets": {"shop": {"kind": "command", "actions": ["restart_service"]}},
                "written_at": utc_now(),
            }
        )
        await kv.put(TARGET_CATALOG_KEY, catalog.model_dump_json().encode())
        endpoint, delay = receiver.endpoint, "200"
        for name in ("detector", "planner"):
            started = services(
                name,
                wait_healthy=False,
                OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint,
                OTEL_BSP_SCHEDULE_DELAY=delay,
            )
            started.wait_healthy()
        plans = await StreamWatch(nc.jetstream()).open("PLANS")

        burst = MetricSample(
            name="span_service_errors_per_second", value=60.0, labels={"service": "shop"}
        )
        await publish_event(
            broker,
            MetricBatch(host="web-1", collected_at=utc_now(), samples=[burst]),
            stream=METRICS,
        )
        plan, _ = await plans.next_event("plan.created", time.monotonic() + 90)
        assert (plan["issue_kind"], plan["steps"][0]["target"]) == ("error_rate", "shop")

        deadline = time.monotonic() + 60
        wanted = ("detector.evaluate", "detector.issue", "planner.plan")  # exported apart
        while not all(receiver.named(name) for name in wanted):
            assert time.monotonic() < deadline, f"spans seen: {receiver.spans}"
            await asyncio.sleep(0.2)
        (issue,) = receiver.named("detector.issue")
        (planning,) = receiver.named("planner.plan")
        assert issue["attributes"][CRITICAL_SPAN_ATTRIBUTE] is True
        assert issue["attributes"]["medbay.issue_kind"] == "error_rate"
        assert planning["attributes"][CRITICAL_SPAN_ATTRIBUTE] is True
        assert planning["trace_id"] == issue["trace_id"]
        (evaluated,) = receiver.named("detector.evaluate")
        assert evaluated["trace_id"] == issue["trace_id"]
        assert CRITICAL_SPAN_ATTRIBUTE not in evaluated["attributes"]
    finally:
        await nc.close()
        await broker.stop()
