"""Time from the first erroring span to the ``error_rate`` IssueOpened.

Part of ``medbay bench traces``. A private nats-server (JetStream, temp dir, free
port), the real collector (its OTLP receiver on a free port, scraping every
``interval`` seconds) and the real detector (default rules) as processes. Each
trial is a new service, so trials are independent: it sends healthy server spans
(30 a second, in a request every 100 ms) for ``HEALTHY_SECONDS``, then, from a
random point of the collector's interval, only erroring ones at the same rate.
The clock starts just before the first erroring span is posted and stops when
the detector's ``issue.opened`` of kind ``error_rate`` for that service arrives.
The detector's default rule opens at more than 10 errors a second in one
interval, so the figure is what the collector's interval (the spans wait for the
next scrape) and the pipeline add.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nats
from nats.aio.msg import Msg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from medbay.cli.bench import load

harness = load("harness")
HOST = "bench-host"
HEALTHY_SECONDS = 2.0
SPANS_PER_REQUEST = 3
REQUEST_EVERY = 0.1
"""Three spans every 100 ms: 30 spans a second."""


def payload(service: str, error: bool) -> bytes:
    """One OTLP/HTTP protobuf body: ``SPANS_PER_REQUEST`` server spans of ``service``."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=service))
    )
    spans = resource_spans.scope_spans.add().spans
    now = time.time_ns()
    for _ in range(SPANS_PER_REQUEST):
        spans.append(
            Span(
                trace_id=secrets.token_bytes(16),
                span_id=secrets.token_bytes(8),
                name="GET /api/pay",
                kind=Span.SpanKind.SPAN_KIND_SERVER,
                start_time_unix_nano=now - 20_000_000,
                end_time_unix_nano=now,
                status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
            )
        )
    body: bytes = request.SerializeToString()
    return body


def start_services(url: str, root: Path, interval: float, otlp_port: int) -> dict[str, Any]:
    collector_yaml = root / "collector.yaml"
    collector_yaml.write_text(
        f"host: {HOST}\ninterval_seconds: {interval}\ntop_processes: 0\n"
        f"otlp: {{host: 127.0.0.1, port: {otlp_port}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEDBAY_"))}
    env.update(
        MEDBAY_NATS_URL=url,
        MEDBAY_HTTP_PORT="0",
        MEDBAY_LOG_LEVEL="WARNING",
        MEDBAY_COLLECTOR_CONFIG=str(collector_yaml),
        PYTHONUNBUFFERED="1",
    )
    return {
        name: harness.spawn(
            [sys.executable, "-m", f"medbay.{name}.main"], root / f"{name}.log", env
        )
        for name in ("detector", "collector")
    }


class Openings:
    """When each service's error_rate issue was first seen opened."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.arrived: dict[str, asyncio.Event] = {}

    async def on_msg(self, msg: Msg) -> None:
        now = time.perf_counter()
        event = json.loads(msg.data)
        if event.get("kind") == "error_rate" and event.get("host") == HOST:
            service = event["resource"]
            self.seen.setdefault(service, now)
            self.arrived.setdefault(service, asyncio.Event()).set()


async def trial(
    http: httpx.AsyncClient,
    endpoint: str,
    service: str,
    openings: Openings,
    timeout: float,
    interval: float,
) -> float:
    """Seconds from the first erroring span of ``service`` to its issue; the burst
    starts at a random point of the collector's interval."""
    headers = {"Content-Type": "application/x-protobuf"}
    arrived = openings.arrived.setdefault(service, asyncio.Event())
    loop = asyncio.get_running_loop()
    end_healthy = loop.time() + HEALTHY_SECONDS + random.uniform(0, interval)
    while loop.time() < end_healthy:
        (
            await http.post(endpoint, content=payload(service, False), headers=headers)
        ).raise_for_status()
        await asyncio.sleep(REQUEST_EVERY)
    started = time.perf_counter()
    deadline = loop.time() + timeout
    while not arrived.is_set():
        if loop.time() > deadline:
            raise harness.BenchError(f"no error_rate issue for {service} in {timeout:.0f} s")
        (
            await http.post(endpoint, content=payload(service, True), headers=headers)
        ).raise_for_status()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REQUEST_EVERY):
                await arrived.wait()
    return openings.seen[service] - started


async def measure(
    url: str, otlp_port: int, interval: float, trials: int, procs: dict[str, Any]
) -> list[float]:
    nc = await nats.connect(url)
    openings = Openings()
    await nc.subscribe("medbay.issues.opened.>", cb=openings.on_msg)
    endpoint = f"http://127.0.0.1:{otlp_port}/v1/traces"
    seconds: list[float] = []
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:  # the receiver is up once the collector answers
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise harness.BenchError(f"{name} exited with {proc.returncode}")
                try:
                    await http.post(
                        endpoint,
                        content=ExportTraceServiceRequest().SerializeToString(),
                        headers={"Content-Type": "application/x-protobuf"},
                    )
                    break
                except httpx.TransportError as exc:
                    if time.monotonic() > deadline:
                        raise harness.BenchError("the receiver did not start in 60 s") from exc
                    await asyncio.sleep(0.2)
            await trial(http, endpoint, "warm-up", openings, 60, interval)
            for i in range(trials):
                seconds.append(await trial(http, endpoint, f"svc-{i}", openings, 30, interval))
    finally:
        await nc.close()
    return seconds


def run(root: Path, interval: float, trials: int) -> dict[str, Any]:
    """Figures of ``trials`` error bursts, each on a new service."""
    server, url = harness.start_server(root)
    otlp_port = harness.free_port()
    procs: dict[str, Any] = {}
    try:
        procs = start_services(url, root, interval, otlp_port)
        seconds = asyncio.run(measure(url, otlp_port, interval, trials, procs))
    finally:
        for proc in procs.values():
            harness.stop(proc)
        harness.stop(server)
    return {
        "interval_seconds": interval,
        "trials": trials,
        "seconds": harness.stats(seconds),
        "intervals": harness.stats([s / interval for s in seconds]),
    }


def report(figures: dict[str, Any]) -> str:
    s, n = figures["seconds"], figures["intervals"]
    return (
        f"first erroring span -> IssueOpened (error_rate), collector interval "
        f"{figures['interval_seconds']:g} s, {figures['trials']} bursts:\n"
        f"  p50 {s['p50']:.2f} s ({n['p50']:.2f} intervals)   p90 {s['p90']:.2f} s "
        f"({n['p90']:.2f})   p99 {s['p99']:.2f} s ({n['p99']:.2f} intervals; goal < 2)   "
        f"max {s['max']:.2f} s"
    )
