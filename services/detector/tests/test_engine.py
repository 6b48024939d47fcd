"""The detection engine's logic, without NATS: lifecycle, debounce, hysteresis,
batching across hosts, idempotence and snapshots."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from medbay.common.events import MetricBatch, MetricSample, derived_event_id
from medbay.detector.config import ConfigError, DetectorConfig, ThresholdRule, load_config
from medbay.detector.engine import DetectionEngine
from medbay.detector.snapshots import SnapshotError, decode, encode, export_host, import_host

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def scrape(host: str, i: int, **values: float) -> MetricBatch:
    samples = []
    for name, value in values.items():
        if name == "service_up":
            samples.append(MetricSample(name=name, value=value, labels={"service": "web"}))
        else:
            samples.append(MetricSample(name=name, value=value))
    return MetricBatch(
        event_id=derived_event_id("t", host, i),
        host=host,
        collected_at=T0 + timedelta(seconds=5 * i),
        samples=samples,
    )


def run(
    engine: DetectionEngine, series: list[MetricBatch], start: int = 1
) -> list[tuple[str, str, str, int]]:
    return [
        (e.type, e.kind, e.severity.value, i)
        for i, b in enumerate(series, start=start)
        for e in engine.process(b, i)
    ]


def test_threshold_opens_once_escalates_and_resolves():
    cpu = [50] * 5 + [85] * 6 + [97] * 4 + [60] * 4
    events = run(
        DetectionEngine(DetectorConfig()),
        [scrape("h", i, cpu_percent=v) for i, v in enumerate(cpu)],
    )
    kinds = [(t, k, s) for t, k, s, _ in events if k == "cpu"]
    assert kinds == [
        ("issue.opened", "cpu", "warning"),
        ("issue.updated", "cpu", "critical"),
        ("issue.resolved", "cpu", "critical"),
    ]
    at = {t: i for t, k, _, i in events if k == "cpu"}
    assert at["issue.opened"] == 8  # third sample over 80 (for_samples=3)
    assert at["issue.updated"] == 14  # third sample over 95
    assert at["issue.resolved"] == 17  # second sample back under (clear_samples=2)


def test_hysteresis_keeps_a_hovering_value_from_flapping():
    hover = [85, 85, 85] + [79, 81] * 10  # dips under 80 but not under 80 - 5
    events = run(
        DetectionEngine(DetectorConfig()),
        [scrape("h", i, cpu_percent=v) for i, v in enumerate(hover)],
    )
    assert [t for t, k, _, _ in events if k == "cpu"] == ["issue.opened"]


def test_service_down_is_a_below_threshold():
    ups = [1, 1, 0, 0, 0, 1, 1]
    events = run(
        DetectionEngine(DetectorConfig()), [scrape("h", i, service_up=v) for i, v in enumerate(ups)]
    )
    assert [(t, k, i) for t, k, _, i in events] == [
        ("issue.opened", "service_down", 3),
        ("issue.resolved", "service_down", 6),
    ]


def test_anomaly_waits_for_warmup_then_flags_a_spike():
    rng = random.Random(1)
    flat = [50 + rng.gauss(0, 1) for _ in range(200)]
    engine = DetectionEngine(DetectorConfig())
    events = run(engine, [scrape("h", i, load1=v) for i, v in enumerate(flat)])
    assert not [e for e in events if e[3] <= 30]  # nothing during warm-up
    blip = [scrape("h", 200, load1=500.0), scrape("h", 201, load1=50.0)]
    assert run(engine, blip, start=201) == []  # one odd sample is no issue (for_samples=2)
    shift = run(engine, [scrape("h", 202 + i, load1=900.0 + 50 * i) for i in range(2)], start=203)
    assert shift == [("issue.opened", "anomaly", "warning", 204)]


def test_redelivered_batches_are_skipped():
    engine = DetectionEngine(DetectorConfig())
    down = scrape("h", 0, service_up=0)
    assert len(engine.process(down, 7)) == 1
    assert engine.process(down, 7) == []  # a redelivery
    assert engine.process(scrape("h", 1, service_up=0), 5) == []  # older than applied


def test_event_ids_are_derived_from_the_batch():
    batch = scrape("h", 0, service_up=0)
    first = DetectionEngine(DetectorConfig()).process(batch, 1)
    again = DetectionEngine(DetectorConfig()).process(batch, 1)
    assert [e.event_id for e in first] == [e.event_id for e in again]


def mixed_stream(hosts: int, scrapes: int, seed: int = 3) -> list[MetricBatch]:
    rng = random.Random(seed)
    out = []
    for i in range(scrapes):
        for h in range(hosts):
            out.append(
                scrape(
                    f"h{h}",
                    i,
                    cpu_percent=rng.choice([20, 50, 85, 97]),
                    service_up=rng.choice([0, 1, 1, 1]),
                    load1=rng.gauss(2, 0.5) if rng.random() > 0.02 else 40.0,
                )
            )
    return out


def test_batched_processing_equals_one_by_one():
    stream = mixed_stream(hosts=4, scrapes=80)
    one_by_one = DetectionEngine(DetectorConfig())
    expected = [e for i, b in enumerate(stream, 1) for e in one_by_one.process(b, i)]
    batched = DetectionEngine(DetectorConfig())
    got = []
    for start in range(0, len(stream), 37):  # sets spanning several scrapes per host
        chunk = [(b, i) for i, b in enumerate(stream[start : start + 37], start + 1)]
        got += [e for _, e in batched.process_many(chunk)]
    key = lambda e: (e.host, e.last_seen, e.fingerprint, e.type)  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, expected))
    assert [e.event_id for e in sorted(got, key=key)] == [
        e.event_id for e in sorted(expected, key=key)
    ]


def test_snapshot_round_trip_continues_exactly():
    stream = mixed_stream(hosts=3, scrapes=120)
    whole = DetectionEngine(DetectorConfig())
    expected = [e.event_id for i, b in enumerate(stream, 1) for e in whole.process(b, i)]

    first = DetectionEngine(DetectorConfig())
    half = len(stream) // 2
    got = [e.event_id for i, b in enumerate(stream[:half], 1) for e in first.process(b, i)]
    restored = DetectionEngine(DetectorConfig())
    for host in first.hosts:
        import_host(restored, decode(encode(export_host(first, host))))
    got += [
        e.event_id for i, b in enumerate(stream[half:], half + 1) for e in restored.process(b, i)
    ]
    assert got == expected


def test_config_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "d.yaml"
    path.write_text("anomaly:\n  - {metric: cpu_percent, detector: magic}\n")
    with pytest.raises(ConfigError, match=r"anomaly\[0\].*unknown detector 'magic'"):
        load_config(path)
    path.write_text("thresholds:\n  - {metric: x, kind: cpu, warning: 90, critical: 80}\n")
    with pytest.raises(ConfigError, match=r"thresholds\[0\].*warning must come before critical"):
        load_config(path)
    path.write_text("[1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ValueError, match="set warning, critical or both"):
        ThresholdRule(metric="x", kind="cpu")


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00\x05{bad}", b"\x00\x00\x00\x02{}"])
def test_unreadable_snapshots_are_refused(data: bytes):
    with pytest.raises((ValueError, KeyError, TypeError, struct.error)):
        decode(data)


def _exported() -> tuple[DetectionEngine, str]:
    engine = DetectionEngine(DetectorConfig())
    for i, batch in enumerate(mixed_stream(hosts=1, scrapes=40), 1):
        engine.process(batch, i)
    return engine, next(iter(engine.hosts))


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("host", 7, "host: expected str"),
        ("last_seq", "12", "last_seq: expected int"),
        ("last_seq", True, "last_seq: expected int"),
        ("series", {"a": 1}, "series: expected list"),
        ("series", [["cpu"]], "series entry: expected a pair"),
        ("blocks", [], "blocks: expected dict"),
        ("open", [{"row": 10**6}], "open issue row"),
        ("open", "none", "open: expected list"),
    ],
)
def test_a_malformed_snapshot_is_refused_before_anything_changes(
    field: str, value: object, problem: str
):
    """Checks that hold under ``python -O`` too: no assert guards persisted data."""
    first, host = _exported()
    snap = decode(encode(export_host(first, host)))
    snap.meta[field] = value
    engine = DetectionEngine(DetectorConfig())
    with pytest.raises(SnapshotError, match=problem):
        import_host(engine, snap)
    assert engine.hosts == {}


def test_a_snapshot_missing_an_array_is_refused():
    first, host = _exported()
    snap = decode(encode(export_host(first, host)))
    del snap.arrays["level"]
    with pytest.raises(SnapshotError, match="no array 'level'"):
        import_host(DetectionEngine(DetectorConfig()), snap)
