"""Issues from a service's traces: the default error-rate and latency rules, the
figures issues about a service carry (``signals``), and services whose spans stop
(``no_traffic``): its limit, its rhythm, its host's silence, snapshots, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from medbay.common.events import IssueChange, MetricBatch, MetricSample, derived_event_id
from medbay.detector.config import ConfigError, DetectorConfig, TrafficConfig, load_config
from medbay.detector.engine import DetectionEngine
from medbay.detector.snapshots import SnapshotError, decode, encode, export_host, import_host

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HEALTHY = {"requests": 100.0, "errors": 1.0, "ratio": 0.01, "p95": 300.0}


def spans(
    service: str, requests: float, errors: float, ratio: float, p95: float
) -> list[MetricSample]:
    """What the collector reports for a service with requests in the interval."""
    figures = {
        "span_service_requests_per_second": requests,
        "span_service_errors_per_second": errors,
        "span_service_error_ratio": ratio,
        "span_service_latency_p50_ms": p95 / 3,
        "span_service_latency_p95_ms": p95,
        "span_service_latency_p99_ms": p95 * 2,
    }
    return [MetricSample(name=n, value=v, labels={"service": service}) for n, v in figures.items()]


class Host:
    """One host's batches, in stream order, ``collected_at`` = T0 + seconds."""

    def __init__(self, engine: DetectionEngine, name: str = "web-1") -> None:
        self.engine = engine
        self.name = name
        self.seq = 0

    def batch(self, seconds: float, samples: list[MetricSample]) -> MetricBatch:
        return MetricBatch(
            event_id=derived_event_id("traces", self.name, seconds),
            host=self.name,
            collected_at=T0 + timedelta(seconds=seconds),
            samples=[MetricSample(name="load1", value=0.5), *samples],
        )

    def send(self, seconds: float, samples: list[MetricSample] | None = None) -> list[IssueChange]:
        self.seq += 1
        return self.engine.process(self.batch(seconds, samples or []), self.seq)

    def run(
        self, start: float, end: float, every: float = 5, samples: list[MetricSample] | None = None
    ) -> list[IssueChange]:
        """A batch every ``every`` seconds from ``start`` to ``end`` (both included)."""
        events = []
        t = start
        while t <= end:
            events += self.send(t, samples)
            t += every
        return events


def said(events: list[IssueChange]) -> list[tuple[str, str, str, str]]:
    return [(e.type, e.kind, e.metric, e.severity.value) for e in events]


# --- errors and latency: the default rules ---------------------------------------------


def test_an_error_burst_opens_error_rate_with_the_services_figures_and_clears():
    host = Host(DetectionEngine(DetectorConfig()))
    search = spans("search", 40, 0, 0, 120)
    assert host.run(0, 60, samples=spans("checkout", **HEALTHY) + search) == []

    burst = spans("checkout", requests=100, errors=60, ratio=0.6, p95=400) + search
    (by_rate,) = host.send(65, burst)
    assert said([by_rate]) == [
        ("issue.opened", "error_rate", "span_service_errors_per_second", "critical")
    ]
    assert (by_rate.resource, by_rate.labels, by_rate.value) == (
        "checkout",
        {"service": "checkout"},
        60,
    )
    assert by_rate.threshold == 50
    assert by_rate.detail == "span_service_errors_per_second 60 over 50 for 1 sample"
    # the service's own figures from the same batch, not another service's
    assert by_rate.signals == {
        "requests_per_second": 100,
        "errors_per_second": 60,
        "error_ratio": 0.6,
        "latency_p95_ms": 400,
    }
    (by_ratio,) = host.send(70, burst)  # the share rule waits for a second sample
    assert said([by_ratio]) == [
        ("issue.opened", "error_rate", "span_service_error_ratio", "critical")
    ]
    assert by_ratio.signals["error_ratio"] == 0.6

    assert host.send(75, spans("checkout", **HEALTHY) + search) == []  # one good sample
    resolved = host.send(80, spans("checkout", **HEALTHY) + search)
    assert sorted((e.type, e.metric) for e in resolved) == [
        ("issue.resolved", "span_service_error_ratio"),
        ("issue.resolved", "span_service_errors_per_second"),
    ]
    assert {e.fingerprint for e in resolved} == {by_rate.fingerprint, by_ratio.fingerprint}
    assert all(e.signals == {} for e in resolved)


def test_error_rate_clears_when_the_services_spans_stop_coming():
    """No requests, no errors: a series missing from the batch counts as normal."""
    host = Host(DetectionEngine(DetectorConfig(anomaly=[])))
    (opened,) = host.send(0, spans("checkout", requests=80, errors=70, ratio=0.1, p95=100))
    assert opened.kind == "error_rate"
    assert host.send(5) == []
    (resolved,) = host.send(10)
    assert (resolved.type, resolved.fingerprint) == ("issue.resolved", opened.fingerprint)
    assert resolved.detail == "span_service_errors_per_second no longer reported, for 2 samples"
    assert host.send(15) == []


def test_a_low_traffic_service_failing_most_requests_opens_error_rate_by_its_share():
    host = Host(DetectionEngine(DetectorConfig(anomaly=[])))
    failing = spans("admin", requests=0.5, errors=0.4, ratio=0.8, p95=90)
    assert host.send(0, failing) == []
    (opened,) = host.send(5, failing)
    assert said([opened]) == [
        ("issue.opened", "error_rate", "span_service_error_ratio", "critical")
    ]
    assert opened.signals["requests_per_second"] == 0.5


def test_a_slow_period_opens_latency_escalates_and_resolves():
    host = Host(DetectionEngine(DetectorConfig(anomaly=[])))
    slow = spans("checkout", requests=50, errors=0, ratio=0, p95=3000)
    assert host.send(0, slow) == []
    (opened,) = host.send(5, slow)
    assert said([opened]) == [("issue.opened", "latency", "span_service_latency_p95_ms", "warning")]
    assert (opened.resource, opened.threshold) == ("checkout", 2000)
    assert opened.signals["latency_p95_ms"] == 3000
    slower = spans("checkout", requests=20, errors=0, ratio=0, p95=9000)
    assert host.send(10, slower) == []
    (updated,) = host.send(15, slower)
    assert (updated.type, updated.severity.value) == ("issue.updated", "critical")
    assert updated.signals == {
        "requests_per_second": 20,
        "errors_per_second": 0,
        "error_ratio": 0,
        "latency_p95_ms": 9000,
    }
    assert host.send(20, spans("checkout", **HEALTHY)) == []
    (resolved,) = host.send(25, spans("checkout", **HEALTHY))
    assert (resolved.type, resolved.fingerprint) == ("issue.resolved", opened.fingerprint)


def test_any_issue_about_a_service_carries_its_figures_and_only_those_the_batch_had():
    engine = DetectionEngine(DetectorConfig(anomaly=[]))
    host = Host(engine)
    down = MetricSample(name="service_up", value=0, labels={"service": "checkout", "check": "http"})
    partial = [
        MetricSample(
            name="span_service_requests_per_second", value=3, labels={"service": "checkout"}
        )
    ]
    assert host.send(0, [down, *partial]) == []
    (opened,) = host.send(5, [down, *partial])
    assert (opened.kind, opened.signals) == ("service_down", {"requests_per_second": 3})
    # an issue about something else carries none
    disk = MetricSample(name="disk_percent", value=99, labels={"mount": "/"})
    events = host.run(10, 20, samples=[down, disk, *partial])
    assert [(e.kind, e.signals) for e in events] == [("disk", {})]


# --- services whose spans stop: no_traffic --------------------------------------------

QUIET = DetectorConfig(thresholds=[], anomaly=[])  # traffic: 6 gaps, at least 60 s


def requests(service: str, value: float = 10.0) -> list[MetricSample]:
    return [
        MetricSample(
            name="span_service_requests_per_second", value=value, labels={"service": service}
        )
    ]


def test_a_service_that_stops_opens_no_traffic_after_its_limit_and_resolves_on_return():
    host = Host(DetectionEngine(QUIET))
    assert host.run(0, 100, samples=requests("checkout") + requests("search")) == []
    # checkout stops; its host and search go on: limit max(6 x 5 s, 60 s) = 60 s
    assert host.run(105, 160, samples=requests("search")) == []
    (opened,) = host.send(165, requests("search"))
    assert said([opened]) == [
        ("issue.opened", "no_traffic", "span_service_requests_per_second", "warning")
    ]
    assert (opened.resource, opened.labels, opened.detector) == (
        "checkout",
        {"service": "checkout"},
        "traffic",
    )
    assert (opened.value, opened.threshold) == (65, 60)
    assert opened.detail == "no spans from checkout for 65 s (limit 60 s; at most 5 s apart before)"
    assert host.run(170, 195, samples=requests("search")) == []  # opened once

    (resolved,) = host.send(200, requests("search") + requests("checkout"))
    assert (resolved.type, resolved.fingerprint) == ("issue.resolved", opened.fingerprint)
    assert resolved.first_seen == opened.first_seen
    assert resolved.detail == "spans from checkout again after 100 s without"
    assert host.run(205, 300, samples=requests("search") + requests("checkout")) == []


def test_a_service_with_a_request_now_and_then_is_judged_by_its_own_rhythm():
    host = Host(DetectionEngine(QUIET))
    for t in range(0, 3600, 5):  # one request every 30 s: in every sixth batch
        assert host.send(t, requests("cron", 0.2) if t % 30 == 0 else []) == []
    # then it stops: 6 x 30 s = 180 s after its last appearance (3570 s)
    events = host.run(3600, 3800)
    assert [(round(e.value), e.threshold) for e in events] == [(185, 180)]


def test_a_service_is_judged_only_once_its_rhythm_is_known():
    host = Host(DetectionEngine(QUIET))
    assert host.run(0, 5, samples=requests("once")) == []  # seen twice: one gap
    assert host.run(10, 1000) == []


def test_while_its_host_is_silent_a_service_is_not_judged():
    engine = DetectionEngine(QUIET)
    host = Host(engine)
    host.run(0, 100, samples=requests("checkout"))
    # the host is gone for ten minutes and comes back without the service
    assert host.run(700, 760) == []  # its absence counts from the host's return
    (opened,) = host.send(765)
    assert (opened.kind, opened.value) == ("no_traffic", 65)

    # a service back with its host: the gap across the silence is no rhythm of its own
    other = Host(engine, "web-2")
    other.run(0, 100, samples=requests("search"))
    assert other.run(700, 800, samples=requests("search")) == []
    assert engine.traffic_limit(engine.hosts["web-2"].traffic["search"]) == 60


def test_no_traffic_survives_a_snapshot_and_restore():
    engine = DetectionEngine(QUIET)
    web, cron = Host(engine, "web-1"), Host(engine, "cron-1")
    web.run(0, 100, samples=requests("checkout"))
    (opened,) = web.run(105, 165)
    for t in range(0, 600, 5):
        cron.send(t, requests("cron") if t % 30 == 0 else [])

    restored = DetectionEngine(QUIET)
    for name in engine.hosts:
        import_host(restored, decode(encode(export_host(engine, name))))
    web.engine = cron.engine = restored
    # still open (not opened again), resolved on return, as the first engine would
    assert web.run(170, 200) == []
    (resolved,) = web.send(205, requests("checkout"))
    assert (resolved.type, resolved.fingerprint, resolved.first_seen) == (
        "issue.resolved",
        opened.fingerprint,
        opened.first_seen,
    )
    # the low-traffic service's rhythm came along: quiet for 150 s is not silence for it
    assert cron.run(600, 750) == []
    (stopped,) = cron.run(755, 800)
    assert (stopped.resource, stopped.threshold) == ("cron", 180)


def test_a_service_gone_for_long_is_forgotten_and_its_issue_resolves_saying_so():
    config = DetectorConfig(
        thresholds=[], anomaly=[], traffic=TrafficConfig(forget_after_seconds=600)
    )
    engine = DetectionEngine(config)
    host = Host(engine)
    host.run(0, 100, samples=requests("checkout") + requests("batch"))
    (opened,) = host.run(105, 165, samples=requests("batch"))
    host.run(170, 700, samples=requests("batch"))
    (forgotten,) = host.send(705, requests("batch"))
    assert (forgotten.type, forgotten.fingerprint) == ("issue.resolved", opened.fingerprint)
    assert forgotten.detail == (
        "no spans from checkout for 605 s, over forget_after_seconds (600): no longer watched"
    )
    assert set(engine.hosts["web-1"].traffic) == {"batch"}
    # back after that, it is a new service: nothing to resolve, its rhythm learnt afresh
    assert host.run(710, 720, samples=requests("batch") + requests("checkout")) == []


def test_the_services_watched_per_host_are_bounded():
    config = DetectorConfig(thresholds=[], anomaly=[], traffic=TrafficConfig(max_services=3))
    engine = DetectionEngine(config)
    host = Host(engine)
    host.run(0, 100, samples=requests("a") + requests("b") + requests("c"))
    host.run(105, 170, samples=requests("b") + requests("c"))  # "a" stops: an issue
    assert host.run(175, 200, samples=[s for n in "bcdef" for s in requests(n)]) == []
    watched = engine.hosts["web-1"].traffic
    # the one with an open issue stays; the newcomers take what room is left
    assert len(watched) == 3 and "a" in watched


def test_with_the_check_off_nothing_is_watched_but_an_open_issue_still_resolves():
    off = DetectorConfig(thresholds=[], anomaly=[], traffic=TrafficConfig(enabled=False))
    engine = DetectionEngine(off)
    host = Host(engine)
    host.run(0, 100, samples=requests("checkout"))
    assert host.run(105, 500) == []
    assert engine.hosts["web-1"].traffic == {}

    before = DetectionEngine(QUIET)  # opened while the check was on
    host = Host(before)
    host.run(0, 100, samples=requests("checkout"))
    (opened,) = host.run(105, 165)
    after = DetectionEngine(off)
    import_host(after, decode(encode(export_host(before, "web-1"))))
    host.engine = after
    (resolved,) = host.send(170, requests("checkout"))
    assert (resolved.type, resolved.fingerprint) == ("issue.resolved", opened.fingerprint)
    assert host.run(175, 180, samples=requests("checkout") + requests("search")) == []
    assert set(after.hosts["web-1"].traffic) == {"checkout"}


def test_a_snapshot_from_before_traffic_was_watched_still_restores():
    engine = DetectionEngine(QUIET)
    Host(engine).run(0, 100, samples=requests("checkout"))
    snap = decode(encode(export_host(engine, "web-1")))
    del snap.meta["traffic"]
    restored = DetectionEngine(QUIET)
    import_host(restored, snap)
    assert restored.hosts["web-1"].traffic == {}


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda t: t.update(services="all"), "traffic services: expected list"),
        (lambda t: t["services"][0].update(gaps=[5, -1]), "'checkout': a negative gap"),
        (lambda t: t["services"][0].update(last_seen="yesterday"), "last_seen: expected a finite"),
        (lambda t: t["services"][0].update(appearances=0), "'checkout': 0 appearances"),
        (lambda t: t["services"][0]["open"].update(first_seen="soon"), "first_seen: Invalid"),
    ],
)
def test_a_damaged_traffic_snapshot_is_refused_saying_where(damage, why):
    engine = DetectionEngine(QUIET)
    host = Host(engine)
    host.run(0, 100, samples=requests("checkout"))
    host.run(105, 165)
    snap = decode(encode(export_host(engine, "web-1")))
    damage(snap.meta["traffic"])
    restored = DetectionEngine(QUIET)
    with pytest.raises(SnapshotError, match=why):
        import_host(restored, snap)
    assert restored.hosts == {}  # nothing was changed


def test_traffic_config_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "detector.yaml"
    path.write_text("traffic: {min_seconds: 600, forget_after_seconds: 300}\n")
    with pytest.raises(ConfigError, match=r"traffic.*forget_after_seconds \(300\) must be longer"):
        load_config(path)
    path.write_text("traffic: {metric: 'span requests'}\n")
    with pytest.raises(ConfigError, match=r"traffic\.metric.*should match pattern"):
        load_config(path)
    path.write_text("traffic: {min_appearances: 1}\n")
    with pytest.raises(ConfigError, match=r"traffic\.min_appearances.*greater than or equal to 2"):
        load_config(path)
