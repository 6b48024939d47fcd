"""The latest batch on the collector's /metrics: one gauge per sample, labelled by host."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from medbay.collector.exposition import LatestBatchExport, label_name
from medbay.common.events import MetricBatch, MetricSample


def batch(samples: list[MetricSample]) -> MetricBatch:
    return MetricBatch(host="web-1", collected_at=datetime.now(UTC), samples=samples)


def exported(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
        if not s.name.endswith("_created")  # when the counter was made
    }


def test_label_names() -> None:
    assert label_name("service") == "service"
    assert label_name("http.route") == "http_route"
    assert label_name("9lives") == "_9lives"
    assert label_name("__reserved") == "_reserved"
    assert label_name("") == "_"


def test_latest_batch_as_gauges() -> None:
    registry = CollectorRegistry()
    Counter("medbay_collector_scrapes_total", "Scrapes started.", registry=registry).inc()
    latest = LatestBatchExport()
    registry.register(latest)
    assert all(name[0].startswith("medbay_collector_") for name in exported(registry))

    latest.batch = batch(
        [
            {"name": "cpu_percent", "value": 12.5, "unit": "%"},
            {
                "name": "span_service_errors_per_second",
                "value": 3.0,
                "labels": {"service": "checkout"},
            },
            {
                "name": "span_service_errors_per_second",
                "value": 0.0,
                "labels": {"service": "cart"},
            },
            {"name": "app_jobs", "value": 4.0, "labels": {"host": "db-2", "queue.name": "mail"}},
            {"name": "app_jobs", "value": 9.0, "labels": {"host": "db-2", "queue.name": "mail"}},
            {"name": "collector_scrapes_total", "value": 99.0},  # would shadow the counter
        ]
    )
    assert exported(registry) == {
        ("medbay_collector_scrapes_total", ()): 1.0,
        ("medbay_cpu_percent", (("host", "web-1"),)): 12.5,
        (
            "medbay_span_service_errors_per_second",
            (("host", "web-1"), ("service", "checkout")),
        ): 3.0,
        ("medbay_span_service_errors_per_second", (("host", "web-1"), ("service", "cart"))): 0.0,
        (
            "medbay_app_jobs",
            (("exported_host", "db-2"), ("host", "web-1"), ("queue_name", "mail")),
        ): 4.0,  # the first of two samples of one series
    }
    text = generate_latest(registry).decode()
    assert "# TYPE medbay_cpu_percent gauge" in text
    assert "cpu_percent in the collector's latest batch (%)" in text

    latest.batch = batch([{"name": "cpu_percent", "value": 50.0}])  # the next one replaces it
    assert ("medbay_cpu_percent", (("host", "web-1"),)) in exported(registry)
    assert not [k for k in exported(registry) if k[0] == "medbay_span_service_errors_per_second"]
