"""The Monitoring view: services' RED figures, their history and operations, the
dependency edges, bounded; the incidents raised from traces; what Medbay holds of a
trace; and the API over them, its input checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from medbay.common.events import (
    IssueOpened,
    IssueUpdated,
    MetricBatch,
    MetricSample,
    Severity,
    issue_fingerprint,
)
from medbay.common.streams import ISSUES, PLANS
from medbay.gateway.config import MetricsConfig, MonitoringConfig
from medbay.gateway.incidents import IncidentBook, IncidentFilter
from medbay.gateway.metrics_view import MetricsBoard
from medbay.gateway.monitoring import TRACE_KINDS, MonitoringBoard
from tests import factories

START = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def service_samples(service: str, rps: float, eps: float, p95: float) -> list[MetricSample]:
    """A service's figures as the collector sends them; no error ratio below 5 requests."""
    samples: list[MetricSample] = [
        {"name": "span_service_requests_per_second", "value": rps, "labels": {"service": service}},
        {"name": "span_service_errors_per_second", "value": eps, "labels": {"service": service}},
        {"name": "span_service_latency_p50_ms", "value": p95 / 4, "labels": {"service": service}},
        {"name": "span_service_latency_p95_ms", "value": p95, "labels": {"service": service}},
        {"name": "span_service_latency_p99_ms", "value": p95 * 2, "labels": {"service": service}},
    ]
    if rps >= 5:
        samples.append(
            {
                "name": "span_service_error_ratio",
                "value": eps / rps,
                "labels": {"service": service},
            }
        )
    return samples


def operation_samples(service: str, operation: str, rps: float) -> list[MetricSample]:
    labels = {"service": service, "operation": operation}
    return [
        {"name": "span_requests_per_second", "value": rps, "labels": labels},
        {"name": "span_errors_per_second", "value": 0.0, "labels": labels},
        {"name": "span_error_ratio", "value": 0.0, "labels": labels},
        {"name": "span_latency_p95_ms", "value": 30.0, "labels": labels},
    ]


def edge(client: str, server: str, rps: float) -> MetricSample:
    return {
        "name": "service_edge_requests_per_second",
        "value": rps,
        "labels": {"client": client, "server": server},
    }


def batch(at: datetime, *samples: list[MetricSample] | MetricSample, host: str = "web-1") -> Any:
    flat: list[MetricSample] = []
    for part in samples:
        flat.extend(part if isinstance(part, list) else [part])
    return MetricBatch(host=host, collected_at=at, samples=flat)


def board(**limits: Any) -> MonitoringBoard:
    return MonitoringBoard(MonitoringConfig(**limits))


# --- the board ---------------------------------------------------------------------------


def test_each_service_has_its_red_history_and_operations():
    monitoring = board(history_points=3)
    for i in range(6):
        monitoring.apply(
            batch(
                START + timedelta(seconds=10 * i),
                service_samples("checkout", 10.0 + i, 1.0, 200.0),
                service_samples("payments", 2.0, 0.0, 90.0),
                operation_samples("checkout", "POST /pay", 8.0),
                operation_samples("checkout", "GET /cart", 12.0),
            )
        )
    now = START + timedelta(seconds=60)
    checkout, payments = monitoring.services(now, host=None, service=None, points=10)
    assert (checkout.host, checkout.service, payments.service) == ("web-1", "checkout", "payments")
    assert [p.requests_per_second for p in checkout.history] == [13.0, 14.0, 15.0]  # 3 kept
    latest = checkout.latest
    assert latest.at == START + timedelta(seconds=50) and checkout.current
    assert (latest.errors_per_second, latest.latency_p50_ms, latest.latency_p99_ms) == (
        1.0,
        50.0,
        400.0,
    )
    assert latest.error_ratio == pytest.approx(1 / 15)
    assert payments.latest.error_ratio is None  # too few requests for a ratio: not sent
    assert [o.operation for o in checkout.operations] == ["GET /cart", "POST /pay"]  # busiest first
    assert checkout.operations[0].latency_p50_ms is None and checkout.operations[0].current
    assert payments.operations == []
    (only,) = monitoring.services(now, host="web-1", service="payments", points=2)
    assert only.service == "payments" and len(only.history) == 2
    assert monitoring.services(now, host="db-1", service=None, points=2) == []


def test_a_batch_without_trace_figures_or_older_than_the_last_changes_nothing():
    monitoring = board()
    monitoring.apply(batch(START, [{"name": "cpu_percent", "value": 50.0}]))
    assert len(monitoring) == 0 and monitoring.hosts(host=None) == []
    monitoring.apply(batch(START, service_samples("checkout", 10.0, 0.0, 100.0)))
    monitoring.apply(batch(START, service_samples("checkout", 99.0, 0.0, 100.0)))  # a repeat
    earlier = START - timedelta(seconds=10)
    monitoring.apply(batch(earlier, service_samples("checkout", 98.0, 0.0, 100.0)))
    (checkout,) = monitoring.services(START, host=None, service=None, points=10)
    assert [p.requests_per_second for p in checkout.history] == [10.0]


def test_samples_without_the_labels_they_need_are_ignored():
    monitoring = board()
    monitoring.apply(
        batch(
            START,
            {"name": "span_service_requests_per_second", "value": 1.0},
            {"name": "span_requests_per_second", "value": 1.0, "labels": {"service": "a"}},
            {"name": "service_edge_requests_per_second", "value": 1.0, "labels": {"client": "a"}},
            {"name": "spans_dropped_operations", "value": 3.0},
        )
    )
    assert monitoring.services(START, host=None, service=None, points=5) == []
    assert monitoring.edges(START, host=None, service=None) == []
    (host,) = monitoring.hosts(host=None)
    assert (host.host, host.dropped_operations, host.dropped_edges) == ("web-1", 3.0, None)


def test_an_edge_not_seen_again_fades_then_is_dropped():
    monitoring = board(stale_seconds=60)
    monitoring.apply(
        batch(START, edge("frontend", "checkout", 12.0), edge("checkout", "payments", 4.0))
    )
    later = START + timedelta(seconds=10)
    monitoring.apply(batch(later, edge("frontend", "checkout", 11.0)))
    shown = monitoring.edges(later, host=None, service=None)
    assert [(e.client, e.server, e.requests_per_second, e.current) for e in shown] == [
        ("checkout", "payments", 4.0, False),  # fading: not in the latest batch
        ("frontend", "checkout", 11.0, True),
    ]
    assert [e.server for e in monitoring.edges(later, host=None, service="payments")] == [
        "payments"
    ]
    gone = START + timedelta(seconds=61)
    assert [e.server for e in monitoring.edges(gone, host=None, service=None)] == ["checkout"]
    monitoring.prune(gone)
    monitoring.apply(batch(gone, service_samples("checkout", 1.0, 0.0, 5.0)))
    assert [e.server for e in monitoring.edges(gone, host=None, service=None)] == ["checkout"]
    assert monitoring.edges(gone, host=None, service=None)[0].current is False


def test_services_operations_and_edges_are_bounded_least_recently_reported_first():
    monitoring = board(max_services=2, max_operations=3, max_edges=2, history_points=4)
    for i, name in enumerate(["a", "b", "c"]):
        monitoring.apply(
            batch(
                START + timedelta(seconds=i),
                service_samples(name, 1.0, 0.0, 10.0),
                operation_samples(name, "op1", 1.0),
                operation_samples(name, "op2", 2.0),
                edge("client", name, 1.0),
                host=f"host-{i}",
            )
        )
    now = START + timedelta(seconds=3)
    services = monitoring.services(now, host=None, service=None, points=10)
    assert [(s.host, s.service) for s in services] == [("host-1", "b"), ("host-2", "c")]
    assert [len(s.operations) for s in services] == [1, 2]  # 3 operations in all
    assert [e.server for e in monitoring.edges(now, host=None, service=None)] == ["b", "c"]
    assert len(monitoring) == 2
    for i in range(1000):  # the history stays bounded, packed
        monitoring.apply(
            batch(now + timedelta(seconds=i), service_samples("c", 1.0, 0.0, 10.0), host="host-2")
        )
    c = monitoring.services(now + timedelta(seconds=1000), host="host-2", service="c", points=99)
    assert len(c[0].history) == 4


def test_a_service_not_reported_for_long_is_forgotten():
    monitoring = board(forget_seconds=600, stale_seconds=60)
    monitoring.apply(batch(START, service_samples("checkout", 5.0, 0.0, 10.0)))
    monitoring.apply(batch(START + timedelta(seconds=10), service_samples("cart", 5.0, 0, 10.0)))
    (checkout, cart) = sorted(
        monitoring.services(START + timedelta(seconds=10), host=None, service=None, points=5),
        key=lambda s: s.service != "checkout",
    )
    assert not checkout.current and cart.current  # checkout had no spans in the last batch
    assert checkout.last_seen == START
    much_later = START + timedelta(seconds=605)
    assert [
        s.service for s in monitoring.services(much_later, host=None, service=None, points=5)
    ] == ["cart"]
    monitoring.prune(START + timedelta(seconds=700))
    assert len(monitoring) == 0 and monitoring.hosts(host=None) == []


def test_trace_figures_stay_out_of_the_host_metrics():
    metrics = MetricsBoard(MetricsConfig(max_series_per_host=3))
    metrics.apply(batch(START, service_samples("checkout", 10.0, 0.0, 1.0), host="shop-1"))
    assert metrics.hosts() == []  # trace figures only: no host metrics to show
    cpu: MetricSample = {"name": "cpu_percent", "value": 12.0}
    metrics.apply(batch(START, cpu, service_samples("checkout", 10.0, 0.0, 1.0)))
    (host,) = metrics.hosts()
    assert [s.name for s in host.series] == ["cpu_percent"] and host.dropped_series == 0


# --- incidents and traces ------------------------------------------------------------------


def trace_issue(
    kind: str, service: str, host: str = "web-1", *, n: int = 0, seen: datetime = START
) -> IssueOpened | IssueUpdated:
    """An issue the detector raises from a service's trace figures; ``n`` > 0 updates it."""
    metric = {
        "error_rate": "span_service_errors_per_second",
        "latency": "span_service_latency_p95_ms",
        "no_traffic": "span_service_requests_per_second",
    }[kind]
    labels = {"service": service}
    fields: dict[str, Any] = {
        "event_id": f"{host}-{kind}-{service}-{n}",
        "fingerprint": issue_fingerprint(host, kind, metric, labels),
        "host": host,
        "kind": kind,
        "resource": service,
        "metric": metric,
        "labels": labels,
        "value": 60.0 + n,
        "threshold": 50.0,
        "severity": Severity.CRITICAL,
        "detector": "threshold",
        "signals": {"requests_per_second": 80.0, "errors_per_second": 60.0 + n},
        "first_seen": seen,
        "last_seen": seen + timedelta(seconds=n),
    }
    if n:
        return IssueUpdated(previous_severity=Severity.CRITICAL, **fields)
    return IssueOpened(**fields)


def test_incidents_of_the_trace_kinds_by_service():
    incidents = IncidentBook(max_incidents=100, max_timeline_events=50, max_results=10)
    incidents.apply(trace_issue("error_rate", "checkout"), ISSUES.name)
    incidents.apply(trace_issue("latency", "payments"), ISSUES.name)
    incidents.apply(trace_issue("no_traffic", "checkout", host="web-2"), ISSUES.name)
    incidents.apply(factories.issue("cpu"), ISSUES.name)
    traced = incidents.incidents(IncidentFilter(kinds=TRACE_KINDS), 10)
    assert sorted(i.kind for i in traced) == ["error_rate", "latency", "no_traffic"]
    checkout = incidents.incidents(IncidentFilter(kinds=TRACE_KINDS, resource="checkout"), 10)
    assert sorted((i.host, i.kind) for i in checkout) == [
        ("web-1", "error_rate"),
        ("web-2", "no_traffic"),
    ]
    one_host = incidents.incidents(IncidentFilter(host="web-2", kinds=TRACE_KINDS), 10)
    assert [i.kind for i in one_host] == ["no_traffic"]


def test_a_trace_finds_its_incident_events_and_the_index_stays_bounded():
    incidents = IncidentBook(max_incidents=2, max_timeline_events=10, max_results=10)
    issue = trace_issue("error_rate", "checkout")
    plan = factories.plan(issue_fingerprint=issue.fingerprint, issue_kind="error_rate")
    incidents.apply(issue, ISSUES.name, trace_id=TRACE)
    incidents.apply(plan, PLANS.name, trace_id=TRACE)
    incidents.apply(trace_issue("latency", "cart"), ISSUES.name, trace_id="1" * 32)
    found, events = incidents.trace(TRACE)
    assert [i.fingerprint for i in found] == [issue.fingerprint]
    assert [(e.fingerprint, e.event.type) for e in events] == [
        (issue.fingerprint, "issue.opened"),
        (issue.fingerprint, "plan.created"),
    ]
    assert events[1].summary.startswith(f"plan {plan.plan_id}")
    assert incidents.trace("2" * 32) == ([], [])
    # entries of later traces push the trace's entries out of the timeline: it is forgotten
    for n in range(10):
        update = trace_issue("error_rate", "checkout", n=n + 1)
        incidents.apply(update, ISSUES.name, trace_id=f"{n + 3:032x}")
    assert incidents.trace(TRACE) == ([], [])
    assert [i.fingerprint for i in incidents.trace(f"{12:032x}")[0]] == [issue.fingerprint]
    # so are the traces of an incident evicted
    for service in ("a", "b"):
        incidents.apply(trace_issue("latency", service), ISSUES.name)
    assert incidents.trace(f"{12:032x}") == ([], [])
    assert incidents._traces == {}  # nothing left over


# --- the API ------------------------------------------------------------------------------


async def test_the_monitoring_api_serves_what_the_traces_show(gateway, bus):
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(3):
        await bus.publish(
            batch(
                now - timedelta(seconds=20 - 10 * i),
                [{"name": "cpu_percent", "value": 20.0}],
                service_samples("checkout", 20.0 + i, 12.0, 2500.0),
                service_samples("frontend", 40.0, 0.0, 120.0),
                operation_samples("checkout", "POST /pay", 20.0),
                edge("frontend", "checkout", 20.0),
                {"name": "spans_dropped_operations", "value": 0.0},
            )
        )
    issue = trace_issue("error_rate", "checkout", seen=now)
    await bus.publish(issue, factories.issue("cpu", host="web-1", seen=now))
    body = await gateway.until(
        "/api/monitoring",
        lambda b: b["incidents"] and b["services"] and len(b["services"][0]["history"]) == 3,
    )
    checkout, frontend = body["services"]
    assert (checkout["service"], frontend["service"]) == ("checkout", "frontend")
    assert [p["requests_per_second"] for p in checkout["history"]] == [20.0, 21.0, 22.0]
    assert checkout["latest"]["error_ratio"] == pytest.approx(12 / 22)
    assert checkout["operations"][0]["operation"] == "POST /pay" and checkout["current"]
    assert [(e["client"], e["server"], e["current"]) for e in body["edges"]] == [
        ("frontend", "checkout", True)
    ]
    assert [(h["host"], h["dropped_operations"]) for h in body["hosts"]] == [("web-1", 0.0)]
    assert [i["kind"] for i in body["incidents"]] == ["error_rate"]  # not the cpu issue
    # the host's metrics hold none of the trace figures
    host = (await gateway.get("/api/metrics/web-1")).json()
    assert [s["name"] for s in host["series"]] == ["cpu_percent"]

    one = (await gateway.get("/api/monitoring?service=frontend&points=1")).json()
    assert [s["service"] for s in one["services"]] == ["frontend"]
    assert len(one["services"][0]["history"]) == 1 and len(one["edges"]) == 1
    assert one["incidents"] == []
    assert (await gateway.get("/api/monitoring?host=db-1")).json()["services"] == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("points=0", "points: Input should be greater than or equal to 1"),
        ("points=many", "points: Input should be a valid integer"),
        ("service=", "service: String should have at least 1 character"),
        ("limit=100000", "limit: Input should be less than or equal to 1000"),
        (f"host={'h' * 300}", "host: String should have at most 253 characters"),
    ],
)
async def test_the_monitoring_api_names_what_is_wrong(gateway, query, named):
    answer = await gateway.get(f"/api/monitoring?{query}")
    assert answer.status_code == 422 and named in answer.json()["detail"], answer.json()


async def test_a_trace_id_finds_what_medbay_holds_of_the_trace(gateway, bus):
    issue = trace_issue("latency", "checkout")
    plan = factories.plan(issue_fingerprint=issue.fingerprint, issue_kind="latency")
    await bus.publish(issue, plan, trace_id=TRACE)
    body = await gateway.until(f"/api/traces/{TRACE}", lambda b: len(b["events"]) == 2)
    assert body["trace_id"] == TRACE and body["jaeger_url"] is None  # none configured
    assert [i["fingerprint"] for i in body["incidents"]] == [issue.fingerprint]
    assert [e["event"]["type"] for e in body["events"]] == ["issue.opened", "plan.created"]
    assert (await gateway.get(f"/api/traces/{TRACE.upper()}")).json()["trace_id"] == TRACE
    nothing = (await gateway.get(f"/api/traces/{'a' * 32}")).json()
    assert (nothing["incidents"], nothing["events"]) == ([], [])
    assert (await gateway.get("/api/tracing")).json() == {"jaeger_url": None}
    for wrong in ("abc", "g" * 32, "0" * 32, "a" * 33, "x" * 500):
        answer = await gateway.get(f"/api/traces/{wrong}")
        assert answer.status_code == 400, (wrong, answer.text)
        detail = answer.json()["detail"]
        assert detail.startswith("trace_id: expected 32 hexadecimal digits"), detail
        assert len(detail) < 200


async def test_traces_link_to_jaeger_only_when_it_is_configured(start_gateway):
    gateway = start_gateway("jaeger_url: http://jaeger.example:16686/ui/\n")
    assert (await gateway.get("/api/tracing")).json() == {
        "jaeger_url": "http://jaeger.example:16686/ui"
    }
    body = (await gateway.get(f"/api/traces/{TRACE}")).json()
    assert body["jaeger_url"] == f"http://jaeger.example:16686/ui/trace/{TRACE}"
