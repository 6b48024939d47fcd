"""The detector process under bad input and a hard crash, on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from medbay.common.bus import (
    DL_KEEP_BYTES,
    DL_REASON,
    DL_TRUNCATED,
    declare_streams,
    make_broker,
    publish_event,
)
from medbay.common.events import MetricBatch, MetricSample, derived_event_id
from medbay.common.streams import METRICS
from medbay.detector.config import DetectorConfig
from medbay.detector.engine import DetectionEngine
from tests.helpers import headers

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batch(host: str, i: int, up: float) -> MetricBatch:
    """Scrape ``i`` of ``host``: deterministic ids and times, so runs can be compared."""
    return MetricBatch(
        event_id=derived_event_id("test-batch", host, i),
        host=host,
        collected_at=T0 + timedelta(seconds=i),
        samples=[MetricSample(name="service_up", value=up, labels={"service": "api"})],
    )


def schedule(hosts: int, scrapes: int) -> list[MetricBatch]:
    """Each host's service goes down (two failed checks: an outage) and comes back on
    its own rhythm."""
    out = []
    for i in range(scrapes):
        for h in range(hosts):
            period = 5 + h
            out.append(batch(f"host-{h}", i, 0.0 if i % period >= period - 2 else 1.0))
    return out


async def read_all(js: JetStreamContext, subject: str, stream: str) -> list[Msg]:
    sub = await js.pull_subscribe(subject, stream=stream)
    got: list[Msg] = []
    while True:
        try:
            msgs = await sub.fetch(500, timeout=1)
        except TimeoutError:  # nats-py raises its own or the built-in one
            return got
        for m in msgs:
            await m.ack()
        got += msgs


async def test_bad_input_is_dead_lettered_and_the_detector_goes_on(nats_server, services):
    broker = make_broker("collector", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [METRICS])
    detector = services("detector", MEDBAY_MAX_EVENT_BYTES="20000")
    js = broker.config.connection_state.stream
    good = batch("h1", 0, 1.0).model_dump(mode="json")
    columns = good["samples"]
    bad = {
        "malformed": b'{"type": "metric.batch", "host": ',
        "version": json.dumps(good | {"schema_version": 3}).encode(),
        "oversized": json.dumps(
            good | {"samples": {k: v * 1000 for k, v in columns.items()}}
        ).encode(),
        "nan": json.dumps(good).replace("1.0", "NaN").encode(),
        "missing": json.dumps({k: v for k, v in good.items() if k != "host"}).encode(),
        "unequal": json.dumps(good | {"samples": columns | {"values": [1.0, 0.0]}}).encode(),
        "label_index": json.dumps(good | {"samples": columns | {"label_index": [4]}}).encode(),
    }
    for payload in bad.values():
        await js.publish("medbay.metrics.h1", payload, timeout=5)
    # the detector still works: a real outage after the bad messages opens an issue
    await publish_event(broker, batch("h1", 1, 0.0), stream=METRICS)
    await publish_event(broker, batch("h1", 2, 0.0), stream=METRICS)

    nc = await nats.connect(nats_server.url)
    issues = await nc.jetstream().pull_subscribe("medbay.issues.>", stream="ISSUES")
    opened = await issues.fetch(1, timeout=15)
    assert json.loads(opened[0].data)["type"] == "issue.opened"
    letters = await read_all(nc.jetstream(), "medbay.deadletter.>", "DEADLETTER")
    reasons = [headers(m)[DL_REASON] for m in letters]
    assert len(letters) == len(bad), reasons
    assert "Invalid JSON" in reasons[0]
    assert "schema_version" in reasons[1]
    assert "exceeds 20000 bytes" in reasons[2]
    assert "samples.columns.values.0: Input should be a finite number" in reasons[3]
    assert "host: Field required" in reasons[4]
    assert "the columns differ in length: names 1, values 2" in reasons[5]
    assert "label_index[0] is 4, but label_sets has 1 entries" in reasons[6]
    for letter, original in zip(letters, bad.values(), strict=True):
        if DL_TRUNCATED in headers(letter):  # a large one keeps its first 64 KiB
            assert int(headers(letter)[DL_TRUNCATED]) == len(original)
            assert letter.data == original[:DL_KEEP_BYTES]
        else:
            assert letter.data == original  # unchanged
    await nc.close()
    await broker.stop()

    # the reasons are readable from the CLI
    out = subprocess.run(
        [sys.executable, "-m", "medbay.cli.main", "events", "tail", "DEADLETTER", "--no-follow"],
        env={**detector.env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(bad)
    assert "rejected METRICS#" in lines[2] and "exceeds 20000 bytes" in lines[2]
    assert detector.proc.poll() is None  # still running


def version_1(host: str, i: int, up: float) -> bytes:
    """Scrape ``i`` of ``host`` as a collector of the previous release wrote it."""
    at = (T0 + timedelta(seconds=i)).isoformat()
    sample = {"name": "service_up", "value": up, "unit": "", "labels": {"service": "api"}}
    return json.dumps(
        {
            "event_id": derived_event_id("version-1", host, i),
            "schema_version": 1,
            "timestamp": at,
            "type": "metric.batch",
            "host": host,
            "collected_at": at,
            "samples": [sample],
            "check_errors": {},
        }
    ).encode()


async def test_version_1_batches_are_still_understood_during_an_upgrade(nats_server, services):
    """An outage reported by a collector of the previous release opens the issue; the
    upgraded collector's batches (version 2) resolve it."""
    broker = make_broker("collector", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [METRICS])
    services("detector")
    js = broker.config.connection_state.stream
    for i in range(2):
        await js.publish("medbay.metrics.h1", version_1("h1", i, 0.0), timeout=5)
    for i in range(2, 5):
        await publish_event(broker, batch("h1", i, 1.0), stream=METRICS)

    nc = await nats.connect(nats_server.url)
    events: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(events) < 2 and asyncio.get_running_loop().time() < deadline:
        events = [
            json.loads(m.data) for m in await read_all(nc.jetstream(), "medbay.issues.>", "ISSUES")
        ]
        await asyncio.sleep(0.2)
    assert [(e["type"], e["kind"], e["resource"]) for e in events] == [
        ("issue.opened", "service_down", "api"),
        ("issue.resolved", "service_down", "api"),
    ]
    assert events[0]["last_seen"] == (T0 + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert (await nc.jetstream().stream_info("DEADLETTER")).state.messages == 0
    await nc.close()
    await broker.stop()


def test_bad_config_is_refused_naming_the_field(tmp_path: Path):
    config = tmp_path / "detector.yaml"
    config.write_text("thresholds:\n  - {metric: cpu_percent, kind: cpu, warning: 'high'}\n")
    out = subprocess.run(
        [sys.executable, "-m", "medbay.detector.main", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "thresholds[0].warning" in out.stderr and "valid number" in out.stderr


async def test_kill_9_loses_no_issue_and_opens_none_twice(nats_server, services):
    batches = schedule(hosts=6, scrapes=120)
    oracle = DetectionEngine(DetectorConfig())
    expected = {
        (e.type, e.fingerprint, e.last_seen)
        for seq, b in enumerate(batches, start=1)
        for e in oracle.process(b, seq)
    }
    assert len({e[1] for e in expected}) == 6  # every host's service goes down

    broker = make_broker("collector", nats_server.url, registry=CollectorRegistry())
    await broker.connect()
    await declare_streams(broker, [METRICS])
    detector = services("detector")
    third = len(batches) // 3
    for b in batches[:third]:
        await publish_event(broker, b, stream=METRICS)

    async def publish_middle() -> None:
        for b in batches[third : 2 * third]:
            await publish_event(broker, b, stream=METRICS)

    crash_during = asyncio.create_task(publish_middle())
    await asyncio.sleep(0.05)
    detector.proc.send_signal(signal.SIGKILL)  # while metrics flow
    detector.proc.wait(5)
    await crash_during
    detector.start()  # same process settings, fresh process
    for b in batches[2 * third :]:
        await publish_event(broker, b, stream=METRICS)

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        info = await js.stream_info("ISSUES")
        if info.state.messages >= len(expected):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # anything extra would show up now
    events = [json.loads(m.data) for m in await read_all(js, "medbay.issues.>", "ISSUES")]
    got = [(e["type"], e["fingerprint"], datetime.fromisoformat(e["last_seen"])) for e in events]
    assert len(got) == len(set(got)), "an issue event was published twice"
    assert set(got) == expected
    opened = [g for g in got if g[0] == "issue.opened"]
    assert len(opened) == len({(g[1], g[2]) for g in opened})
    await nc.close()
    await broker.stop()
