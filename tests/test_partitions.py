"""METRICS partitions shared by detector replicas, on real NATS: the server places each
host in a partition, every partition is held by one replica, a replica killed with -9
has its partitions taken over (no batch lost, no issue event twice), and a detector of
the unpartitioned layout upgrades."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

from conftest import NatsServer, SecuredCluster, ServiceProcess, StartReplica, StartService
from medbay.common.bus import declare_streams, make_broker, publish_event
from medbay.common.events import MetricBatch, MetricSample, derived_event_id
from medbay.common.kv import entries as kv_entries
from medbay.common.lease import read_holder
from medbay.common.streams import (
    METRICS,
    METRICS_PARTITIONS,
    metrics_partition,
    metrics_subject,
    published_subject,
    stored_pattern,
    subject_mismatch,
)
from medbay.detector.config import DetectorConfig, ThresholdRule
from medbay.detector.engine import DetectionEngine
from medbay.detector.snapshots import BUCKET, WATERMARK, SnapshotStore, encode, export_host
from tests.helpers import headers

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SERVICE_UP = ThresholdRule(
    metric="service_up",
    kind="service_down",
    critical=0.5,
    direction="below",
    for_samples=2,
    resource_label="service",
)
CONFIG = "thresholds:\n  - {metric: service_up, kind: service_down, critical: 0.5, "
CONFIG += "direction: below, for_samples: 2, resource_label: service}\n"
CONFIG += "anomaly: []\nsilence: {enabled: false}\nsnapshot_interval_seconds: 1\n"


def batch(host: str, i: int, up: float) -> MetricBatch:
    """Scrape ``i`` of ``host``: deterministic ids and times, so runs can be compared."""
    return MetricBatch(
        event_id=derived_event_id("partition-test", host, i),
        host=host,
        collected_at=T0 + timedelta(seconds=i),
        samples=[MetricSample(name="service_up", value=up, labels={"service": "api"})],
    )


def schedule(hosts: list[str], scrapes: int) -> list[MetricBatch]:
    """Each host's service goes down (two failed checks: an outage) and comes back on a
    rhythm of its own."""
    return [
        batch(host, i, 0.0 if i % (5 + h % 4) >= 3 + h % 4 else 1.0)
        for i in range(scrapes)
        for h, host in enumerate(hosts)
    ]


def oracle(batches: list[MetricBatch], after: int = 0) -> set[tuple[str, str, str]]:
    """(type, fingerprint, event id) of every issue event one detector finds, for the
    batches after the first ``after``."""
    engine = DetectionEngine(DetectorConfig(thresholds=[SERVICE_UP], anomaly=[]))
    return {
        (e.type, e.fingerprint, e.event_id)
        for seq, b in enumerate(batches, start=1)
        for e in engine.process(b, seq)
        if seq > after
    }


def spread_hosts(count: int) -> list[str]:
    """``count`` hosts, in as many partitions as there are."""
    hosts: list[str] = []
    seen: Counter[int] = Counter()
    n = 0
    while len(hosts) < count:
        host = f"host-{n}"
        n += 1
        if seen[metrics_partition(host, METRICS_PARTITIONS)] < -(-count // METRICS_PARTITIONS):
            seen[metrics_partition(host, METRICS_PARTITIONS)] += 1
            hosts.append(host)
    return hosts


async def issue_events(js: JetStreamContext) -> list[dict[str, Any]]:
    sub = await js.pull_subscribe("medbay.issues.>", stream="ISSUES")
    got: list[dict[str, Any]] = []
    while True:
        try:
            msgs = await sub.fetch(500, timeout=2)
        except TimeoutError:  # nats-py raises its own or the built-in one
            await sub.unsubscribe()
            return got
        for m in msgs:
            await m.ack()
            got.append({**json.loads(m.data), "event_id": headers(m)["Nats-Msg-Id"]})


async def wait_for_issues(js: JetStreamContext, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await js.stream_info("ISSUES")).state.messages >= count:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2.0)  # anything extra would show up now


def assert_same_events(events: list[dict[str, Any]], expected: set[tuple[str, str, str]]) -> None:
    got = [(e["type"], e["fingerprint"], e["event_id"]) for e in events]
    assert len(got) == len(set(got)), "an issue event was published twice"
    assert set(got) == expected
    opened = Counter(e["event_id"] for e in events if e["type"] == "issue.opened")
    assert all(n == 1 for n in opened.values())


# --- the server's partitions ----------------------------------------------------------


async def test_the_server_places_each_host_in_the_partition_the_detector_expects(
    nats_server: NatsServer,
):
    """The stream transform, not the publisher, picks the partition; Medbay's copy of
    the hash (for snapshots and batches from before partitioning) agrees with it."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(config=METRICS.declaration())
    hosts = [f"web-{i}" for i in range(40)] + ["db.example.com", "a", "Z_9"]
    for host in hosts:
        await js.publish(metrics_subject(host), b"{}", timeout=5)
    info = await js.stream_info(METRICS.name, subjects_filter=">")
    stored = set(info.state.subjects or {})
    assert stored == {
        f"medbay.metrics.{metrics_partition(h, METRICS_PARTITIONS)}.{metrics_subject(h)[15:]}"
        for h in hosts
    }
    assert len({s.split(".")[2] for s in stored}) == METRICS_PARTITIONS  # all are used
    # readers see them under the subject they were published on
    assert {published_subject(s) for s in stored} == {metrics_subject(h) for h in hosts}
    got = await js.pull_subscribe(stored_pattern(metrics_subject("web-7")), stream="METRICS")
    (msg,) = await got.fetch(1, timeout=5)
    assert published_subject(msg.subject) == "medbay.metrics.web-7"
    # and a consumer takes a batch stored under its partition as the host's own
    body = batch("web-7", 0, 1.0)
    assert subject_mismatch(body, msg.subject) is None
    assert subject_mismatch(body, msg.subject.replace("web-7", "web-8")) is not None
    await nc.close()


# --- replicas on a cluster --------------------------------------------------------------


async def partition_holders(kv: KeyValue) -> dict[int, str | None]:
    """Each partition's holder (its replica id), None where nobody holds it."""
    holders: dict[int, str | None] = {}
    for p in range(METRICS_PARTITIONS):
        record = await read_holder(kv, f"partition.{p}")
        holders[p] = record.detail.get("replica") if record is not None else None
    return holders


async def wait_held(
    kv: KeyValue, replicas: set[str], timeout: float = 90.0
) -> dict[int, str | None]:
    """Until every partition is held, by these replicas only, as evenly as can be."""
    deadline = time.monotonic() + timeout
    holders: dict[int, str | None] = {}
    while time.monotonic() < deadline:
        holders = await partition_holders(kv)
        loads = Counter(holders.values())
        if set(loads) == replicas and max(loads.values()) - min(loads.values()) <= 1:
            return holders
        await asyncio.sleep(0.5)
    raise AssertionError(f"partitions not settled on {sorted(replicas)}: {holders}")


def healthz(proc: ServiceProcess) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/healthz", timeout=5) as answer:
        body: dict[str, Any] = json.loads(answer.read())
        return body


@pytest.mark.timeout(420)
async def test_replicas_share_the_partitions_and_take_over_a_killed_ones(
    nats_cluster: SecuredCluster, cluster_services: StartReplica, tmp_path: Path
):
    config = tmp_path / "detector.yaml"
    config.write_text(CONFIG)
    collector = make_broker(
        "collector",
        nats_cluster.url,
        registry=CollectorRegistry(),
        options={k: v for k, v in nats_cluster.client("collector").items() if k != "servers"},
    )
    await collector.connect()
    await declare_streams(collector, [METRICS], replicas=3)
    detectors = {
        name: cluster_services(
            "detector", "--config", str(config), replica=name, MEDBAY_REPLICA_ID=name
        )
        for name in ("a", "b", "c")
    }
    nc = await nats.connect(**nats_cluster.client("detector"))
    kv = await nc.jetstream().key_value(BUCKET)
    holders = await wait_held(kv, {"a", "b", "c"})
    for name, proc in detectors.items():  # each says what it holds
        mine = {p for p, h in holders.items() if h == name}
        deadline = time.monotonic() + 30
        while set(healthz(proc)["info"].get("partitions", [])) != mine:
            assert time.monotonic() < deadline, (name, healthz(proc), mine)
            await asyncio.sleep(0.5)

    hosts = spread_hosts(32)
    batches = schedule(hosts, 60)
    expected = oracle(batches)
    third = len(batches) // 3
    for b in batches[:third]:
        await publish_event(collector, b, stream=METRICS, timeout=10)

    victim = max(detectors, key=lambda n: sum(h == n for h in holders.values()))
    victim_hosts = [h for h in hosts if holders[metrics_partition(h, METRICS_PARTITIONS)] == victim]
    assert victim_hosts

    async def publish_middle() -> None:
        for b in batches[third : 2 * third]:
            await publish_event(collector, b, stream=METRICS, timeout=10)

    during = asyncio.create_task(publish_middle())
    await asyncio.sleep(0.3)
    detectors[victim].stop(9)  # kill -9 while metrics flow
    await during
    survivors = set(detectors) - {victim}
    await wait_held(kv, survivors)  # its partitions are taken over
    for b in batches[2 * third :]:
        await publish_event(collector, b, stream=METRICS, timeout=10)

    cli = await nats.connect(**nats_cluster.client("cli"))
    await wait_for_issues(cli.jetstream(), len(expected), 120)
    events = await issue_events(cli.jetstream())
    assert_same_events(events, expected)
    # the dead replica's hosts had their issues too, opened by the others
    assert {e["host"] for e in events if e["type"] == "issue.opened"} >= set(victim_hosts)
    await cli.close()

    # a replica joining takes its share back, and the rest hand it over
    detectors[victim].start()
    await wait_held(kv, set(detectors))
    await nc.close()
    await collector.stop()
    for name in survivors:
        running = detectors[name].proc
        assert running is not None and running.poll() is None


# --- upgrading from the single detector -------------------------------------------------------


async def test_the_single_detectors_state_is_taken_over_partition_by_partition(
    nats_server: NatsServer, services: StartService, tmp_path: Path
):
    """What an earlier release left (``host.<host>`` snapshots, one ``watermark``, the
    durable ``detector``, batches stored unpartitioned) is restored into the partitions:
    the replay goes on from that watermark across both layouts, and the old keys go."""
    hosts = spread_hosts(12)
    batches = schedule(hosts, 30)
    mark = len(batches) // 3  # the old detector's watermark
    switch = 2 * len(batches) // 3  # the collectors start partitioning here
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    unpartitioned = METRICS.declaration()
    unpartitioned.subject_transform = None
    await js.add_stream(config=unpartitioned)
    await js.add_consumer(METRICS.name, durable_name="detector", filter_subject="medbay.metrics.>")
    for b in batches[:switch]:
        await js.publish(metrics_subject(b.host), b.model_dump_json().encode(), timeout=5)
    old = DetectionEngine(DetectorConfig(thresholds=[SERVICE_UP], anomaly=[]))
    for seq, b in enumerate(batches[:mark], start=1):
        old.process(b, seq)
    kv = await js.create_key_value(config=KeyValueConfig(bucket=BUCKET, history=1))
    for host in old.hosts:
        await kv.put(f"host.{host}", encode(export_host(old, host)))
    await kv.put(WATERMARK, str(mark).encode())
    await js.update_stream(config=METRICS.declaration())  # a collector of this release
    for b in batches[switch:]:
        await js.publish(metrics_subject(b.host), b.model_dump_json().encode(), timeout=5)

    config = tmp_path / "detector.yaml"
    config.write_text(CONFIG)
    detector = services("detector", "--config", str(config))
    expected = oracle(batches, after=mark)
    await wait_for_issues(js, len(expected), 120)
    assert_same_events(await issue_events(js), expected)
    # the old keys are gone once every partition has its own
    marks = {f"watermark.{p}" for p in range(METRICS_PARTITIONS)}
    deadline = time.monotonic() + 30
    store = SnapshotStore(kv)  # lists from the bucket's stream: kv.keys() may miss some

    async def left() -> set[str]:
        live = {entry.key for entry in await kv_entries(store.kv, ">")}
        return {k for k in live if k.startswith(("host.", "watermark"))}

    while (kept := await left()) != marks:
        assert time.monotonic() < deadline, kept
        await asyncio.sleep(0.5)
    assert "detector" not in [c.name for c in await js.consumers_info(METRICS.name)]
    assert detector.proc is not None and detector.proc.poll() is None
    await nc.close()
