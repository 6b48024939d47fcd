"""MetricBatch in both versions: columns (2, written) and a list of samples (1, still read),
and the reasons a bad batch is refused with (what consumers dead-letter it for)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from medbay.cli.eventlog import describe
from medbay.common.bus import validation_reason
from medbay.common.events import MAX_SAMPLES, MetricBatch, MetricSample, SampleColumns

AT = datetime(2026, 1, 1, tzinfo=UTC)
SAMPLES: list[MetricSample] = [
    {"name": "cpu_percent", "value": 12.5, "unit": "%"},
    {"name": "service_up", "value": 1.0, "labels": {"service": "api", "check": "http"}},
    {"name": "service_up", "value": 0.0, "labels": {"check": "tcp", "service": "db"}},
    {"name": "load1", "value": 0.5},
    {
        "name": "service_latency_ms",
        "value": 3.0,
        "unit": "ms",
        "labels": {"service": "api", "check": "http"},
    },
]


def batch(**fields: Any) -> MetricBatch:
    """A batch as the collector makes it."""
    return MetricBatch(host="web-1", collected_at=AT, samples=SampleColumns.of(SAMPLES), **fields)


def wire(**changes: Any) -> bytes:
    """A version 2 batch as JSON, with some of its columns changed."""
    data = json.loads(batch().model_dump_json())
    data["samples"] |= changes
    return json.dumps(data).encode()


def reason(payload: bytes) -> str:
    with pytest.raises(ValidationError) as caught:
        MetricBatch.model_validate_json(payload)
    return validation_reason(caught.value)


def test_version_2_writes_the_samples_as_columns_and_reads_them_back():
    written = batch()
    data = json.loads(written.model_dump_json())
    assert data["schema_version"] == 2
    assert data["samples"] == {
        "names": ["cpu_percent", "service_up", "service_up", "load1", "service_latency_ms"],
        "values": [12.5, 1.0, 0.0, 0.5, 3.0],
        "units": ["%", "", "", "", "ms"],
        "label_index": [0, 1, 2, 0, 1],  # the same labels in another order are the same set
        "label_sets": [{}, {"service": "api", "check": "http"}, {"check": "tcp", "service": "db"}],
    }
    read = MetricBatch.model_validate_json(written.model_dump_json())
    assert read == written
    assert list(read.samples) == SAMPLES
    assert len(read.samples) == 5
    assert read.samples[1] == SAMPLES[1]
    assert read.samples[-1] == SAMPLES[-1]


def test_a_sample_read_leaves_out_an_empty_unit_and_labels_and_is_a_copy():
    read = MetricBatch.model_validate_json(batch().model_dump_json())
    assert read.samples[3] == {"name": "load1", "value": 0.5}
    read.samples[1]["labels"]["service"] = "changed"
    assert read.samples[1] == SAMPLES[1]


def test_version_1_as_a_previous_collector_wrote_it_is_read_into_the_same_columns():
    old = {
        "event_id": "e1",
        "schema_version": 1,
        "timestamp": AT.isoformat(),
        "type": "metric.batch",
        "host": "web-1",
        "collected_at": AT.isoformat(),
        "samples": [
            {**s, "unit": s.get("unit", ""), "labels": s.get("labels", {})} for s in SAMPLES
        ],
        "check_errors": {"db": "connection refused"},
    }
    read = MetricBatch.model_validate_json(json.dumps(old))
    assert read.schema_version == 1
    assert list(read.samples) == SAMPLES
    assert read.samples.names == batch().samples.names
    assert read.samples.values == batch().samples.values
    assert read.check_errors == {"db": "connection refused"}
    # written again in its own version: a list of samples
    assert json.loads(read.model_dump_json())["samples"] == SAMPLES


def test_samples_may_be_given_in_either_form_in_python():
    columns = SampleColumns.of(SAMPLES)
    assert MetricBatch(host="web-1", collected_at=AT, samples=columns).samples == columns
    listed = MetricBatch(host="web-1", collected_at=AT, samples=SAMPLES)
    assert list(listed.samples) == SAMPLES
    assert list(SampleColumns.of([])) == []
    with pytest.raises(ValidationError, match="finite"):
        SampleColumns.of([{"name": "cpu_percent", "value": float("nan")}])


def test_the_cli_counts_the_samples_of_either_version():
    for version in (1, 2):
        event = json.loads(batch(schema_version=version).model_dump_json())
        assert describe(event) == "metric.batch web-1: 5 samples"


BAD_COLUMNS: list[tuple[str, dict[str, Any], str]] = [
    (
        "unequal columns",
        {"values": [1.0, 2.0]},
        "the columns differ in length: names 5, values 2, units 5, label_index 5",
    ),
    ("label index past the table", {"label_index": [0, 1, 2, 0, 3]}, "label_index[4] is 3"),
    ("negative label index", {"label_index": [0, 1, -1, 0, 1]}, "label_index.2: Input should"),
    ("NaN", {"values": [1.0, "NaN", 0.0, 0.5, 3.0]}, "values.1: Input should be a finite number"),
    ("Infinity", {"values": [1.0, 1.0, 0.0, 0.5, "inf"]}, "values.4: Input should be a finite"),
    ("bad name", {"names": ["cpu_percent", "1up", "a", "b", "c"]}, "names.1: String should match"),
    ("long unit", {"units": ["%", "x" * 33, "", "", ""]}, "units.1: String should have at most"),
    (
        "too many labels",
        {"label_sets": [{}, {f"k{i}": "v" for i in range(33)}, {}]},
        "label_sets.1: Dictionary should have at most 32 items",
    ),
    ("not a number", {"values": [1.0, "up", 0.0, 0.5, 3.0]}, "values.1: Input should be a valid"),
    ("null column", {"units": None}, "units: Input should be a valid array"),
]


@pytest.mark.parametrize(
    ("case", "changes", "expected"), BAD_COLUMNS, ids=[c[0] for c in BAD_COLUMNS]
)
def test_a_bad_version_2_batch_is_refused_naming_what_is_wrong(case, changes, expected):
    text = reason(wire(**changes))
    assert text.startswith("invalid MetricBatch: samples.columns")
    assert expected in text


def test_more_than_the_most_samples_is_refused():
    count = MAX_SAMPLES + 1
    text = reason(
        wire(names=["m"] * count, values=[1.0] * count, units=[""] * count, label_index=[0] * count)
    )
    assert "samples.columns.names: List should have at most 20000 items" in text


def test_a_bad_version_1_batch_is_refused_naming_the_sample():
    data = json.loads(batch(schema_version=1).model_dump_json())
    data["samples"][2]["value"] = "NaN"
    assert "samples.list.2.value: Input should be a finite number" in reason(
        json.dumps(data).encode()
    )


def test_an_unknown_version_is_refused():
    data = json.loads(batch().model_dump_json()) | {"schema_version": 3}
    assert "schema_version: Input should be 1 or 2" in reason(json.dumps(data).encode())
