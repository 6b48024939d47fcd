"""The sets the partitions' consumers fetch at the same time are evaluated in one pass
of the replica's engine, and each consumer hears how its own set went."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from medbay.common.bus import Delivery
from medbay.common.events import MetricBatch, MetricSample, utc_now
from medbay.common.lease import Lease
from medbay.common.runtime import ServiceRuntime
from medbay.detector.config import DetectorConfig
from medbay.detector.service import DetectorService, Partition
from medbay.detector.snapshots import LostPartition, PartitionStore


def deliveries(
    host: str, first_seq: int, count: int, pending: int = 0
) -> list[Delivery[MetricBatch]]:
    """``count`` batches of ``host``; the last says ``pending`` more wait in its durable."""
    out = []
    for seq in range(first_seq, first_seq + count):
        batch = MetricBatch(
            host=host, collected_at=utc_now(), samples=[MetricSample(name="load1", value=0.5)]
        )
        metadata = SimpleNamespace(num_pending=pending)
        msg = SimpleNamespace(metadata=metadata, headers=None)
        out.append(Delivery(batch, cast(Any, msg), seq, utc_now().timestamp()))
    return out


def service_with(partitions: int) -> DetectorService:
    rt = SimpleNamespace(registry=CollectorRegistry(), info={})
    service = DetectorService(cast(ServiceRuntime, rt), DetectorConfig(), "replica-a")
    for index in range(partitions):
        service.partitions[index] = Partition(
            index=index,
            lease=cast(Lease, SimpleNamespace(held=True)),
            store=cast(PartitionStore, SimpleNamespace()),
            ready=True,
        )
    return service


async def test_sets_fetched_together_are_evaluated_in_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = service_with(3)
    calls: list[int] = []
    process_many = service.engine.process_many

    def counted(batches: Any, received: Any = None) -> Any:
        calls.append(len(batches))
        return process_many(batches, received)

    monkeypatch.setattr(service.engine, "process_many", counted)
    sets = [deliveries(f"host-{p}", 1 + 10 * p, 4) for p in range(3)]
    await asyncio.gather(*(service.handle(service.partitions[p], sets[p]) for p in range(3)))
    assert calls == [12]
    assert {p: w.hosts for p, w in service.partitions.items()} == {
        0: {"host-0"},
        1: {"host-1"},
        2: {"host-2"},
    }
    assert [w.max_seq for w in service.partitions.values()] == [4, 14, 24]
    assert set(service.engine.dirty) == {"host-0", "host-1", "host-2"}


async def test_a_set_waits_for_the_next_set_of_a_partition_that_is_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = service_with(2)
    calls: list[list[str]] = []
    process_many = service.engine.process_many

    def recorded(batches: Any, received: Any = None) -> Any:
        calls.append([b.host for b, _ in batches])
        return process_many(batches, received)

    monkeypatch.setattr(service.engine, "process_many", recorded)
    behind, other = service.partitions[0], service.partitions[1]
    await service.handle(behind, deliveries("host-0", 1, 2, pending=40))

    async def next_set_later() -> None:
        await asyncio.sleep(0.1)  # fetching its next set
        await service.handle(behind, deliveries("host-0", 3, 1))

    await asyncio.gather(service.handle(other, deliveries("host-1", 10, 1)), next_set_later())
    assert calls == [["host-0", "host-0"], ["host-1", "host-0"]]
    assert not service.behind  # its last set said nothing more waits

    await service.handle(other, deliveries("host-1", 11, 1))  # nobody behind: at once
    assert calls[-1] == ["host-1"]


async def test_a_set_of_a_partition_lost_while_it_waited_is_handed_back_alone() -> None:
    service = service_with(2)
    lost = service.partitions[1]

    async def lose() -> None:  # after both sets were handed in, before the pass
        lost.lost = True

    results = await asyncio.gather(
        service.handle(service.partitions[0], deliveries("host-0", 1, 2)),
        service.handle(lost, deliveries("host-1", 3, 2)),
        lose(),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], LostPartition)
    assert set(service.engine.hosts) == {"host-0"}  # nothing of the lost one was applied
