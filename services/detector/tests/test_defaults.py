"""The built-in rules: every action's trigger is detected, and a healthy machine,
however busy, raises nothing."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from medbay.common.events import (
    IssueChange,
    MetricBatch,
    MetricSample,
    SampleColumns,
    derived_event_id,
)
from medbay.detector.config import DetectorConfig
from medbay.detector.engine import DetectionEngine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INTERVAL = 5  # the collector's default, seconds
HOUR = 3600 // INTERVAL  # scrapes


def sample(metric: str, value: float, /, **labels: str) -> MetricSample:
    if labels:
        return MetricSample(name=metric, value=value, labels=labels)
    return MetricSample(name=metric, value=value)


def batch(host: str, i: int, samples: list[MetricSample]) -> MetricBatch:
    return MetricBatch(
        event_id=derived_event_id("defaults", host, i),
        host=host,
        collected_at=T0 + timedelta(seconds=INTERVAL * i),
        samples=samples,
    )


def feed(engine: DetectionEngine, batches: list[MetricBatch]) -> list[IssueChange]:
    return [e for i, b in enumerate(batches, 1) for e in engine.process(b, i)]


TRIGGERS = [
    # (what the planner acts on, the sample, scrapes it lasts, kind, severity, resource)
    ("service down", sample("service_up", 0, service="api", check="http"), 2, "service_down",
     "critical", "api"),
    ("cpu spinner", sample("process_cpu_percent", 99.5, pid="812", name="python",
     command="python spin.py"), 60, "runaway_process", "warning", "python"),
    ("memory hog", sample("process_memory_percent", 65, pid="90", name="java",
     command="java -jar app.jar"), 3, "runaway_process", "critical", "java"),
    ("slow query", sample("postgres_longest_query_seconds", 400, service="db"), 2, "db_latency",
     "critical", "db"),
    ("slow database", sample("postgres_query_latency_ms", 1500, service="db"), 3, "db_latency",
     "warning", "db"),
    ("redis full", sample("redis_memory_percent", 99, service="cache"), 2, "memory", "critical",
     "cache"),
    ("log flood", sample("directory_budget_percent", 130, directory="app-logs"), 2, "disk",
     "critical", "app-logs"),
    ("disk filling", sample("disk_percent", 96, mount="/var"), 3, "disk", "critical", "/var"),
    ("host memory", sample("memory_percent", 98), 24, "memory", "critical", "memory_percent"),
    ("host cpu", sample("cpu_percent", 99), 60, "cpu", "warning", "cpu_percent"),
    ("network errors", sample("net_errors", 5000, interface="eth0"), 2, "network_errors",
     "critical", "eth0"),
    ("error burst", sample("span_service_errors_per_second", 20, service="shop"), 1, "error_rate",
     "warning", "shop"),
    ("failing requests", sample("span_service_error_ratio", 0.7, service="shop"), 2,
     "error_rate", "critical", "shop"),
    ("slow requests", sample("span_service_latency_p95_ms", 2500, service="shop"), 2, "latency",
     "warning", "shop"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("bad", "scrapes", "kind", "severity", "resource"),
    [t[1:] for t in TRIGGERS],
    ids=[t[0] for t in TRIGGERS],
)
def test_each_trigger_opens_an_issue_after_its_window(
    bad: MetricSample, scrapes: int, kind: str, severity: str, resource: str
):
    engine = DetectionEngine(DetectorConfig())
    assert feed(engine, [batch("h", i, [bad]) for i in range(scrapes - 1)]) == []
    opened = engine.process(batch("h", scrapes, [bad]), scrapes)
    assert [(e.type, e.kind, e.severity.value, e.resource) for e in opened] == [
        ("issue.opened", kind, severity, resource)
    ]
    assert opened[0].detail


def test_a_quiet_system_has_no_low_utilisation_rule_by_default():
    assert not [r for r in DetectorConfig().thresholds if r.kind == "low_utilisation"]


def traced(rng: random.Random, service: str, requests: float, slow: bool) -> list[MetricSample]:
    """A healthy service's trace figures: a few errors, slower under load."""
    errors = requests * rng.uniform(0, 0.05)
    p95 = rng.uniform(400, 1500) if slow else rng.uniform(40, 300)
    figures = [
        sample("span_service_requests_per_second", requests, service=service),
        sample("span_service_errors_per_second", errors, service=service),
        sample("span_service_latency_p95_ms", p95, service=service),
    ]
    if requests * INTERVAL >= 5:  # the collector's minimum for a share
        figures.append(sample("span_service_error_ratio", errors / requests, service=service))
    return figures


def busy_day(hours: float, seed: int) -> list[MetricBatch]:
    """A healthy machine under heavy, changing load: CPU bursts to 100 % for minutes,
    memory near 88 %, load swinging, latency jumping from 2 ms to 40 ms, builds
    churning through short-lived processes at full speed, one lost check now and then;
    a busy traced service, and one with a request every half minute or so."""
    rng = random.Random(seed)
    traffic = random.Random(seed + 1000)
    out = []
    pid = 1000
    build: list[tuple[int, str, int]] = []  # (pid, name, scrapes left)
    burst = 0
    for i in range(round(hours * HOUR)):
        if burst == 0 and rng.random() < 0.02:
            burst = rng.randint(6, 48)  # half a minute to four minutes flat out
        cpu = rng.uniform(97, 100) if burst else rng.uniform(10, 85)
        burst = max(0, burst - 1)
        wave = math.sin(i / 40)
        samples = [
            sample("cpu_percent", cpu),
            sample("memory_percent", 80 + 8 * abs(wave) + rng.uniform(-1, 1)),
            sample("load1", max(0.0, (6 if cpu > 90 else 1.5) + rng.gauss(0, 1.5))),
            sample("disk_percent", 70 + i / 10_000, mount="/"),
            sample("directory_budget_percent", 40 + 30 * abs(wave), directory="app-logs"),
            sample("service_up", 0.0 if rng.random() < 0.01 else 1.0, service="api", check="http"),
            sample(
                "service_latency_ms",
                rng.uniform(30, 60) if cpu > 90 else rng.uniform(1.5, 3),
                service="api",
            ),
            sample("postgres_query_latency_ms", rng.uniform(1, 200), service="db"),
            sample("postgres_longest_query_seconds", rng.uniform(0, 20), service="db"),
            sample("redis_memory_percent", 50 + 30 * abs(wave), service="cache"),
            sample("net_errors", rng.choice([0, 0, 0, 3]), interface="eth0"),
        ]
        build = [(p, n, left - 1) for p, n, left in build if left > 1]
        while len(build) < 4:  # compilers and tests: up to 55 s at full speed each
            pid += 1
            build.append((pid, rng.choice(["cc1", "ld", "pytest"]), rng.randint(1, 11)))
        procs = [(p, n, rng.uniform(90, 100)) for p, n, _ in build]
        procs.append((1, "postgres", rng.uniform(5, 40)))
        for p, n, cpu_share in sorted(procs, key=lambda x: -x[2])[:5]:
            samples.append(
                sample("process_cpu_percent", cpu_share, pid=str(p), name=n, command=f"{n} job")
            )
        for p, n, share in [(1, "postgres", 12.0), (2, "java", 25 + 3 * abs(wave))]:
            samples.append(
                sample("process_memory_percent", share, pid=str(p), name=n, command=f"{n} server")
            )
        samples += traced(traffic, "shop", traffic.uniform(50, 150), slow=cpu > 90)
        if i % 6 == 0 or traffic.random() < 0.05:
            samples += traced(traffic, "admin", 1 / INTERVAL, slow=False)
        out.append(batch("busy", i, samples))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_busy_healthy_machine_raises_nothing(seed: int):
    engine = DetectionEngine(DetectorConfig())
    assert [(e.kind, e.metric, e.detail) for e in feed(engine, busy_day(2, seed))] == []
    assert len(engine.series) < 40  # the passing processes were forgotten


def test_the_busy_machine_with_a_real_fault_raises_just_that():
    """The same noise with a process spinning for six minutes: one issue, then resolved."""
    scrapes = busy_day(0.5, seed=4)
    spinner = sample("process_cpu_percent", 99.9, pid="4321", name="spin", command="spin --hard")
    for i in range(100, 172):
        scrapes[i] = scrapes[i].model_copy(
            update={"samples": SampleColumns.of([*scrapes[i].samples, spinner])}
        )
    events = feed(DetectionEngine(DetectorConfig()), scrapes)
    assert [(e.type, e.kind, e.labels.get("pid")) for e in events] == [
        ("issue.opened", "runaway_process", "4321"),
        ("issue.resolved", "runaway_process", "4321"),
    ]
