"""The collector as a process with its OTLP/HTTP receiver, against a real nats-server:
spans sent by the official SDK's exporter come out as span samples in the METRICS
stream and on the collector's /metrics, bad bodies are refused while it goes on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import nats
import pytest
import yaml
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from medbay.common.events import MetricBatch
from tests.helpers import free_port, wait_port
from tests.sdk_spans import server_spans

if TYPE_CHECKING:
    from conftest import NatsServer

HOST = "trace-host"


def export(endpoint: str, spans: list[ReadableSpan]) -> None:
    """One request of the SDK's own OTLP/HTTP exporter."""
    exporter = OTLPSpanExporter(endpoint=endpoint)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def collector(
    nats_url: str, tmp_path: Path, otlp_port: int, http_port: int
) -> AsyncIterator[Path]:
    """The collector process; yields its log, and checks it stops cleanly on SIGTERM."""
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {"host": HOST, "interval_seconds": 1, "top_processes": 0, "otlp": {"port": otlp_port}}
        )
    )
    env = os.environ | {
        "MEDBAY_NATS_URL": nats_url,
        "MEDBAY_HTTP_PORT": str(http_port),
        "MEDBAY_LOG_FORMAT": "text",
    }
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "medbay.collector.main", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await asyncio.to_thread(wait_port, otlp_port, 60)
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            raise
    assert status == 0, log.read_text()
    assert "Traceback" not in log.read_text()


async def batches_until(js: JetStreamContext, done: Any, timeout: float = 60) -> list[MetricBatch]:
    """Every batch from the stream's start, until ``done(batches)`` holds (waiting for
    the collector to declare the stream: its receiver listens before it connects)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sub = await js.pull_subscribe(
                "medbay.metrics.>",
                stream="METRICS",
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
            )
            break
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    batches: list[MetricBatch] = []
    while not done(batches):
        if time.monotonic() > deadline:
            raise AssertionError(f"not there after {timeout} s: {len(batches)} batches")
        # nats' TimeoutError, or asyncio's when a busy machine delays the fetch's last read
        with contextlib.suppress(TimeoutError):
            batches += [
                MetricBatch.model_validate_json(m.data) for m in await sub.fetch(10, timeout=1)
            ]
    await sub.unsubscribe()
    return batches


def values(batch: MetricBatch, name: str) -> dict[tuple[str, ...], float]:
    """The batch's samples named ``name``, by their label values."""
    return {
        tuple(s.get("labels", {}).values()): s["value"] for s in batch.samples if s["name"] == name
    }


def with_spans(batches: list[MetricBatch]) -> bool:
    return any(values(b, "span_service_requests_per_second") for b in batches)


async def test_spans_to_the_metrics_stream(nats_server: NatsServer, tmp_path: Path) -> None:
    otlp_port, http_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{otlp_port}/v1/traces"
    async with collector(nats_server.url, tmp_path, otlp_port, http_port) as log:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await batches_until(js, lambda batches: len(batches) >= 1)  # the stream, and a batch
        # one request, so all in one interval: 50 checkout requests, 10 failing; 2 of tiny
        await asyncio.to_thread(
            export, endpoint, server_spans("checkout", 50, 10) + server_spans("tiny", 2, 1)
        )
        batches = await batches_until(js, with_spans)
        await nc.close()

        index = next(
            i for i, b in enumerate(batches) if values(b, "span_service_requests_per_second")
        )
        assert index > 0, "the first batch of the stream"
        batch, before = batches[index], batches[index - 1]
        interval = (batch.collected_at - before.collected_at).total_seconds()
        requests = values(batch, "span_service_requests_per_second")
        errors = values(batch, "span_service_errors_per_second")
        assert set(requests) == {("checkout",), ("tiny",)}
        # the interval flushed is the time between two scrapes
        assert requests["checkout",] * interval == pytest.approx(50, rel=0.15)
        assert errors["checkout",] / requests["checkout",] == pytest.approx(0.2)
        assert errors["tiny",] / requests["tiny",] == pytest.approx(0.5)
        assert values(batch, "span_service_error_ratio") == {("checkout",): 0.2}  # tiny: 2 < 5
        assert values(batch, "span_service_latency_p50_ms")["checkout",] == pytest.approx(25.5)
        operations = values(batch, "span_requests_per_second")
        assert operations == {
            ("checkout", "/pay"): requests["checkout",],
            ("tiny", "/pay"): requests["tiny",],
        }
        assert values(batch, "span_error_ratio")["checkout", "/pay"] == pytest.approx(0.2)
        assert values(batch, "spans_dropped_operations") == {(): 0.0}
        assert "memory_percent" in {s["name"] for s in batch.samples}

        async with httpx.AsyncClient(timeout=30) as http:
            refused = await http.post(
                endpoint,
                content=b"\x0a\xff\xff",
                headers={"Content-Type": "application/x-protobuf"},
            )
            assert refused.status_code == 400
            # the latest batch on /metrics: spans keep coming so that one has them
            metrics = ""
            series = f'medbay_span_service_requests_per_second{{host="{HOST}",service="checkout"}}'
            deadline = time.monotonic() + 60
            while series not in metrics:
                assert time.monotonic() < deadline, metrics
                await asyncio.to_thread(export, endpoint, server_spans("checkout", 5, 0))
                await asyncio.sleep(0.5)
                metrics = (await http.get(f"http://127.0.0.1:{http_port}/metrics")).text
        assert f'medbay_memory_percent{{host="{HOST}"}}' in metrics
        assert 'medbay_collector_otlp_requests_total{code="400"} 1.0' in metrics
        accepted = re.search(r"^medbay_collector_otlp_spans_total (\S+)$", metrics, re.MULTILINE)
        assert accepted and float(accepted.group(1)) >= 57
    assert "receiving OTLP/HTTP traces on http://127.0.0.1:" in log.read_text()
