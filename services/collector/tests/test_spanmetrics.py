"""Span figures from an OpenTelemetry Collector's spanmetrics and servicegraph output:
expositions made as the connectors make them, for spans whose figures are known."""

from __future__ import annotations

import bisect
import math
import random
from collections import defaultdict
from dataclasses import dataclass

import pytest

from medbay.collector.collector import Collector, fresh_connection_client
from medbay.collector.config import CollectorConfig, SpanmetricsScrape
from medbay.collector.spanmetrics import (
    SpanmetricsDeltas,
    SpanmetricsError,
    SpanmetricsReader,
    histogram_quantile,
)
from medbay.collector.spans import (
    OTHER,
    OperationRed,
    RedAggregator,
    ServiceRed,
    SpanRecord,
    red_samples,
)

BUCKETS_MS = (2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10_000, 15_000)
"""The spanmetrics connector's default histogram buckets."""
KINDS = {
    "SERVER": "SPAN_KIND_SERVER",
    "CONSUMER": "SPAN_KIND_CONSUMER",
    "CLIENT": "SPAN_KIND_CLIENT",
}


@dataclass(frozen=True)
class FakeSpan:
    service: str
    name: str
    duration_ms: float
    error: bool = False
    kind: str = "SERVER"

    def record(self) -> SpanRecord:
        return SpanRecord(
            self.service,
            self.name,
            self.kind,
            0,
            int(self.duration_ms * 1e6),
            self.duration_ms,
            self.error,
            b"t" * 16,
            b"s" * 8,
            b"",
            None,
        )


class Connector:
    """The cumulative counters the spanmetrics and servicegraph connectors keep, shown as
    their Prometheus exporter shows them."""

    def __init__(self, *, seconds: bool = False) -> None:
        self.seconds = seconds
        self.calls: dict[tuple[str, str, str, str], float] = defaultdict(float)
        self.buckets: dict[tuple[str, str, str, str], list[float]] = {}
        self.sums: dict[tuple[str, str, str, str], float] = defaultdict(float)
        self.edges: dict[tuple[str, str], float] = defaultdict(float)

    def add(self, spans: list[FakeSpan]) -> None:
        for span in spans:
            status = "STATUS_CODE_ERROR" if span.error else "STATUS_CODE_UNSET"
            key = (span.service, span.name, KINDS[span.kind], status)
            self.calls[key] += 1
            counts = self.buckets.setdefault(key, [0.0] * (len(BUCKETS_MS) + 1))
            counts[bisect.bisect_left(BUCKETS_MS, span.duration_ms)] += 1
            self.sums[key] += span.duration_ms

    def call(self, client: str, server: str, times: int) -> None:
        self.edges[client, server] += times

    def exposition(self) -> str:
        unit = "seconds" if self.seconds else "milliseconds"
        scale = 1000 if self.seconds else 1
        lines = [
            "# HELP traces_span_metrics_calls_total",
            "# TYPE traces_span_metrics_calls_total counter",
        ]
        for (service, name, kind, status), count in self.calls.items():
            labels = _labels(service, name, kind, status)
            lines.append(f"traces_span_metrics_calls_total{{{labels}}} {count}")
        lines.append(f"# TYPE traces_span_metrics_duration_{unit} histogram")
        for key, counts in self.buckets.items():
            labels = _labels(*key)
            cumulative = 0.0
            for bound, count in zip([*BUCKETS_MS, math.inf], counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == math.inf else f"{bound / scale:g}"
                lines.append(
                    f'traces_span_metrics_duration_{unit}_bucket{{{labels},le="{le}"}} {cumulative}'
                )
            lines.append(
                f"traces_span_metrics_duration_{unit}_sum{{{labels}}} {self.sums[key] / scale}"
            )
            lines.append(f"traces_span_metrics_duration_{unit}_count{{{labels}}} {cumulative}")
        lines.append("# TYPE traces_service_graph_request_total counter")
        for (client, server), count in self.edges.items():
            lines.append(
                f'traces_service_graph_request_total{{client="{client}",connection_type="",'
                f'server="{server}"}} {count}'
            )
        return "\n".join(lines) + "\n"


def _labels(service: str, name: str, kind: str, status: str) -> str:
    return (
        f'job="otel",service_name="{service}",span_kind="{kind}",span_name="{name}",'
        f'status_code="{status}"'
    )


def config(**changes: object) -> SpanmetricsScrape:
    return SpanmetricsScrape.model_validate({"url": "http://otel:8889/metrics", **changes})


def known_spans(seed: int = 3) -> list[FakeSpan]:
    """Two services, three operations, errors and a spread of durations."""
    draw = random.Random(seed)
    spans = [FakeSpan("shop", "/cart", draw.uniform(1, 90), error=n % 10 == 0) for n in range(200)]
    spans += [
        FakeSpan("shop", "/pay", draw.uniform(150, 1900), error=n % 4 == 0) for n in range(40)
    ]
    spans += [FakeSpan("mail", "send", draw.uniform(3, 9), kind="CONSUMER") for _ in range(30)]
    spans += [FakeSpan("shop", "GET", 5.0, kind="CLIENT") for _ in range(25)]  # not requests
    return spans


def bucket_of(value: float) -> tuple[float, float]:
    """The default bucket ``value`` falls in, as (lower, upper) bounds."""
    index = bisect.bisect_left(BUCKETS_MS, value)
    return (0.0 if index == 0 else BUCKETS_MS[index - 1]), BUCKETS_MS[index]


def test_first_scrape_is_the_baseline() -> None:
    connector = Connector()
    connector.add(known_spans())
    assert SpanmetricsDeltas(config()).read(connector.exposition(), now=100.0) is None


def test_same_figures_as_the_receiver_on_the_same_spans() -> None:
    connector = Connector()
    connector.add(known_spans(seed=1))  # before the baseline: not in the figures
    deltas = SpanmetricsDeltas(config())
    assert deltas.read(connector.exposition(), now=100.0) is None

    spans = known_spans(seed=2)
    connector.add(spans)
    scraped = deltas.read(connector.exposition(), now=110.0)
    aggregator = RedAggregator()
    aggregator.add(span.record() for span in spans)
    received = aggregator.flush(10.0)

    assert scraped is not None
    assert scraped.interval_seconds == 10.0
    assert [s.service for s in scraped.services] == [s.service for s in received.services]
    pairs: list[tuple[ServiceRed | OperationRed, ServiceRed | OperationRed]] = [
        *zip(scraped.services, received.services, strict=True),
        *zip(scraped.operations, received.operations, strict=True),
    ]
    for mine, theirs in pairs:
        assert mine.requests_per_second == pytest.approx(theirs.requests_per_second)
        assert mine.errors_per_second == pytest.approx(theirs.errors_per_second)
        assert mine.error_ratio == pytest.approx(theirs.error_ratio)
        for p in ("p50", "p95", "p99"):
            estimate, exact = getattr(mine, f"latency_{p}_ms"), getattr(theirs, f"latency_{p}_ms")
            lower, upper = bucket_of(exact)
            assert lower <= estimate <= upper, (mine, p, exact)
    assert {(o.service, o.operation) for o in scraped.operations} == {
        ("mail", "send"),
        ("shop", "/cart"),
        ("shop", "/pay"),
    }
    samples = {(s["name"], tuple(s.get("labels", {}).values())) for s in red_samples(scraped)}
    assert ("span_service_error_ratio", ("shop",)) in samples
    assert ("span_latency_p95_ms", ("shop", "/pay")) in samples


def test_an_interval_without_spans_has_no_figures() -> None:
    connector = Connector()
    connector.add(known_spans())
    deltas = SpanmetricsDeltas(config())
    deltas.read(connector.exposition(), now=0.0)
    quiet = deltas.read(connector.exposition(), now=5.0)
    assert quiet is not None
    assert (quiet.services, quiet.operations, quiet.edges) == ((), (), ())


def test_the_route_dimension_names_the_operation_and_others_are_summed() -> None:
    """With ``http.route`` and a status code as dimensions (the shipped config), the
    operation is the route, as the receiver names it, over every status code."""

    def line(route: str, code: str, status: str, value: float) -> str:
        return (
            f'traces_span_metrics_calls_total{{service_name="shop",span_kind="SPAN_KIND_SERVER",'
            f'span_name="GET {route}",http_route="{route}",http_response_status_code="{code}",'
            f'status_code="{status}"}} {value}'
        )

    def exposition(ok: float, failed: float) -> str:
        return "\n".join(
            [
                "# TYPE traces_span_metrics_calls_total counter",
                line("/cart", "200", "STATUS_CODE_UNSET", ok),
                line("/cart", "503", "STATUS_CODE_ERROR", failed),
            ]
        )

    deltas = SpanmetricsDeltas(config())
    deltas.read(exposition(100, 10), now=0.0)
    snapshot = deltas.read(exposition(140, 20), now=10.0)
    assert snapshot is not None
    (operation,) = snapshot.operations
    assert (operation.service, operation.operation) == ("shop", "/cart")
    assert (operation.requests_per_second, operation.errors_per_second) == (5.0, 1.0)


def test_durations_in_seconds() -> None:
    connector = Connector(seconds=True)
    deltas = SpanmetricsDeltas(config(duration_metric="traces_span_metrics_duration_seconds"))
    deltas.read(connector.exposition(), now=0.0)
    connector.add([FakeSpan("shop", "/slow", 3000.0) for _ in range(10)])
    snapshot = deltas.read(connector.exposition(), now=10.0)
    assert snapshot is not None
    (service,) = snapshot.services
    assert service.latency_p50_ms is not None and 2000 < service.latency_p50_ms <= 5000
    assert service.latency_samples == 10


def test_a_reset_counter_counts_from_zero() -> None:
    """The OpenTelemetry Collector restarted between two scrapes: its counters start over."""
    before = Connector()
    before.add([FakeSpan("shop", "/cart", 5.0) for _ in range(100)])
    deltas = SpanmetricsDeltas(config())
    deltas.read(before.exposition(), now=0.0)
    restarted = Connector()
    restarted.add([FakeSpan("shop", "/cart", 5.0, error=n < 3) for n in range(6)])
    snapshot = deltas.read(restarted.exposition(), now=2.0)
    assert snapshot is not None
    (service,) = snapshot.services
    assert (service.requests, service.errors_per_second) == (6, 1.5)


def test_a_new_series_counts_whole() -> None:
    connector = Connector()
    connector.add([FakeSpan("shop", "/cart", 5.0)])
    deltas = SpanmetricsDeltas(config())
    deltas.read(connector.exposition(), now=0.0)
    connector.add([FakeSpan("shop", "/cart", 5.0, error=True) for _ in range(4)])
    snapshot = deltas.read(connector.exposition(), now=1.0)
    assert snapshot is not None
    (operation,) = snapshot.operations
    assert (operation.requests_per_second, operation.error_ratio) == (4.0, 1.0)


def test_edges() -> None:
    connector = Connector()
    connector.call("shop", "inventory", 10)
    deltas = SpanmetricsDeltas(config())
    deltas.read(connector.exposition(), now=0.0)
    connector.call("shop", "inventory", 30)
    connector.call("shop", "payments", 5)
    snapshot = deltas.read(connector.exposition(), now=10.0)
    assert snapshot is not None
    assert [(e.client, e.server, e.requests_per_second) for e in snapshot.edges] == [
        ("shop", "inventory", 3.0),
        ("shop", "payments", 0.5),
    ]


def test_cardinality_keeps_the_busiest() -> None:
    connector = Connector()
    deltas = SpanmetricsDeltas(config(max_operations=2))
    deltas.read(connector.exposition(), now=0.0)
    for n, calls in enumerate([50, 1, 30, 2]):
        connector.add([FakeSpan("shop", f"/op{n}", 5.0) for _ in range(calls)])
    for n in range(3):
        connector.call("shop", f"peer{n}", 10 - n)
    snapshot = deltas.read(connector.exposition(), now=1.0)
    assert snapshot is not None
    assert {o.operation: o.requests_per_second for o in snapshot.operations} == {
        "/op0": 50,
        "/op2": 30,
        OTHER: 3,
    }
    assert snapshot.dropped_operations == 3
    (service,) = snapshot.services
    assert service.requests == 83
    assert [e.server for e in snapshot.edges] == ["peer0", "peer1"]
    assert snapshot.dropped_edges == 8


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>Not the metrics</body></html>",
        'traces_span_metrics_calls_total{service_name="shop" 1\n',
        "traces_span_metrics_calls_total one\n",
    ],
)
def test_unparseable_exposition(text: str) -> None:
    connector = Connector()
    connector.add([FakeSpan("shop", "/cart", 5.0)])
    deltas = SpanmetricsDeltas(config())
    deltas.read(connector.exposition(), now=0.0)
    with pytest.raises(SpanmetricsError) as caught:
        deltas.read(text, now=5.0)
    assert caught.value.reason == "unparseable"
    assert "not the Prometheus text format" in str(caught.value)
    # the failed scrape left the previous one as the baseline
    connector.add([FakeSpan("shop", "/cart", 5.0) for _ in range(20)])
    snapshot = deltas.read(connector.exposition(), now=10.0)
    assert snapshot is not None
    assert snapshot.services[0].requests_per_second == 2.0


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)], 1.0),
        (0.75, [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)], 1.5),
        (0.9, [(1.0, 5.0), (math.inf, 10.0)], 1.0),  # in +Inf: the highest finite bound
        (0.5, [(10.0, 0.0), (20.0, 4.0), (math.inf, 4.0)], 15.0),
        (0.5, [(math.inf, 4.0)], None),
    ],
)
def test_histogram_quantile_as_promql(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    assert histogram_quantile(q, buckets) == expected


async def test_reader_over_http(web) -> None:
    connector = Connector()
    web.routes["/metrics"] = (200, "text/plain; version=0.0.4", connector.exposition().encode())
    http = fresh_connection_client()
    reader = SpanmetricsReader(config(url=web.url + "/metrics"), http)
    try:
        assert await reader.read() is None
        connector.add([FakeSpan("shop", "/cart", 5.0) for _ in range(10)])
        web.routes["/metrics"] = (200, "text/plain", connector.exposition().encode())
        snapshot = await reader.read()
        assert snapshot is not None and snapshot.services[0].requests == 10

        web.routes["/metrics"] = (503, "text/plain", b"down")
        with pytest.raises(SpanmetricsError) as caught:
            await reader.read()
        assert caught.value.reason == "http_status" and "HTTP 503" in str(caught.value)
    finally:
        await http.aclose()


async def test_a_failed_spanmetrics_scrape_leaves_the_rest_of_the_batch(closed_port) -> None:
    settings = {"top_processes": 0, "spanmetrics": {"url": f"http://127.0.0.1:{closed_port}/"}}
    collector = Collector(CollectorConfig.model_validate(settings))
    try:
        batch = await collector.collect_once()
    finally:
        await collector.aclose()
    assert collector.last_trace_failure == "unreachable"
    names = {s["name"] for s in batch.samples}
    assert "memory_percent" in names
    assert not [n for n in names if n.startswith("span")]


async def test_spanmetrics_samples_in_the_batch(web) -> None:
    connector = Connector()
    web.routes["/metrics"] = (200, "text/plain", connector.exposition().encode())
    settings = {
        "top_processes": 0,
        "spanmetrics": {"url": web.url + "/metrics", "min_requests_for_ratio": 3},
    }
    collector = Collector(CollectorConfig.model_validate(settings))
    try:
        first = await collector.collect_once()  # the baseline
        connector.add([FakeSpan("shop", "/cart", 5.0, error=n == 0) for n in range(4)])
        web.routes["/metrics"] = (200, "text/plain", connector.exposition().encode())
        batch = await collector.collect_once()
    finally:
        await collector.aclose()
    assert not [s for s in first.samples if s["name"].startswith("span")]
    assert collector.last_trace_failure is None
    values = {
        s["name"]: s["value"] for s in batch.samples if s.get("labels") == {"service": "shop"}
    }
    assert values["span_service_error_ratio"] == 0.25  # 4 requests: at least 3
    assert values["span_service_requests_per_second"] > 0
    assert "memory_percent" in {s["name"] for s in batch.samples}
