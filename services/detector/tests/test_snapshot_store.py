"""The partitions' snapshots and watermarks in KV, on a real nats-server: what a new
holder restores, writes that only the holder can make, and moving the state to
another partition count."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest

from conftest import NatsServer
from medbay.common.events import MetricBatch, MetricSample, derived_event_id
from medbay.common.kv import entries as kv_entries
from medbay.common.streams import metrics_partition
from medbay.detector.config import DetectorConfig
from medbay.detector.engine import DetectionEngine
from medbay.detector.snapshots import LostPartition, SnapshotStore, export_host

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(nats_server: NatsServer) -> AsyncIterator[SnapshotStore]:
    nc = await nats.connect(nats_server.url)
    yield await SnapshotStore.open(nc.jetstream())
    await nc.close()


def engine_with(hosts: list[str]) -> DetectionEngine:
    engine = DetectionEngine(DetectorConfig(anomaly=[]))
    for seq, host in enumerate(hosts, start=1):
        batch = MetricBatch(
            event_id=derived_event_id("store", host),
            host=host,
            collected_at=T0 + timedelta(seconds=seq),
            samples=[MetricSample(name="cpu_percent", value=10.0)],
        )
        engine.process(batch, seq)
    return engine


async def test_a_new_holder_restores_what_the_last_one_saved(store: SnapshotStore):
    hosts = [f"web-{i}" for i in range(20)]
    mine = [h for h in hosts if metrics_partition(h, 4) == 1]
    engine = engine_with(mine)
    first = store.partition(1, 4)
    assert (await first.restore()).watermark is None  # nothing yet
    for host in mine:
        await first.save_host(export_host(engine, host))
    await first.save_watermark(42)

    second = store.partition(1, 4)
    restored = await second.restore()
    assert restored.watermark == 42 and not restored.migrating
    assert sorted(str(s.meta["host"]) for s in restored.snaps) == sorted(mine)
    # it continues where the last holder was
    await second.save_host(restored.snaps[0])
    await second.save_watermark(50)
    # the last holder, paused and unaware, can no longer overwrite what it wrote
    with pytest.raises(LostPartition):
        await first.save_watermark(43)
    with pytest.raises(LostPartition):
        await first.save_host(export_host(engine, str(restored.snaps[0].meta["host"])))


async def test_state_moves_to_another_partition_count(store: SnapshotStore):
    hosts = [f"db-{i}" for i in range(24)]
    engine = engine_with(hosts)
    for p in range(4):  # saved under 4 partitions
        part = store.partition(p, 4)
        await part.restore()
        for host in (h for h in hosts if metrics_partition(h, 4) == p):
            await part.save_host(export_host(engine, host))
        await part.save_watermark(100 + p)

    moved: list[str] = []
    for p in range(8):  # restored under 8
        part = store.partition(p, 8)
        restored = await part.restore()
        assert restored.migrating and restored.watermark == 100  # the oldest of them
        names = [str(s.meta["host"]) for s in restored.snaps]
        assert all(metrics_partition(h, 8) == p for h in names)
        moved += names
        for snap in restored.snaps:
            await part.save_host(snap)
        await part.save_watermark(200)
        await part.retire()
        if p == 0:  # its holder dies, the next one goes on: the others still migrate
            successor = store.partition(0, 8)
            assert not (await successor.restore()).migrating
            await successor.save_watermark(201)
    assert sorted(moved) == sorted(hosts)
    keys = {entry.key for entry in await kv_entries(store.kv, ">")}  # the live keys
    assert keys == {f"watermark.{p}" for p in range(8)} | {
        f"snapshot.{metrics_partition(h, 8)}.{h}" for h in hosts
    }
    again = await store.partition(3, 8).restore()
    assert not again.migrating and again.watermark == 200
