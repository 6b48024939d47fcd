"""The collector's trace intake: how many spans a second its receiver takes on one core,
and its memory at 10,000 distinct operations.

``medbay bench traces [--seconds 10] [--spans-per-request 512] [--connections 4]
[--operations 10000] [--spans-per-operation 5]`` measures, in one run:

1. **Payloads**: OTLP/HTTP trace bodies made by the OpenTelemetry SDK itself (spans
   of a tracer provider, encoded by the encoder its OTLP/HTTP exporter uses), each of
   ``--spans-per-request`` spans from three services: per request an HTTP server span
   with the usual attributes (2 % answering 500), its database and HTTP client spans
   and an internal child; five routes. The JSON bodies hold the same requests in
   OTLP's JSON encoding (hex ids).
2. **Baselines, in this process**: the bare decode rate of opentelemetry-proto on
   the same bodies, spans per CPU second: ``ExportTraceServiceRequest.ParseFromString``
   for protobuf, ``json_format.Parse`` for JSON (and ``json.loads`` alone, the floor
   of any JSON decoding), and for protobuf the parse plus reading the fields a span's
   figures need (the least any Python consumer does). Beside them, the collector's
   own decoding into span records (``decode_traces``), without HTTP or aggregation.
3. **The receiver**: ``TraceReceiver`` alone in its own process (the collector's
   default settings, its aggregator emptied into samples every 5 s as the collector's
   scrape does), driven from another process over ``--connections`` keep-alive
   connections for ``--seconds``, protobuf then JSON (1 s of warm-up before each).
   The figure is spans accepted per CPU second of the receiver process (user + system),
   so per core whatever else the machine does; "busy" is that CPU time over the
   driven time: under 100 % means the driver, or other work on the machine, held
   the receiver back (the per-CPU-second figure does not depend on it).
4. **Memory**: ``--operations`` distinct (service, operation) keys of
   ``--spans-per-operation`` spans each. The aggregator's own allocations
   (tracemalloc, in this process) with the default ``max_operations`` (1000: the
   rest is counted under ``(other)``) and with ``max_operations`` = ``--operations``;
   and the receiver process's RSS growth for the same spans, with each setting.

5. **Detection**: time from the first erroring span to the detector's
   IssueOpened, on real collector and detector processes (``trace_issues``).

More figures append a section to ``SECTIONS``. They are printed and written to
``bench/results/traces-<timestamp>.json``.

Run as a script, this file is also the receiver process (``serve``) and the driver
process (``drive``) the benchmark starts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import json
import math
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from medbay.cli.bench import load
from medbay.collector.config import OtlpReceiver
from medbay.collector.otlp_http import TRACES_PATH, TraceReceiver
from medbay.collector.spans import JSON, PROTOBUF, RedAggregator, decode_traces, red_samples

harness = load("harness")
PAYLOADS = 8
"""Distinct bodies per format, sent in turn."""
FLUSH_SECONDS = 5.0
"""The collector's default interval: the receiver is emptied this often."""
ROUTES = [f"/api/v1/{noun}/{{id}}" for noun in ("items", "carts", "orders", "users", "stock")]


# --- payloads ------------------------------------------------------------------------


class SpanMaker:
    """Spans as instrumented services make them, through the SDK: per request a server
    span, with a database call, an HTTP call to the next service and an internal step
    under it."""

    SPANS_PER_REQUEST = 4

    def __init__(self, seed: int) -> None:
        self.draw = random.Random(seed)
        self.exporter = InMemorySpanExporter()
        self.services = ["shop", "cart", "payments"]
        self.tracers = {}
        for service in self.services:
            resource = Resource.create(
                {
                    "service.name": service,
                    "service.version": "1.4.2",
                    "host.name": f"{service}-7f9c",
                }
            )
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.tracers[service] = provider.get_tracer("bench", "1.0")

    def body(self, spans: int, operation: Callable[[int], tuple[int, str]]) -> bytes:
        """A protobuf body of ``spans`` spans, as the SDK's OTLP/HTTP exporter encodes
        it; ``operation(n)`` gives the n-th request's service (index) and route."""
        self.exporter.clear()
        for n in range(-(-spans // self.SPANS_PER_REQUEST)):
            service, route = operation(n)
            self._request(self.services[service % 3], route, self.services[(service + 1) % 3])
        made = self.exporter.get_finished_spans()[:spans]
        return bytes(encode_spans(made).SerializeToString())

    def _request(self, service: str, route: str, peer: str) -> None:
        tracer = self.tracers[service]
        failed = self.draw.random() < 0.02
        attributes = {
            "http.request.method": "GET",
            "http.route": route,
            "url.path": route.replace("{id}", str(self.draw.randrange(10_000))),
            "url.scheme": "https",
            "http.response.status_code": 500 if failed else 200,
            "server.address": f"{service}.internal",
            "server.port": 8080,
            "network.protocol.version": "1.1",
            "client.address": f"10.0.{self.draw.randrange(255)}.{self.draw.randrange(255)}",
            "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) bench",
        }
        with tracer.start_as_current_span(
            f"GET {route}", kind=trace.SpanKind.SERVER, attributes=attributes
        ) as server:
            if failed:
                server.set_status(trace.StatusCode.ERROR)
            with tracer.start_as_current_span(
                "SELECT orders",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "db.system": "postgresql",
                    "db.query.text": "SELECT * FROM orders WHERE id = $1",
                    "server.address": "db.internal",
                },
            ):
                pass
            with tracer.start_as_current_span(
                "GET",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "http.request.method": "GET",
                    "server.address": f"{peer}.internal",
                    "peer.service": peer,
                    "http.response.status_code": 200,
                },
            ):
                pass
            with tracer.start_as_current_span("render", attributes={"template": "item.html"}):
                pass


def otlp_json(body: bytes) -> bytes:
    """The same request in OTLP's JSON encoding: protobuf's JSON mapping, ids in hex."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


def payloads(spans_per_request: int) -> dict[str, list[bytes]]:
    maker = SpanMaker(seed=7)
    bodies = [
        maker.body(spans_per_request, lambda n: (n, ROUTES[n % len(ROUTES)]))
        for _ in range(PAYLOADS)
    ]
    return {PROTOBUF: bodies, JSON: [otlp_json(b) for b in bodies]}


def distinct_operation_payloads(
    operations: int, spans_per_operation: int, spans_per_request: int
) -> list[bytes]:
    """Protobuf bodies whose server spans are of ``operations`` distinct (service,
    route) keys, ``spans_per_operation`` each."""
    maker = SpanMaker(seed=11)
    per_body = spans_per_request // SpanMaker.SPANS_PER_REQUEST
    requests = operations * spans_per_operation
    bodies = []
    for first in range(0, requests, per_body):
        count = min(per_body, requests - first)

        def operation(n: int, first: int = first) -> tuple[int, str]:
            key = (first + n) % operations
            return key, f"/api/op{key}/{{id}}"

        bodies.append(maker.body(count * SpanMaker.SPANS_PER_REQUEST, operation))
    return bodies


# --- the receiver and driver processes ----------------------------------------------------


async def serve(port: int, max_operations: int, flush_seconds: float) -> None:
    """The receiver as the collector runs it: emptied into samples every interval."""
    config = OtlpReceiver(port=port, max_operations=max_operations, max_body_bytes=64 * 2**20)
    receiver = TraceReceiver(config, CollectorRegistry())
    await receiver.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_seconds):
                await stop.wait()
        red_samples(await receiver.read())
    await receiver.stop()


def drive(
    port: int, bodies: list[bytes], content_type: str, seconds: float, connections: int
) -> None:
    """Post ``bodies`` in turn over keep-alive connections; print what was accepted."""
    deadline = time.monotonic() + seconds
    accepted = [0] * connections
    refused = [0] * connections

    def send(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": content_type}
        n = worker
        while time.monotonic() < deadline or (seconds == 0 and n < len(bodies)):
            conn.request("POST", TRACES_PATH, bodies[n % len(bodies)], headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status == 200:
                accepted[worker] += 1
            else:
                refused[worker] += 1
            n += connections
        conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=send, args=(w,)) for w in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(
        json.dumps(
            {
                "accepted": sum(accepted),
                "refused": sum(refused),
                "seconds": time.monotonic() - started,
            }
        )
    )


def _script(*argv: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *argv]


def start_receiver(root: Path, max_operations: int, flush_seconds: float) -> tuple[Any, int]:
    port = harness.free_port()
    argv = _script("serve", str(port), str(max_operations), str(flush_seconds))
    proc = harness.spawn(argv, root / f"receiver-{port}.log")
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise harness.BenchError(f"the receiver exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise harness.BenchError("the receiver did not listen within 60 s") from None
            time.sleep(0.1)


def run_driver(
    root: Path, port: int, bodies: list[bytes], content_type: str, seconds: float, connections: int
) -> dict[str, Any]:
    """The driver as its own process; ``seconds`` 0 sends each body once."""
    path = root / f"bodies-{port}-{len(bodies)}.json"
    path.write_text(json.dumps([base64.b64encode(b).decode() for b in bodies]))
    argv = _script("drive", str(port), str(path), content_type, str(seconds), str(connections))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 600, check=False)
    if done.returncode != 0:
        raise harness.BenchError(f"the driver failed: {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["refused"]:
        raise harness.BenchError(f"the receiver refused {figures['refused']} bodies")
    return figures


# --- the sections ----------------------------------------------------------------------


def cpu_rate(work: Callable[[], int], seconds: float) -> float:
    """Spans per CPU second of ``work`` (which returns the spans it handled), repeated
    for about ``seconds`` of CPU."""
    spans = 0
    started = time.process_time()
    while time.process_time() - started < seconds:
        spans += work()
    return spans / (time.process_time() - started)


def baselines(bodies: dict[str, list[bytes]], spans: int, seconds: float) -> dict[str, Any]:
    def cycle(fn: Callable[[bytes], object], batch: list[bytes]) -> Callable[[], int]:
        def work() -> int:
            for body in batch:
                fn(body)
            return spans * len(batch)

        return work

    def parse_protobuf(body: bytes) -> None:
        ExportTraceServiceRequest().ParseFromString(body)

    def parse_and_read(body: bytes) -> None:
        """The least any Python consumer does: parse, then read what a span's RED needs."""
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        read: list[object] = []
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    read += (span.name, span.kind, span.start_time_unix_nano)
                    read += (span.end_time_unix_nano, span.status.code, span.trace_id)
                    read += (span.span_id, span.parent_span_id)
                    read += (attribute.key for attribute in span.attributes)

    def parse_json(body: bytes) -> None:
        json_format.Parse(body, ExportTraceServiceRequest(), ignore_unknown_fields=True)

    return {
        PROTOBUF: {
            "bare_parse": cpu_rate(cycle(parse_protobuf, bodies[PROTOBUF]), seconds),
            "parse_and_read": cpu_rate(cycle(parse_and_read, bodies[PROTOBUF]), seconds),
            "decode_traces": cpu_rate(
                cycle(lambda b: decode_traces(b, PROTOBUF), bodies[PROTOBUF]), seconds
            ),
        },
        JSON: {
            "bare_parse": cpu_rate(cycle(parse_json, bodies[JSON]), seconds),
            "json_loads": cpu_rate(cycle(json.loads, bodies[JSON]), seconds),
            "decode_traces": cpu_rate(
                cycle(lambda b: decode_traces(b, JSON), bodies[JSON]), seconds
            ),
        },
    }


def receiver_rates(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Section 2 and 3: the bare decode rates and the receiver's, on the same bodies."""
    bodies = payloads(args.spans_per_request)
    figures: dict[str, Any] = {
        "spans_per_request": args.spans_per_request,
        "body_bytes": {kind: sum(map(len, b)) // len(b) for kind, b in bodies.items()},
        "baseline": baselines(bodies, args.spans_per_request, max(2.0, args.seconds / 3)),
    }
    proc, port = start_receiver(root, 1000, FLUSH_SECONDS)
    try:
        for kind in (PROTOBUF, JSON):
            run_driver(root, port, bodies[kind], kind, 1.0, args.connections)  # warm-up
            before = harness.cpu_seconds(proc.pid)
            driven = run_driver(root, port, bodies[kind], kind, args.seconds, args.connections)
            cpu = harness.cpu_seconds(proc.pid) - before
            spans = driven["accepted"] * args.spans_per_request
            rate = spans / cpu
            figures[kind] = {
                "spans": spans,
                "requests": driven["accepted"],
                "driven_seconds": driven["seconds"],
                "receiver_cpu_seconds": cpu,
                "spans_per_cpu_second": rate,
                "busy": cpu / driven["seconds"],
                "of_bare_parse": rate / figures["baseline"][kind]["bare_parse"],
                "of_parse_and_read": rate
                / figures["baseline"][kind].get("parse_and_read", math.nan),
                "of_decode_traces": rate / figures["baseline"][kind]["decode_traces"],
            }
    finally:
        harness.stop(proc)
    return figures


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise harness.BenchError(f"no VmRSS for pid {pid}")


def aggregator_bytes(bodies: list[bytes], max_operations: int) -> int:
    """What the aggregator holds once it took in ``bodies``: tracemalloc's count of the
    allocations still alive, the decoded spans gone."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        aggregator = RedAggregator(max_operations)
        for body in bodies:
            aggregator.add(decode_traces(body, PROTOBUF))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert aggregator.flush(1.0).operations  # alive until measured
    return held


def memory(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Section 4: memory at ``--operations`` distinct operations."""
    bodies = distinct_operation_payloads(
        args.operations, args.spans_per_operation, args.spans_per_request
    )
    figures: dict[str, Any] = {
        "operations": args.operations,
        "spans_per_operation": args.spans_per_operation,
        "spans": len(bodies) * args.spans_per_request,
        "rows": [],
    }
    for limit in (1000, args.operations):
        proc, port = start_receiver(root, limit, 3600.0)  # never emptied while measured
        try:
            run_driver(root, port, bodies[:1], PROTOBUF, 0, 1)  # warm-up: a few spans
            time.sleep(1.0)
            idle = rss_bytes(proc.pid)
            run_driver(root, port, bodies, PROTOBUF, 0, 1)
            time.sleep(1.0)
            rss = rss_bytes(proc.pid)
        finally:
            harness.stop(proc)
        figures["rows"].append(
            {
                "max_operations": limit,
                "aggregator_bytes": aggregator_bytes(bodies, limit),
                "receiver_idle_rss_bytes": idle,
                "receiver_rss_growth_bytes": rss - idle,
            }
        )
    return figures


def detection(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Section 5: time from the first erroring span to the IssueOpened."""
    figures: dict[str, Any] = load("trace_issues").run(root, args.detect_interval, args.bursts)
    return figures


SECTIONS: list[tuple[str, Callable[[argparse.Namespace, Path], dict[str, Any]]]] = [
    ("receiver", receiver_rates),
    ("memory", memory),
    ("detection", detection),
]
"""Each section's figures go into the results under its name; ``report`` prints them."""


# --- the report ------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:>12,.0f}/s"


def report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    if "receiver" in results:
        r = results["receiver"]
        base = r["baseline"]
        lines += [
            f"Trace intake, {r['spans_per_request']} spans a request "
            f"(protobuf {r['body_bytes'][PROTOBUF] / 1024:.0f} KiB, "
            f"JSON {r['body_bytes'][JSON] / 1024:.0f} KiB a body); spans per CPU second",
            f"  {'':34}{'protobuf':>14}{'JSON':>14}",
            f"  {'bare parse (opentelemetry-proto)':34}"
            f"{_rate(base[PROTOBUF]['bare_parse'])}{_rate(base[JSON]['bare_parse'])}",
            f"  {'parse + read span fields':34}{_rate(base[PROTOBUF]['parse_and_read'])}",
            f"  {'json.loads alone (the floor)':34}{'':>14}{_rate(base[JSON]['json_loads'])}",
            f"  {'decode into span records':34}"
            f"{_rate(base[PROTOBUF]['decode_traces'])}{_rate(base[JSON]['decode_traces'])}",
            f"  {'receiver process, over HTTP':34}"
            f"{_rate(r[PROTOBUF]['spans_per_cpu_second'])}{_rate(r[JSON]['spans_per_cpu_second'])}",
            f"  {'receiver / bare parse':34}{r[PROTOBUF]['of_bare_parse']:>13.1%}"
            f"{r[JSON]['of_bare_parse']:>14.1%}   (goal 50 %)",
            f"  {'receiver / parse + read':34}{r[PROTOBUF]['of_parse_and_read']:>13.1%}",
            f"  {'receiver / decode into records':34}{r[PROTOBUF]['of_decode_traces']:>13.1%}"
            f"{r[JSON]['of_decode_traces']:>14.1%}",
            f"  {'receiver busy while driven':34}{r[PROTOBUF]['busy']:>13.0%}"
            f"{r[JSON]['busy']:>14.0%}   (of one core; under 100 %: the driver or other work",
            f"  {'':34}{'':28}   on the machine held it back)",
        ]
    if "memory" in results:
        m = results["memory"]
        lines.append(
            f"Memory at {m['operations']:,} distinct operations, "
            f"{m['spans_per_operation']} server spans each ({m['spans']:,} spans in all)"
        )
        for row in m["rows"]:
            lines.append(
                f"  max_operations {row['max_operations']:>6,}: aggregator "
                f"{row['aggregator_bytes'] / 2**20:7.1f} MiB (tracemalloc), receiver RSS "
                f"+{row['receiver_rss_growth_bytes'] / 2**20:.0f} MiB over "
                f"{row['receiver_idle_rss_bytes'] / 2**20:.0f} MiB idle"
            )
    if "detection" in results:
        lines.append(load("trace_issues").report(results["detection"]))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.spans_per_request < 4 or args.connections < 1:
        print(
            "medbay bench traces: need --seconds > 0, --spans-per-request >= 4, --connections >= 1"
        )
        return 1
    if not args.detect_interval > 0 or args.bursts < 1:
        print("medbay bench traces: need --detect-interval > 0 and --bursts >= 1")
        return 1
    if args.operations < 1 or args.spans_per_operation < 1:
        print("medbay bench traces: need --operations and --spans-per-operation >= 1")
        return 1
    results: dict[str, Any] = {
        "machine": harness.machine(),
        "git": harness.git_state(),
        "options": {k: v for k, v in vars(args).items() if not callable(v)},
    }
    with tempfile.TemporaryDirectory(prefix="medbay-bench-") as tmp:
        for name, section in SECTIONS:
            try:
                results[name] = section(args, Path(tmp))
            except (harness.BenchError, OSError) as exc:
                print(f"medbay bench traces: {name}: {exc}", file=sys.stderr)
                return 1
    print(report(results))
    harness.RESULTS.mkdir(exist_ok=True)
    path = harness.RESULTS / f"traces-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"  written to {path}")
    return 0


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "serve":
        port, max_operations, flush_seconds = rest
        asyncio.run(serve(int(port), int(max_operations), float(flush_seconds)))
    elif command == "drive":
        port, path, content_type, seconds, connections = rest
        bodies = [base64.b64decode(b) for b in json.loads(Path(path).read_text())]
        drive(int(port), bodies, content_type, float(seconds), int(connections))
    else:
        raise SystemExit(f"unknown command {command!r}: serve or drive")
