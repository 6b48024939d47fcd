"""Hosts whose metrics stop arriving: when silence opens an issue, what resolves it,
what guards against false alarms, and that it survives a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from medbay.common.events import MetricBatch, MetricSample, derived_event_id, issue_fingerprint
from medbay.detector.config import DetectorConfig, SilenceConfig
from medbay.detector.engine import DetectionEngine
from medbay.detector.snapshots import decode, encode, export_host, import_host

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = DetectorConfig(thresholds=[], anomaly=[])  # silence: 6 intervals, at least 30 s


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def batch(host: str, seconds: float) -> MetricBatch:
    return MetricBatch(
        event_id=derived_event_id("silence", host, seconds),
        host=host,
        collected_at=at(seconds),
        samples=[MetricSample(name="load1", value=1.0)],
    )


class Feed:
    """Batches of several hosts in stream order, each received 0.2 s after collection."""

    def __init__(self, engine: DetectionEngine) -> None:
        self.engine = engine
        self.seq = 0

    def send(self, host: str, seconds: float) -> list[str]:
        self.seq += 1
        events = self.engine.process(batch(host, seconds), self.seq, at(seconds + 0.2).timestamp())
        return [f"{e.type} {e.kind}" for e in events]

    def every(self, host: str, interval: float, start: float, end: float) -> None:
        t = start
        while t <= end:
            self.send(host, t)
            t += interval


def checks(engine: DetectionEngine, start: float, end: float, step: float = 5) -> dict[float, str]:
    """Silence checks every ``step`` seconds: when each host went silent."""
    found = {}
    t = start
    while t <= end:
        for event in engine.check_silence(at(t)):
            found[t] = event.host
        t += step
    return found


def test_a_host_that_stops_opens_host_silent_after_its_limit_and_resolves_on_return():
    engine = DetectionEngine(CONFIG)
    feed = Feed(engine)
    feed.every("web1", 5, 0, 100)  # last batch at 100 s, received at 100.2 s
    assert engine.check_silence(at(130)) == []  # 29.8 s: not yet (limit max(6 x 5, 30) = 30)
    (opened,) = engine.check_silence(at(131))
    assert (opened.type, opened.kind, opened.severity.value) == (
        "issue.opened",
        "host_silent",
        "critical",
    )
    assert (opened.resource, opened.metric, opened.detector) == (
        "web1",
        "metrics_age_seconds",
        "silence",
    )
    assert round(opened.value, 1) == 30.8 and opened.threshold == 30
    assert opened.detail == "no metrics for 31 s (limit 30 s; usually one every 5 s)"
    assert opened.fingerprint == issue_fingerprint("web1", "host_silent", "metrics_age_seconds", {})
    # the host's first silence: the same one judged again (after a restart) has the same id
    assert opened.event_id == derived_event_id(opened.fingerprint, 1, "opened")
    assert engine.check_silence(at(200)) == []  # open once

    resumed = engine.process(batch("web1", 240), feed.seq + 1, at(240.5).timestamp())
    assert [(e.type, e.fingerprint) for e in resumed] == [("issue.resolved", opened.fingerprint)]
    assert resumed[0].event_id == derived_event_id(opened.fingerprint, 1, "resolved")
    assert resumed[0].detail == "metrics again after 140 s without"
    assert resumed[0].first_seen == opened.first_seen
    assert engine.check_silence(at(250)) == []
    feed.seq += 1  # the batch above
    for t in range(245, 305, 5):
        feed.send("web1", t)
        engine.check_silence(at(t + 1))
    found = [e for t in range(305, 345, 5) for e in engine.check_silence(at(t))]
    # its second silence is another episode
    assert [e.event_id for e in found] == [derived_event_id(opened.fingerprint, 2, "opened")]


def test_the_limit_follows_each_hosts_usual_interval():
    engine = DetectionEngine(CONFIG)
    feed = Feed(engine)
    feed.every("fast", 1, 0, 300)  # 6 x 1 s is under the 30 s floor
    feed.every("slow", 60, 0, 300)  # 6 x 60 s = 6 minutes
    found = checks(engine, 305, 1000)
    assert found == {335: "fast", 665: "slow"}


def test_silence_is_not_judged_in_the_first_window_after_a_start():
    """After a restart every host was last heard long ago; none is silent until a
    whole window has passed without it."""
    engine = DetectionEngine(CONFIG)
    Feed(engine).every("web1", 5, 0, 100)
    engine.watch(at(1000))
    assert checks(engine, 1000, 1030) == {}
    (opened,) = engine.check_silence(at(1035))
    assert round(opened.value) == 935  # the real age, however


def test_missed_checks_start_a_new_window():
    """A detector that could not look (NATS unreachable, behind, stalled) does not
    blame the hosts for what it did not see."""
    config = DetectorConfig(thresholds=[], anomaly=[], silence=SilenceConfig(check_seconds=5))
    engine = DetectionEngine(config)
    feed = Feed(engine)
    feed.every("web1", 5, 0, 100)
    assert engine.check_silence(at(105)) == []
    assert engine.check_silence(at(200)) == []  # 95 s since the last check: a new window
    feed.send("web1", 210)
    assert checks(engine, 205, 240) == {}
    assert checks(engine, 245, 245) == {245: "web1"}


def test_silence_can_be_turned_down_for_a_lab():
    config = DetectorConfig(
        thresholds=[],
        anomaly=[],
        silence=SilenceConfig(intervals=3, min_seconds=2, check_seconds=1),
    )
    engine = DetectionEngine(config)
    Feed(engine).every("edge", 0.5, 0, 10)
    assert checks(engine, 11, 12.5, step=0.5) == {12.5: "edge"}


def test_silence_survives_a_snapshot_and_restore():
    engine = DetectionEngine(CONFIG)
    feed = Feed(engine)
    feed.every("quiet", 10, 0, 100)
    feed.every("loud", 10, 0, 200)
    (opened,) = engine.check_silence(at(161))
    restored = DetectionEngine(CONFIG)
    for host in engine.hosts:
        import_host(restored, decode(encode(export_host(engine, host))))
    restored.watch(at(170))
    # the open issue is still open: not opened twice, and resolved on return
    assert checks(restored, 170, 400) == {265: "loud"}
    back = restored.process(batch("quiet", 400), 100, at(400.1).timestamp())
    assert [(e.type, e.fingerprint, e.first_seen) for e in back] == [
        ("issue.resolved", opened.fingerprint, opened.first_seen)
    ]
    # and the usual interval came along: 6 x 10 s
    assert restored.silence_limit(restored.hosts["quiet"]) == 60


def test_an_older_snapshot_without_silence_still_restores():
    engine = DetectionEngine(CONFIG)
    Feed(engine).every("old", 5, 0, 100)
    snap = decode(encode(export_host(engine, "old")))
    del snap.meta["silence"]
    restored = DetectionEngine(CONFIG)
    import_host(restored, snap)
    restored.watch(at(500))  # heard from, as far as it knows, when it restored
    assert checks(restored, 500, 530) == {}
    (opened,) = restored.check_silence(at(535))
    assert opened.host == "old" and round(opened.value) == 35


def test_a_silence_not_published_is_judged_again_with_the_same_id():
    engine = DetectionEngine(CONFIG)
    Feed(engine).every("web1", 5, 0, 100)
    (first,) = engine.check_silence(at(131))
    engine.withdraw_silence("web1")  # publishing it failed
    (again,) = engine.check_silence(at(136))
    assert again.event_id == first.event_id
