"""The detection engine's logic, without NATS: lifecycle, debounce, hysteresis,
series that come and go, what each event says, batching across hosts,
idempotence and snapshots."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from medbay.common.events import IssueChange, MetricBatch, MetricSample, derived_event_id
from medbay.detector.config import (
    AnomalyRule,
    ConfigError,
    DetectorConfig,
    ThresholdRule,
    load_config,
)
from medbay.detector.engine import SHARED_LAYOUTS, DetectionEngine, SilenceClock
from medbay.detector.snapshots import SnapshotError, decode, encode, export_host, import_host

T0 = datetime(2026, 1, 1, tzinfo=UTC)

CPU = ThresholdRule(
    metric="cpu_percent",
    kind="cpu",
    warning=80,
    critical=95,
    for_samples=3,
    clear_samples=2,
    hysteresis=5,
)
SERVICE_UP = ThresholdRule(
    metric="service_up",
    kind="service_down",
    critical=0.5,
    direction="below",
    for_samples=2,
    resource_label="service",
)
PROCESS_CPU = ThresholdRule(
    metric="process_cpu_percent",
    kind="runaway_process",
    warning=90,
    for_samples=4,
    clear_samples=2,
    hysteresis=10,
    resource_label="name",
    absent_clears=True,
)
PROCESS_MEMORY = ThresholdRule(
    metric="process_memory_percent",
    kind="runaway_process",
    warning=30,
    critical=60,
    for_samples=3,
    clear_samples=2,
    resource_label="name",
    absent_clears=True,
)
RULES = DetectorConfig(
    thresholds=[CPU, SERVICE_UP, PROCESS_CPU, PROCESS_MEMORY],
    anomaly=[AnomalyRule(metric="load1", detector="likelihood")],
)
"""One rule of each sort, with short windows (and the detector that learns fastest)."""


def scrape(
    host: str,
    i: int,
    processes: list[MetricSample] | None = None,
    check_errors: dict[str, str] | None = None,
    **values: float,
) -> MetricBatch:
    """Scrape ``i`` of ``host`` (5 s apart): ``values`` by metric name, then ``processes``."""
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
        samples=samples + (processes or []),
        check_errors=check_errors or {},
    )


def process(pid: int, cpu: float, command: str = "", name: str = "") -> MetricSample:
    name = name or f"worker{pid}"
    return MetricSample(
        name="process_cpu_percent",
        value=cpu,
        labels={"pid": str(pid), "name": name, "command": command or f"/usr/bin/{name} --serve"},
    )


def run(
    engine: DetectionEngine, series: list[MetricBatch], start: int = 1
) -> list[tuple[str, str, str, int]]:
    return [
        (e.type, e.kind, e.severity.value, i)
        for i, b in enumerate(series, start=start)
        for e in engine.process(b, i)
    ]


def events_of(
    engine: DetectionEngine, series: list[MetricBatch], start: int = 1
) -> list[IssueChange]:
    return [e for i, b in enumerate(series, start=start) for e in engine.process(b, i)]


def test_threshold_opens_once_escalates_and_resolves():
    cpu = [50] * 5 + [85] * 6 + [97] * 4 + [60] * 4
    events = run(DetectionEngine(RULES), [scrape("h", i, cpu_percent=v) for i, v in enumerate(cpu)])
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
        DetectionEngine(RULES), [scrape("h", i, cpu_percent=v) for i, v in enumerate(hover)]
    )
    assert [t for t, k, _, _ in events if k == "cpu"] == ["issue.opened"]


def test_service_down_needs_two_failed_checks_in_a_row():
    ups = [1, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1]
    events = run(DetectionEngine(RULES), [scrape("h", i, service_up=v) for i, v in enumerate(ups)])
    assert [(t, k, i) for t, k, _, i in events] == [
        ("issue.opened", "service_down", 8),  # the second 0 in a row; single ones pass
        ("issue.resolved", "service_down", 10),
    ]


def test_an_issue_says_what_was_wrong():
    engine = DetectionEngine(RULES)
    cpu = events_of(engine, [scrape("h", i, cpu_percent=97.24) for i in range(3)])
    assert [e.detail for e in cpu] == ["cpu_percent 97.2 over 95 for 3 samples"]  # critical
    back = events_of(engine, [scrape("h", 3 + i, cpu_percent=60) for i in range(2)], start=4)
    assert [e.detail for e in back] == ["cpu_percent 60, back under 90 for 2 samples"]

    refused = {"web": "connection refused"}
    down = [scrape("h", 10 + i, service_up=0, check_errors=refused) for i in range(2)]
    opened = events_of(engine, down, start=10)
    assert [(e.resource, e.detail) for e in opened] == [("web", "connection refused")]
    silent_check = [scrape("g", i, service_up=0) for i in range(2)]  # an older collector
    assert [e.detail for e in events_of(engine, silent_check, start=20)] == [
        "service_up 0 under 0.5 for 2 samples"
    ]


def test_a_runaway_process_opens_with_its_command_and_resolves_when_it_goes():
    engine = DetectionEngine(RULES)
    spinner = process(4242, 99.6, command="python spin.py --forever", name="python")
    quiet = [process(7, 3.0)]
    busy = [scrape("h", i, processes=[spinner, *quiet]) for i in range(4)]
    opened = events_of(engine, busy)
    assert [(e.type, e.kind, e.resource, e.labels["pid"]) for e in opened] == [
        ("issue.opened", "runaway_process", "python", "4242")
    ]
    assert opened[0].detail == "pid 4242 (python spin.py --forever) at 100% CPU for 4 samples"

    gone = [scrape("h", 4 + i, processes=quiet) for i in range(3)]  # killed: off the top list
    resolved = events_of(engine, gone, start=5)
    assert [(e.type, e.fingerprint, e.detail) for e in resolved] == [
        (
            "issue.resolved",
            opened[0].fingerprint,
            "pid 4242 (python spin.py --forever) no longer among the top processes",
        )
    ]
    assert resolved[0].last_seen == gone[1].collected_at  # the second scrape without it


def test_a_process_back_to_normal_on_the_list_resolves_too():
    engine = DetectionEngine(RULES)
    events = events_of(
        engine,
        [scrape("h", i, processes=[process(9, v)]) for i, v in enumerate([95] * 4 + [40] * 2)],
    )
    assert [e.type for e in events] == ["issue.opened", "issue.resolved"]
    assert events[1].detail == "pid 9 (/usr/bin/worker9 --serve) back to 40% CPU for 2 samples"


def test_a_process_dropping_off_the_list_starts_its_count_again():
    """Missing counts as normal: busy 3 samples, gone 1, busy 3 is never 4 in a row."""
    engine = DetectionEngine(RULES)
    hot = process(5, 99.0)
    present = [True, True, True, False, True, True, True, False] * 3
    series = [
        scrape("h", i, processes=[hot] if p else [], cpu_percent=10) for i, p in enumerate(present)
    ]
    assert events_of(engine, series) == []
    assert events_of(engine, [scrape("h", 30 + i, processes=[hot]) for i in range(4)], 30)


def test_passing_processes_do_not_pile_up():
    """Thousands of short-lived processes over a day reuse the rows of those gone."""
    engine = DetectionEngine(RULES)
    rng = random.Random(5)
    for i in range(2000):
        procs = [process(1000 + i * 5 + k, rng.uniform(0, 60)) for k in range(5)]
        engine.process(scrape("h", i, processes=procs, cpu_percent=30), i + 1)
    assert len(engine.hosts["h"].index) <= 1 + 10  # cpu_percent, this scrape's and the last's
    assert len(engine.series) <= 1 + 10


def test_a_runaway_process_that_leaves_and_comes_back_keeps_its_issue_until_clear():
    engine = DetectionEngine(RULES)
    hot = process(77, 99.0)
    opened = events_of(engine, [scrape("h", i, processes=[hot]) for i in range(4)])
    assert [e.type for e in opened] == ["issue.opened"]
    flicker = [scrape("h", 4, cpu_percent=10), scrape("h", 5, processes=[hot])]
    assert events_of(engine, flicker, start=5) == []  # one missing scrape is not two


def test_anomaly_waits_for_warmup_then_flags_a_spike():
    rng = random.Random(1)
    flat = [50 + rng.gauss(0, 1) for _ in range(200)]
    engine = DetectionEngine(RULES)
    events = run(engine, [scrape("h", i, load1=v) for i, v in enumerate(flat)])
    assert not [e for e in events if e[3] <= 30]  # nothing during warm-up
    blip = [scrape("h", 200, load1=500.0), scrape("h", 201, load1=50.0)]
    assert run(engine, blip, start=201) == []  # one odd sample is no issue (for_samples=2)
    shift = [scrape("h", 202 + i, load1=900.0 + 50 * i) for i in range(2)]
    found = events_of(engine, shift, start=203)
    assert [(e.type, e.kind, e.severity.value) for e in found] == [
        ("issue.opened", "anomaly", "warning")
    ]
    assert found[0].detail.startswith("load1 950 anomalous (score ")
    assert found[0].detail.endswith(", likelihood) for 2 samples")


@pytest.mark.parametrize(("min_value", "opens"), [(None, True), (250.0, False)])
def test_an_anomaly_below_min_value_is_no_incident(min_value: float | None, opens: bool):
    """Latency going from about 2 ms to 40 ms under load is anomalous but harmless."""
    config = DetectorConfig(
        thresholds=[],
        anomaly=[
            AnomalyRule(metric="service_latency_ms", min_value=min_value, detector="likelihood")
        ],
    )
    rng = random.Random(2)
    quiet = [2 + rng.random() for _ in range(100)]
    loaded = [40.0 + 4 * i for i in range(10)]  # each a new high: anomalous
    engine = DetectionEngine(config)
    series = [scrape("h", i, service_latency_ms=v) for i, v in enumerate(quiet + loaded)]
    assert bool(events_of(engine, series)) is opens
    if not opens:  # the same shape at a latency that matters does open
        slow = [scrape("h", 200 + i, service_latency_ms=900.0 + 100 * i) for i in range(3)]
        assert [e.type for e in events_of(engine, slow, start=200)] == ["issue.opened"]


def test_the_default_detector_opens_on_a_held_shift_and_says_what_was_unusual():
    config = DetectorConfig(thresholds=[], anomaly=[AnomalyRule(metric="load1")])
    rng = random.Random(4)
    quiet = [50 + rng.gauss(0, 1) for _ in range(400)]
    engine = DetectionEngine(config)
    assert events_of(engine, [scrape("h", i, load1=v) for i, v in enumerate(quiet)]) == []
    blip = [scrape("h", 400, load1=90.0), scrape("h", 401, load1=50.0)]
    assert events_of(engine, blip, start=400) == []  # one odd sample is no issue
    held = [scrape("h", 402 + i, load1=120.0 + i) for i in range(4)]
    found = events_of(engine, held, start=402)
    assert [(e.type, e.detector) for e in found] == [("issue.opened", "novelty")]
    assert ", novelty: " in found[0].detail and "above its highest in" in found[0].detail


def test_the_default_detector_judges_a_value_by_the_time_of_its_batch():
    """Eight days of busy days (80 from 09:00 to 18:00 UTC) and quiet nights (20), a
    batch every 15 minutes; then a night at the day's level, within the series' range:
    unusual for the hour, which the batches' ``collected_at`` tells."""
    config = DetectorConfig(thresholds=[], anomaly=[AnomalyRule(metric="load1")])
    rng = random.Random(5)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def at(i: int, value: float) -> MetricBatch:
        return MetricBatch(
            event_id=derived_event_id("t", "h", i),
            host="h",
            collected_at=start + timedelta(minutes=15 * i),
            samples=[MetricSample(name="load1", value=value)],
        )

    def usual(i: int) -> float:
        hour = (i // 4) % 24
        return (80.0 if 9 <= hour < 18 else 20.0) + rng.gauss(0, 1)

    engine = DetectionEngine(config)
    days = 8 * 96
    history = events_of(engine, [at(i, usual(i)) for i in range(days)])
    assert all(e.type == "issue.resolved" for e in history[-1:])  # nothing left open
    night = days + 3 * 4  # 03:00 on the ninth day
    calm = events_of(engine, [at(i, usual(i)) for i in range(days, night)], start=days)
    assert [e.type for e in calm] == []
    (block,) = engine.blocks.values()
    assert engine.process(at(night, 80.0), night) == []  # one sample is no issue yet ...
    said = block.detector.explain(0)
    assert "above its highest between 03:00 and 06:00 UTC" in said, said  # ... but unusual
    busy = events_of(engine, [at(night + i, 80.0) for i in range(1, 4)], start=night + 1)
    assert [e.type for e in busy] == ["issue.opened"], busy


def test_hosts_sending_the_same_layout_share_one_copy_of_it():
    engine = DetectionEngine(RULES)
    for i, host in enumerate(("a", "b")):
        engine.process(scrape(host, 1, cpu_percent=10.0, service_up=1.0), i + 1)
    a, b = engine.hosts["a"], engine.hosts["b"]
    assert a.shape is not None and b.shape is not None
    assert a.shape[0] is b.shape[0] and a.shape[2] is b.shape[2]
    assert a.shape[3] is not b.shape[3]  # each host's own rows
    key_a = next(k for k in a.index if k[0] == "service_up")
    key_b = next(k for k in b.index if k[0] == "service_up")
    assert key_a == key_b and key_a[1] is key_b[1]
    # many distinct layouts (a host's top processes change): one copy each of the latest
    for i in range(3 * SHARED_LAYOUTS):
        engine.process(scrape("c", i + 1, processes=[process(1000 + i, 1.0)]), 10 + i)
    assert len(engine._layouts) == SHARED_LAYOUTS


def test_redelivered_batches_are_skipped():
    engine = DetectionEngine(RULES)
    down = [scrape("h", 0, service_up=0), scrape("h", 1, service_up=0)]
    assert engine.process(down[0], 6) == []
    assert len(engine.process(down[1], 7)) == 1
    assert engine.process(down[1], 7) == []  # a redelivery
    assert engine.process(scrape("h", 2, service_up=1), 5) == []  # older than applied


def test_event_ids_come_from_the_issue_and_its_episode_not_the_batch():
    cpu = [50, 97, 97, 97, 85, 85, 60, 60, 97, 97, 97, 60, 60]
    series = [scrape("h", i, cpu_percent=v) for i, v in enumerate(cpu)]
    events = events_of(DetectionEngine(RULES), series)
    assert [(e.type, e.severity.value) for e in events] == [
        ("issue.opened", "critical"),
        ("issue.updated", "warning"),
        ("issue.resolved", "warning"),
        ("issue.opened", "critical"),
        ("issue.resolved", "critical"),
    ]
    fingerprint = events[0].fingerprint
    assert [e.event_id for e in events] == [
        derived_event_id(fingerprint, 1, "opened"),
        derived_event_id(fingerprint, 1, "updated", 1, "warning"),
        derived_event_id(fingerprint, 1, "resolved"),
        derived_event_id(fingerprint, 2, "opened"),
        derived_event_id(fingerprint, 2, "resolved"),
    ]
    # the same samples under other batch ids (another replica's replay) give the same ids
    renamed = [b.model_copy(update={"event_id": f"other-{i}"}) for i, b in enumerate(series)]
    assert [e.event_id for e in events_of(DetectionEngine(RULES), renamed)] == [
        e.event_id for e in events
    ]


def test_an_issue_re_derived_after_a_restore_has_its_id_even_from_another_batch():
    """A replica restoring a snapshot taken before an opening may see the crossing on a
    later batch (it warmed up again, a sample came late): same episode, same id."""
    engine = DetectionEngine(RULES)
    before = [scrape("h", i, service_up=1) for i in range(3)]
    events_of(engine, before)
    snap = decode(encode(export_host(engine, "h")))
    (opened,) = events_of(engine, [scrape("h", i, service_up=0) for i in (3, 4)], start=4)

    restored = DetectionEngine(RULES)
    import_host(restored, snap)
    later = [scrape("h", i, service_up=v) for i, v in ((3, 1), (4, 0), (5, 0))]
    (again,) = events_of(restored, later, start=4)
    assert again.last_seen != opened.last_seen  # crossed on another batch
    assert again.event_id == opened.event_id


def test_episodes_are_forgotten_long_after_their_last_event_and_not_while_open():
    engine = DetectionEngine(RULES)
    minutes = 60 // 5  # scrapes are 5 s apart
    events = events_of(engine, [scrape("h", i, service_up=0) for i in range(2)])
    fingerprint = events[0].fingerprint
    state = engine.hosts["h"]
    assert state.episodes[fingerprint].count == 1
    # open for two hours: kept
    down = [scrape("h", i, service_up=0) for i in range(2, 120 * minutes, 30)]
    events_of(engine, down, start=3)
    assert state.episodes[fingerprint].count == 1
    seq = 3 + len(down)
    resolved = events_of(engine, [scrape("h", 120 * minutes, service_up=1)], start=seq)
    assert [e.type for e in resolved] == ["issue.resolved"]
    # an hour and more later, counting starts again (the old ids are long past dedup)
    quiet = [scrape("h", i, service_up=1) for i in range(121 * minutes, 250 * minutes, 30)]
    events_of(engine, quiet, start=seq + 1)
    assert fingerprint not in state.episodes


def mixed_stream(hosts: int, scrapes: int, seed: int = 3) -> list[MetricBatch]:
    """Every sort of rule at work: levels, down checks, anomalies, processes coming
    and going (some running away)."""
    rng = random.Random(seed)
    out = []
    for i in range(scrapes):
        for h in range(hosts):
            procs = [
                process(100 * h + (i // 7 + k) % 23, rng.choice([5, 50, 99]), name=f"p{k}")
                for k in range(rng.randint(0, 3))
            ]
            out.append(
                scrape(
                    f"h{h}",
                    i,
                    processes=procs,
                    cpu_percent=rng.choice([20, 50, 85, 97]),
                    service_up=rng.choice([0, 1, 1, 1]),
                    load1=rng.gauss(2, 0.5) if rng.random() > 0.02 else 40.0,
                )
            )
    return out


def test_batched_processing_equals_one_by_one():
    stream = mixed_stream(hosts=4, scrapes=80)
    one_by_one = DetectionEngine(RULES)
    expected = [e for i, b in enumerate(stream, 1) for e in one_by_one.process(b, i)]
    assert {e.kind for e in expected} >= {"cpu", "service_down", "runaway_process", "anomaly"}
    batched = DetectionEngine(RULES)
    got = []
    for start in range(0, len(stream), 37):  # sets spanning several scrapes per host
        chunk = [(b, i) for i, b in enumerate(stream[start : start + 37], start + 1)]
        got += [e for _, e in batched.process_many(chunk)]
    key = lambda e: (e.host, e.last_seen, e.fingerprint, e.type)  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, expected))
    assert [(e.event_id, e.detail) for e in sorted(got, key=key)] == [
        (e.event_id, e.detail) for e in sorted(expected, key=key)
    ]


def test_snapshot_round_trip_continues_exactly():
    stream = mixed_stream(hosts=3, scrapes=120)
    whole = DetectionEngine(RULES)
    expected = [e.event_id for i, b in enumerate(stream, 1) for e in whole.process(b, i)]

    first = DetectionEngine(RULES)
    half = len(stream) // 2
    got = [e.event_id for i, b in enumerate(stream[:half], 1) for e in first.process(b, i)]
    restored = DetectionEngine(RULES)
    for host in first.hosts:
        import_host(restored, decode(encode(export_host(first, host))))
    got += [
        e.event_id for i, b in enumerate(stream[half:], half + 1) for e in restored.process(b, i)
    ]
    assert got == expected


def test_dropped_hosts_leave_their_rows_to_the_next_ones_fresh():
    """A replica drops the hosts of a partition handed over; the next hosts reuse their
    rows, detector rows included, and behave exactly as in an engine of their own."""
    stream = mixed_stream(hosts=6, scrapes=100)
    shared = DetectionEngine(RULES)
    first = [(b, i) for i, b in enumerate(stream, 1) if b.host in {"h0", "h1", "h2"}]
    shared.process_many(first[: len(first) // 2])
    sizes = (len(shared.series), {n: b.detector.size for n, b in shared.blocks.items()})
    shared.drop_hosts(["h0", "h1", "h2"])
    assert not shared.hosts and not shared.dirty

    later = [(b, i) for i, b in enumerate(stream, 1) if b.host in {"h3", "h4", "h5"}]
    got = [e for _, e in shared.process_many(later)]
    alone = DetectionEngine(RULES)
    expected = [e for _, e in alone.process_many(later)]
    assert {e.kind for e in expected} >= {"cpu", "service_down"}
    assert [(e.event_id, e.detail) for e in got] == [(e.event_id, e.detail) for e in expected]
    rows, detector_rows = sizes  # the dropped rows were taken first
    assert len(shared.series) == max(rows, len(alone.series))
    assert {n: b.detector.size for n, b in shared.blocks.items()} == detector_rows
    for host in ("h3", "h4", "h5"):  # the same state, row for row
        mine, theirs = export_host(shared, host), export_host(alone, host)
        assert mine.arrays.keys() == theirs.arrays.keys()
        for name, values in mine.arrays.items():
            assert values.tolist() == theirs.arrays[name].tolist(), (host, name)


def test_groups_of_hosts_are_judged_silent_on_their_own_clocks():
    engine = DetectionEngine(RULES)
    early, late = SilenceClock(), SilenceClock()
    for i, host in enumerate(("a", "b")):
        engine.process(scrape(host, 0, cpu_percent=10), i + 1)
    early.restart(T0)
    late.restart(T0 + timedelta(seconds=300))  # restored later: its window starts then
    opened: dict[str, float] = {}
    for t in range(305, 420, 5):  # a check every 5 s
        at = T0 + timedelta(seconds=t)
        for host, clock in (("a", early), ("b", late)):
            for event in engine.check_silence(at, [host], clock):
                opened[event.host] = t
    # a: 30 s after its last batch (0 s); b: 30 s after its group was restored (300 s)
    assert opened == {"a": 305, "b": 335}


def test_config_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "d.yaml"
    path.write_text("anomaly:\n  - {metric: cpu_percent, detector: magic}\n")
    with pytest.raises(ConfigError, match=r"anomaly\[0\].*unknown detector 'magic'"):
        load_config(path)
    path.write_text("thresholds:\n  - {metric: x, kind: cpu, warning: 90, critical: 80}\n")
    with pytest.raises(ConfigError, match=r"thresholds\[0\].*warning must come before critical"):
        load_config(path)
    path.write_text("thresholds:\n  - {metric: x, kind: cpu, warning: 90, absent_clear: true}\n")
    with pytest.raises(ConfigError, match=r"thresholds\[0\]\.absent_clear.*Extra inputs"):
        load_config(path)
    path.write_text(
        "thresholds:\n  - {metric: process_cpu_percent, kind: runaway_process, warning: 90,"
        " absent_clears: true}\nanomaly:\n  - {metric: process_cpu_percent}\n"
    )
    with pytest.raises(ConfigError, match=r"anomaly\[0\]: process_cpu_percent .* absent_clears"):
        load_config(path)
    path.write_text("silence: {intervals: 1}\n")
    with pytest.raises(ConfigError, match=r"silence\.intervals.*greater than or equal to 2"):
        load_config(path)
    path.write_text("anomaly:\n  - {metric: service_latency_ms, min_value: fast}\n")
    with pytest.raises(ConfigError, match=r"anomaly\[0\]\.min_value"):
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
    engine = DetectionEngine(RULES)
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
        ("silence", [], "silence: expected dict"),
        ("silence", {"intervals": [5, "x"]}, "silence interval: expected a finite number"),
        (
            "silence",
            {"intervals": [], "last_arrival": float("nan")},
            "silence last_arrival: expected a finite number",
        ),
        ("silence", {"intervals": [], "open": {"fingerprint": "f"}}, "silence first_seen"),
    ],
)
def test_a_malformed_snapshot_is_refused_before_anything_changes(
    field: str, value: object, problem: str
):
    """Checks that hold under ``python -O`` too: no assert guards persisted data."""
    first, host = _exported()
    snap = decode(encode(export_host(first, host)))
    snap.meta[field] = value
    engine = DetectionEngine(RULES)
    with pytest.raises(SnapshotError, match=problem):
        import_host(engine, snap)
    assert engine.hosts == {}


def test_a_snapshot_missing_an_array_is_refused():
    first, host = _exported()
    snap = decode(encode(export_host(first, host)))
    del snap.arrays["level"]
    with pytest.raises(SnapshotError, match="no array 'level'"):
        import_host(DetectionEngine(RULES), snap)
