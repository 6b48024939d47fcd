"""The periodic snapshot never saves a partition's state while a batch is being evaluated:
the batch's issue events may not be published yet, and a snapshot holding what they say
would keep a restart (after their publishing failed) from deriving them again."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from prometheus_client import CollectorRegistry

from medbay.common.events import MetricBatch, MetricSample, utc_now
from medbay.common.lease import Lease
from medbay.common.runtime import ServiceRuntime
from medbay.detector.config import DetectorConfig
from medbay.detector.service import DetectorService, Partition
from medbay.detector.snapshots import HostSnapshot, PartitionStore


class RecordingStore:
    """What a partition's store was asked to save."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.watermarks: list[int] = []

    async def save_host(self, snap: HostSnapshot) -> None:
        self.hosts.append(str(snap.meta["host"]))

    async def save_watermark(self, seq: int) -> None:
        self.watermarks.append(seq)


async def test_the_periodic_snapshot_waits_for_the_batch_being_evaluated() -> None:
    rt = SimpleNamespace(registry=CollectorRegistry(), info={})
    config = DetectorConfig()
    service = DetectorService(cast(ServiceRuntime, rt), config, "replica-a")
    store = RecordingStore()
    engine = service.engine
    work = Partition(
        index=0,
        lease=cast(Lease, SimpleNamespace(held=True)),
        store=cast(PartitionStore, store),
        hosts={"h1"},
        ready=True,
    )
    service.partitions[0] = work
    batch = MetricBatch(
        host="h1", collected_at=utc_now(), samples=[MetricSample(name="load1", value=0.5)]
    )

    async with work.evaluating:  # a batch applied, its events still being published
        engine.process_many([(batch, 1)])
        work.max_seq = 1
        assert engine.dirty == {"h1"}
        flushing = asyncio.create_task(service.flush_all())
        await asyncio.sleep(0.2)
        assert not flushing.done() and store.hosts == [] and store.watermarks == []
    await asyncio.wait_for(flushing, 10)
    assert store.hosts == ["h1"] and store.watermarks == [1] and not engine.dirty
