"""Spans to RED samples: real OTLP payloads from the OpenTelemetry SDK and its exporter."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from medbay.collector.spans import (
    JSON,
    OTHER,
    PROTOBUF,
    RESERVOIR_SIZE,
    RedAggregator,
    SpanError,
    SpanRecord,
    decode_traces,
    red_samples,
)

T0 = 1_700_000_000_000_000_000
"""A start time in ns; spans get explicit times so durations are exact."""
MS = 1_000_000


def tracer(service: str | None) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    attributes = {} if service is None else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("medbay-test"), exporter


def sdk_spans() -> list[ReadableSpan]:
    """Service A calls B over HTTP (context propagated by headers); B fails a request
    on its own; A runs a root background job."""
    tracer_a, spans_a = tracer("shop")
    tracer_b, spans_b = tracer("inventory")
    propagator = TraceContextTextMapPropagator()
    headers: dict[str, str] = {}

    client = tracer_a.start_span(
        "GET",
        kind=trace.SpanKind.CLIENT,
        start_time=T0,
        attributes={"server.address": "inventory.internal", "http.request.method": "GET"},
    )
    propagator.inject(headers, context=trace.set_span_in_context(client))
    server = tracer_b.start_span(
        "GET /items/{id}",
        context=propagator.extract(headers),
        kind=trace.SpanKind.SERVER,
        start_time=T0 + 2 * MS,
        attributes={"http.route": "/items/{id}", "http.response.status_code": 200},
    )
    server.end(end_time=T0 + 30 * MS)
    client.end(end_time=T0 + 35 * MS)

    failed = tracer_b.start_span(
        "GET",
        kind=trace.SpanKind.SERVER,
        start_time=T0,
        attributes={"http.route": "/stock", "http.response.status_code": 500},
    )
    failed.end(end_time=T0 + 12 * MS)

    job = tracer_a.start_span("nightly-report", start_time=T0)
    job.end(end_time=T0 + 500 * MS)
    return [*spans_a.get_finished_spans(), *spans_b.get_finished_spans()]


def protobuf(spans: Sequence[ReadableSpan]) -> bytes:
    """Exactly what the SDK's OTLP/HTTP exporter sends."""
    body: bytes = encode_spans(spans).SerializeToString()
    return body


def by_operation(records: list[SpanRecord]) -> dict[tuple[str, str, str], SpanRecord]:
    return {(r.service, r.kind, r.operation): r for r in records}


def test_sdk_protobuf_decodes_to_records() -> None:
    spans = sdk_spans()
    records = by_operation(decode_traces(protobuf(spans), PROTOBUF))
    assert set(records) == {
        ("shop", "CLIENT", "GET"),
        ("inventory", "SERVER", "/items/{id}"),
        ("inventory", "SERVER", "/stock"),
        ("shop", "INTERNAL", "nightly-report"),
    }
    client = records["shop", "CLIENT", "GET"]
    server = records["inventory", "SERVER", "/items/{id}"]
    failed = records["inventory", "SERVER", "/stock"]
    job = records["shop", "INTERNAL", "nightly-report"]

    assert server.parent_span_id == client.span_id
    assert server.trace_id == client.trace_id
    assert client.peer == "inventory.internal"
    assert server.peer is None
    assert (client.duration_ms, server.duration_ms, failed.duration_ms) == (35.0, 28.0, 12.0)
    assert (server.start_ns, server.end_ns) == (T0 + 2 * MS, T0 + 30 * MS)
    assert failed.error and not server.error and not client.error
    assert job.parent_span_id == b"" and len(job.span_id) == 8 and len(job.trace_id) == 16


def test_status_error_and_missing_service_name() -> None:
    tracer_x, exporter = tracer(None)
    span = tracer_x.start_span("consume", kind=trace.SpanKind.CONSUMER, start_time=T0)
    span.set_status(trace.StatusCode.ERROR, "boom")
    span.end(end_time=T0 + MS)
    (record,) = decode_traces(protobuf(exporter.get_finished_spans()), PROTOBUF)
    # The SDK itself names a service-less resource "unknown_service:<process>".
    assert record.service.startswith("unknown_service")
    assert (record.kind, record.error, record.operation) == ("CONSUMER", True, "consume")

    bare = decode_traces(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{}]}]}]}', JSON)
    assert bare[0].service == "unknown_service"


def attribute(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def otlp_json(spans: Sequence[ReadableSpan]) -> bytes:
    """The OTLP JSON encoding (hex ids, lowerCamelCase, integer enums, int64 as strings)."""
    resources: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        context = span.get_span_context()
        assert context is not None and span.resource is not None
        body: dict[str, Any] = {
            "traceId": f"{context.trace_id:032x}",
            "spanId": f"{context.span_id:016x}",
            "name": span.name,
            "kind": span.kind.value + 1,  # the API's INTERNAL is 0, OTLP's is 1
            "startTimeUnixNano": str(span.start_time),
            "endTimeUnixNano": span.end_time,
            "attributes": [attribute(k, v) for k, v in (span.attributes or {}).items()],
            "status": {"code": 2} if span.status.status_code == trace.StatusCode.ERROR else {},
        }
        if span.parent is not None:
            body["parentSpanId"] = f"{span.parent.span_id:016x}"
        resources.setdefault(str(span.resource.attributes["service.name"]), []).append(body)
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [attribute("service.name", service)]},
                    "scopeSpans": [{"scope": {"name": "medbay-test"}, "spans": bodies}],
                }
                for service, bodies in resources.items()
            ]
        }
    ).encode()


def test_json_decodes_to_the_same_records_as_protobuf() -> None:
    spans = sdk_spans()
    from_json = decode_traces(otlp_json(spans), "application/json; charset=utf-8")
    assert sorted(from_json, key=repr) == sorted(decode_traces(protobuf(spans), PROTOBUF), key=repr)
    assert '"kind": 2' in otlp_json(spans).decode()


def test_json_kind_by_name_and_unknown_fields() -> None:
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "spanId": "00f067aa0ba902b7",
                                "name": "x",
                                "kind": "SPAN_KIND_SERVER",
                                "someFutureField": 1,
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (record,) = decode_traces(json.dumps(body).encode(), JSON)
    assert (record.kind, record.span_id) == ("SERVER", bytes.fromhex("00f067aa0ba902b7"))


def test_json_field_names_numbers_and_enums_as_protobuf_reads_them() -> None:
    """OTLP JSON is protobuf's JSON mapping: either field name, int64 as a number or a
    string, enums as numbers (and, leniently, names)."""
    body = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "a"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "name": "GET",
                                "kind": "SPAN_KIND_SERVER",
                                "start_time_unix_nano": 1_000_000,
                                "endTimeUnixNano": "4000000",
                                "status": {"code": "STATUS_CODE_UNSET"},
                                "attributes": [
                                    {"key": "http.route", "value": {"stringValue": "/x"}},
                                    {"key": "http.status_code", "value": {"intValue": "503"}},
                                    {"key": "ignored", "value": {"arrayValue": {"values": []}}},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    (record,) = decode_traces(json.dumps(body).encode(), JSON)
    assert (record.service, record.operation, record.kind) == ("a", "/x", "SERVER")
    assert (record.duration_ms, record.error, record.trace_id) == (3.0, True, b"")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{}", "text/plain", "unsupported content type 'text/plain'"),
        (b"\xff\xfe garbage", PROTOBUF, "not an OTLP ExportTraceServiceRequest"),
        (b"[1, 2]", JSON, "object, not list"),
        (b"{not json", JSON, "not JSON"),
        (b"\xff", JSON, "not JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{}, {}, {}, {"traceId": "xyz"}]}]}]}',
            JSON,
            "resourceSpans[0].scopeSpans[0].spans[3].traceId: not 32 hex digits",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"parentSpanId": 7}]}]}]}',
            JSON,
            "spans[0].parentSpanId: not 16 hex digits",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            JSON,
            "not an OTLP ExportTraceServiceRequest: resourceSpans[0].scopeSpans[0].spans[0]"
            ".startTimeUnixNano: 'soon' is not an integer",
        ),
        (b'{"resourceSpans": 5}', JSON, "resourceSpans: not a list but int"),
        (b'{"resourceSpans": [{"resource": []}]}', JSON, "resourceSpans[0].resource: not an"),
        (b'{"resourceSpans": [{"scopeSpans": {}}]}', JSON, "scopeSpans: not a list but dict"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{}, "span"]}]}]}',
            JSON,
            "resourceSpans[0].scopeSpans[0].spans[1]: not an object but str",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_NOPE"}]}]}]}',
            JSON,
            "spans[0].kind: unknown value 'SPAN_KIND_NOPE'",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": -5}]}]}]}',
            JSON,
            "spans[0].endTimeUnixNano: -5 is out of range",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": '
            b'"http.response.status_code", "value": {"intValue": "five"}}]}]}]}]}',
            JSON,
            "spans[0].attributes[0].value.intValue: 'five' is not an integer",
        ),
        (
            b'{"resourceSpans": [{"resource": {"attributes": [{"key": 7}]}}]}',
            JSON,
            "resourceSpans[0].resource.attributes[0]: not an object with a string key",
        ),
    ],
)
def test_bad_input_raises_span_error(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(SpanError) as caught:
        decode_traces(body, content_type)
    assert type(caught.value) is SpanError
    assert message in str(caught.value)


def record(
    operation: str,
    duration_ms: float = 10.0,
    *,
    service: str = "shop",
    kind: str = "SERVER",
    error: bool = False,
    trace_id: bytes = b"t" * 16,
    span_id: bytes = b"",
    parent: bytes = b"",
    peer: str | None = None,
) -> SpanRecord:
    return SpanRecord(
        service=service,
        operation=operation,
        kind=kind,
        start_ns=T0,
        end_ns=T0 + int(duration_ms * MS),
        duration_ms=duration_ms,
        error=error,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        peer=peer,
    )


def test_rates_error_ratio_and_percentiles() -> None:
    durations = [float(d) for d in range(1, 101)]
    aggregator = RedAggregator()
    aggregator.add(record("/items", d, error=d > 90) for d in durations)
    aggregator.add([record("/items", kind="CLIENT"), record("/items", kind="PRODUCER")])
    aggregator.add([record("step", kind="INTERNAL", parent=b"p" * 8)])  # not a root: ignored
    aggregator.add([record("job", 40.0, kind="INTERNAL"), record("q", kind="CONSUMER")])

    snapshot = aggregator.flush(10.0)
    ops = {(op.service, op.operation): op for op in snapshot.operations}
    assert set(ops) == {("shop", "/items"), ("shop", "job"), ("shop", "q")}
    items = ops["shop", "/items"]
    assert items.requests_per_second == pytest.approx(10.0)
    assert items.errors_per_second == pytest.approx(1.0)
    assert items.error_ratio == pytest.approx(0.1)
    expected = np.percentile(durations, [50, 95, 99])
    assert [items.latency_p50_ms, items.latency_p95_ms, items.latency_p99_ms] == pytest.approx(
        list(expected)
    )
    assert items.latency_samples == 100
    assert ops["shop", "job"].latency_p99_ms == 40.0
    assert snapshot.dropped_operations == 0

    empty = aggregator.flush(10.0)
    assert (empty.operations, empty.edges, empty.dropped_operations) == ((), (), 0)


def test_cardinality_limit() -> None:
    aggregator = RedAggregator(max_operations=3)
    aggregator.add(record(f"/op{n}") for n in range(5))
    aggregator.add([record("/op0"), record("/op4")])
    snapshot = aggregator.flush(1.0)
    ops = {op.operation: op.requests_per_second for op in snapshot.operations}
    assert ops == {"/op0": 2.0, "/op1": 1.0, "/op2": 1.0, OTHER: 3.0}
    assert snapshot.dropped_operations == 3

    fresh = aggregator.flush(1.0)
    assert fresh.dropped_operations == 0
    aggregator.add([record("/op4")])
    assert [op.operation for op in aggregator.flush(1.0).operations] == ["/op4"]


def test_reservoir_keeps_memory_bounded_and_percentiles_close() -> None:
    durations = [random.Random(7).expovariate(1 / 50) for _ in range(20_000)]
    aggregator = RedAggregator()
    aggregator.add(record("/busy", d) for d in durations)
    (busy,) = aggregator.flush(20.0).operations
    assert busy.latency_samples == RESERVOIR_SIZE
    assert busy.requests_per_second == 1000.0
    p50, p95, p99 = np.percentile(durations, [50, 95, 99])
    assert busy.latency_p50_ms == pytest.approx(p50, rel=0.1)
    assert busy.latency_p95_ms == pytest.approx(p95, rel=0.1)
    assert busy.latency_p99_ms == pytest.approx(p99, rel=0.25)


def sdk_call_records() -> tuple[SpanRecord, SpanRecord]:
    records = by_operation(decode_traces(protobuf(sdk_spans()), PROTOBUF))
    return records["shop", "CLIENT", "GET"], records["inventory", "SERVER", "/items/{id}"]


@pytest.mark.parametrize("client_first", [True, False])
def test_edge_whichever_span_arrives_first(client_first: bool) -> None:
    client, server = sdk_call_records()
    aggregator = RedAggregator()
    aggregator.add([client] if client_first else [server])
    aggregator.add([server] if client_first else [client])
    snapshot = aggregator.flush(2.0)
    assert [(e.client, e.server, e.requests_per_second) for e in snapshot.edges] == [
        ("shop", "inventory", 0.5)
    ]


def test_edge_across_intervals_and_to_peer() -> None:
    client, server = sdk_call_records()
    aggregator = RedAggregator()
    aggregator.add([client])
    assert [(e.client, e.server) for e in aggregator.flush(1.0).edges] == [
        ("shop", "inventory.internal")  # no server span seen: the client's peer
    ]
    aggregator.add([server])  # a late server span still finds its remembered client
    assert [(e.client, e.server) for e in aggregator.flush(1.0).edges] == [("shop", "inventory")]

    aggregator.add([record("SELECT", kind="CLIENT", span_id=b"c" * 8)])  # no peer, no server
    assert aggregator.flush(1.0).edges == ()


def test_red_samples_names_and_labels() -> None:
    aggregator = RedAggregator()
    aggregator.add(decode_traces(protobuf(sdk_spans()), PROTOBUF))
    samples = red_samples(aggregator.flush(60.0))
    named = {(s["name"], tuple(sorted(s.get("labels", {}).items()))): s for s in samples}
    stock = (("operation", "/stock"), ("service", "inventory"))
    assert named["span_requests_per_second", stock]["value"] == pytest.approx(1 / 60)
    assert named["span_errors_per_second", stock]["value"] == pytest.approx(1 / 60)
    assert named["span_error_ratio", stock]["value"] == 1.0
    for p in (50, 95, 99):
        assert named[f"span_latency_p{p}_ms", stock]["value"] == 12.0
        assert named[f"span_latency_p{p}_ms", stock]["unit"] == "ms"
    edge = named["service_edge_requests_per_second", (("client", "shop"), ("server", "inventory"))]
    assert edge["value"] == pytest.approx(1 / 60)
    assert named["spans_dropped_operations", ()]["value"] == 0.0
    assert {s["name"] for s in samples} == {
        "span_service_requests_per_second",
        "span_service_errors_per_second",
        "span_service_latency_p50_ms",
        "span_service_latency_p95_ms",
        "span_service_latency_p99_ms",
        "span_requests_per_second",
        "span_errors_per_second",
        "span_error_ratio",
        "span_latency_p50_ms",
        "span_latency_p95_ms",
        "span_latency_p99_ms",
        "service_edge_requests_per_second",
        "spans_dropped_operations",
        "spans_dropped_edges",
    }
    operations = {dict(s.get("labels", {})).get("operation") for s in samples}
    assert operations == {"/items/{id}", "/stock", "nightly-report", None}


def test_long_names_are_cut_to_fit_labels() -> None:
    aggregator = RedAggregator()
    aggregator.add([record("/" + "x" * 500, service="s" * 300)])
    (op,) = aggregator.flush(1.0).operations
    assert (len(op.service), len(op.operation)) == (200, 200)


def by_name(samples: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s["name"], tuple(sorted(s.get("labels", {}).items()))): s["value"] for s in samples}


def test_service_figures_merge_every_operation() -> None:
    fast = [float(d) for d in range(1, 31)]
    slow = [float(d) for d in range(100, 110)]
    aggregator = RedAggregator()
    aggregator.add(record("/fast", d, error=d <= 3) for d in fast)
    aggregator.add(record("/slow", d, error=d < 105) for d in slow)
    aggregator.add(
        record("job", 7.0, kind="CONSUMER", service="mailer", error=True) for _ in range(3)
    )
    aggregator.add([record("GET", kind="CLIENT", service="mailer")])  # not a request of mailer

    snapshot = aggregator.flush(10.0)
    services = {s.service: s for s in snapshot.services}
    assert set(services) == {"shop", "mailer"}
    shop = services["shop"]
    assert (shop.requests, shop.latency_samples) == (40, 40)
    assert shop.requests_per_second == pytest.approx(4.0)
    assert shop.errors_per_second == pytest.approx(0.8)
    assert shop.error_ratio == pytest.approx(8 / 40)
    expected = np.percentile(fast + slow, [50, 95, 99])
    assert [shop.latency_p50_ms, shop.latency_p95_ms, shop.latency_p99_ms] == pytest.approx(
        list(expected)
    )
    assert services["mailer"].requests == 3

    samples = by_name(red_samples(snapshot))
    assert samples["span_service_requests_per_second", (("service", "shop"),)] == 4.0
    assert samples["span_service_errors_per_second", (("service", "mailer"),)] == 0.3
    assert samples["span_service_error_ratio", (("service", "shop"),)] == pytest.approx(0.2)
    assert samples["span_service_latency_p95_ms", (("service", "shop"),)] == pytest.approx(
        expected[1]
    )
    # 3 requests are too few for a ratio that means anything, unless told otherwise
    assert ("span_service_error_ratio", (("service", "mailer"),)) not in samples
    fewer = by_name(red_samples(snapshot, min_requests_for_ratio=3))
    assert fewer["span_service_error_ratio", (("service", "mailer"),)] == 1.0


def test_service_samples_come_first() -> None:
    """A batch too large is cut from its end: the per-service figures must survive."""
    aggregator = RedAggregator()
    aggregator.add(record(f"/op{n}", service=f"s{n % 3}") for n in range(30))
    client, server = sdk_call_records()
    aggregator.add([client, server])
    names = [s["name"] for s in red_samples(aggregator.flush(1.0))]
    last_service = max(i for i, n in enumerate(names) if n.startswith("span_service_"))
    first_operation = names.index("span_requests_per_second")
    assert last_service < names.index("spans_dropped_operations") < first_operation
    assert names[-1] == "service_edge_requests_per_second"


def test_service_figures_whole_past_the_operation_limit() -> None:
    aggregator = RedAggregator(max_operations=2)
    aggregator.add(record(f"/op{n}", float(n), error=n == 0) for n in range(6))
    aggregator.add(record("/x", service=f"other{n}") for n in range(3))
    snapshot = aggregator.flush(1.0)
    services = {s.service: s.requests for s in snapshot.services}
    # shop keeps all 6 under /op0, /op1 and (other); past twice the limit the
    # remaining services are one (other) service
    assert services == {"shop": 6, "other0": 1, OTHER: 2}
    assert {(op.service, op.operation) for op in snapshot.operations} == {
        ("shop", "/op0"),
        ("shop", "/op1"),
        ("shop", OTHER),
        ("other0", OTHER),
        (OTHER, OTHER),
    }
    assert snapshot.dropped_operations == 7


def test_service_reservoir_is_bounded() -> None:
    aggregator = RedAggregator()
    aggregator.add(record(f"/op{n % 10}", float(n % 97)) for n in range(10 * RESERVOIR_SIZE))
    (shop,) = aggregator.flush(1.0).services
    assert shop.latency_samples == RESERVOIR_SIZE
    assert shop.requests == 10 * RESERVOIR_SIZE
    assert shop.latency_p50_ms == pytest.approx(48, abs=5)
