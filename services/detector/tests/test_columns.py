"""The engine reads a batch's columns: whatever the version or the shape of the label
table, the same samples give the same issues."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def scrapes() -> list[list[MetricSample]]:
    """A host whose api goes down while its traces show errors, and whose disk fills up;
    a process comes and goes, so the batches change shape."""
    out = []
    for i in range(30):
        down = 10 <= i < 16
        samples: list[MetricSample] = [
            {"name": "cpu_percent", "value": 30.0, "unit": "%"},
            {
                "name": "disk_percent",
                "value": 97.0 if 20 <= i < 26 else 40.0,
                "unit": "%",
                "labels": {"mount": "/"},
            },
            {"name": "service_up", "value": 0.0 if down else 1.0, "labels": {"service": "api"}},
            {
                "name": "span_service_error_ratio",
                "value": 0.5 if down else 0.0,
                "labels": {"service": "api"},
            },
            {
                "name": "span_service_requests_per_second",
                "value": 20.0,
                "labels": {"service": "api"},
            },
        ]
        if i % 7 < 3:
            labels = {"pid": "42", "name": "batch", "command": "batch --nightly"}
            samples.append({"name": "process_cpu_percent", "value": 5.0, "labels": labels})
        out.append(samples)
    return out


def batch(i: int, samples: list[MetricSample] | SampleColumns, version: int = 2) -> MetricBatch:
    return MetricBatch(
        event_id=derived_event_id("columns", i),
        schema_version=version,
        host="web-1",
        collected_at=T0 + timedelta(seconds=5 * i),
        samples=samples,
    )


def a_label_set_per_sample(samples: list[MetricSample]) -> SampleColumns:
    """Columns whose table repeats a label set for every sample, in reverse order."""
    return SampleColumns(
        names=[s["name"] for s in samples],
        values=[s["value"] for s in samples],
        units=[s.get("unit", "") for s in samples],
        label_index=list(range(len(samples)))[::-1],
        label_sets=[s.get("labels", {}) for s in samples][::-1],
    )


def events(batches: list[MetricBatch]) -> list[IssueChange]:
    engine = DetectionEngine(DetectorConfig())
    return [e for seq, b in enumerate(batches, 1) for e in engine.process(b, seq)]


def fields(found: list[IssueChange]) -> list[dict[str, object]]:
    """The events without the time they were made at."""
    return [e.model_dump(exclude={"timestamp"}) for e in found]


def test_version_1_and_any_label_table_give_the_same_issues():
    written = [batch(i, SampleColumns.of(s)) for i, s in enumerate(scrapes())]
    expected = events(written)
    assert [(e.type, e.kind) for e in expected] == [
        ("issue.opened", "service_down"),
        ("issue.opened", "error_rate"),
        ("issue.resolved", "service_down"),
        ("issue.resolved", "error_rate"),
        ("issue.opened", "disk"),
        ("issue.resolved", "disk"),
    ]
    assert expected[0].signals == {"requests_per_second": 20.0, "error_ratio": 0.5}
    assert expected[4].resource == "/"

    as_version_1 = [
        MetricBatch.model_validate_json(
            b.model_copy(update={"schema_version": 1}).model_dump_json()
        )
        for b in written
    ]
    assert all(b.schema_version == 1 for b in as_version_1)
    assert fields(events(as_version_1)) == fields(expected)
    spread = [batch(i, a_label_set_per_sample(s)) for i, s in enumerate(scrapes())]
    assert fields(events(spread)) == fields(expected)


def test_a_batch_with_the_same_names_and_other_labels_is_laid_out_again():
    """Same names, same label_index, only the label table differs: another series."""

    def down(i: int, service: str) -> MetricBatch:
        return batch(i, [{"name": "service_up", "value": 0.0, "labels": {"service": service}}])

    found = events([down(0, "a"), down(1, "b"), down(2, "b")])
    assert [(e.type, e.resource) for e in found] == [("issue.opened", "b")]
