"""Leases in KV on a real nats-server: one holder, freed by the server when it dies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from conftest import NatsServer
from medbay.common.lease import Lease, read_holder

TTL = 2.0


@pytest.fixture
async def bucket(nats_server: NatsServer) -> AsyncIterator[tuple[Client, KeyValue]]:
    nc = await nats.connect(nats_server.url)
    kv = await nc.jetstream().create_key_value(config=KeyValueConfig(bucket="leases", history=5))
    yield nc, kv
    await nc.close()


def lease(nc: Client, kv: KeyValue, holder: str, key: str = "active") -> Lease:
    return Lease(nc.jetstream(), kv, key, holder, TTL)


async def test_one_holder_at_a_time(bucket: tuple[Client, KeyValue]) -> None:
    nc, kv = bucket
    a, b = lease(nc, kv, "a"), lease(nc, kv, "b")
    assert await a.try_acquire() and a.held
    assert not await b.try_acquire() and not b.held
    assert await a.renew() and a.revision > a.acquired_revision
    holder = await read_holder(kv, "active")
    assert holder is not None and holder.holder == "a"
    await a.release()
    assert not a.held
    assert await b.try_acquire()
    assert b.acquired_revision > a.acquired_revision  # a fencing token: each tenure its own


async def test_a_dead_holder_frees_it_when_its_time_is_up(
    bucket: tuple[Client, KeyValue],
) -> None:
    """The holder stops renewing (as if killed): the server drops the record after its TTL,
    and only then may another take it."""
    nc, kv = bucket
    a, b = lease(nc, kv, "a"), lease(nc, kv, "b")
    assert await a.try_acquire()
    taken_at = time.monotonic()
    assert not await b.try_acquire()
    while not await b.try_acquire():
        assert time.monotonic() - taken_at < 30, "never freed"
        await asyncio.sleep(0.2)
    assert time.monotonic() - taken_at >= TTL - 0.5
    assert not await a.renew() and not a.held  # a's late renewal fails: b holds it


async def test_a_renewal_written_though_its_answer_was_lost_keeps_the_lease(
    bucket: tuple[Client, KeyValue],
) -> None:
    """A busy server may write a renewal and answer too late: the holder's next renewal
    then names an old revision, and must find the record still its own, not lose it."""
    nc, kv = bucket
    a, b = lease(nc, kv, "a"), lease(nc, kv, "b")
    assert await a.try_acquire()
    await a._write(a.revision)  # written, and the answer never read
    assert await a.renew() and a.held
    holder = await read_holder(kv, "active")
    assert holder is not None and holder.holder == "a"
    assert not await b.try_acquire()


async def test_a_holder_restarting_with_the_same_name_adopts_its_lease(
    bucket: tuple[Client, KeyValue],
) -> None:
    nc, kv = bucket
    assert await lease(nc, kv, "a").try_acquire()
    again = lease(nc, kv, "a")
    assert await again.try_acquire() and again.held


async def test_a_released_lease_leaves_no_key_behind(bucket: tuple[Client, KeyValue]) -> None:
    """Leases held once (a replica's membership, a step's claim) must not pile up: the
    marker a release leaves expires too."""
    nc, kv = bucket
    a = lease(nc, kv, "a", key="member.a")
    assert await a.try_acquire()
    await a.release()
    b = lease(nc, kv, "b", key="member.a")
    assert await b.try_acquire()  # at once, not when a's record would have expired
    await b.release()
    stream = f"KV_{kv._name}"
    deadline = time.monotonic() + 30
    while (await nc.jetstream().stream_info(stream)).state.messages:
        assert time.monotonic() < deadline, "the release marker stayed"
        await asyncio.sleep(0.2)


def test_a_lease_shorter_than_two_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        Lease(None, None, "k", "a", 1.0)  # type: ignore[arg-type]
