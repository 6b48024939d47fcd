"""Who runs a plan: its lease (``plan_run``), the lease settings, and the plan book's
side of a takeover (an ``interrupted`` end giving way to the real one, following the
book), on a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import nats
import pytest
from nats.aio.client import Client
from pydantic import ValidationError

from medbay.common.events import Plan
from medbay.common.lease import Lease
from medbay.common.records import PlanRecord
from medbay.executor.config import ExecutorConfig, LeaseConfig
from medbay.executor.plan_book import PlanBook
from medbay.executor.plan_run import PlanRun
from medbay.executor.rails import SafetyRails
from medbay.executor.safety_config import SafetyConfig
from tests import factories

if TYPE_CHECKING:
    from conftest import NatsServer

TTL = 2.0
RENEW = 0.5


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def rails(nc: Client) -> SafetyRails:
    return await SafetyRails.open(nc.jetstream(), SafetyConfig())


def run_of(rails: SafetyRails, executor_id: str, plan_id: str = "p1") -> PlanRun:
    return PlanRun(rails.run_lease(plan_id, executor_id, TTL), RENEW)


# --- settings ---------------------------------------------------------------------


def test_lease_settings_default_and_limits() -> None:
    lease = ExecutorConfig().lease
    assert (lease.ttl_seconds, lease.renew_seconds, lease.takeover_poll_seconds) == (8, 2, 0.5)
    assert LeaseConfig(ttl_seconds=30, renew_seconds=15).renew_seconds == 15
    with pytest.raises(ValidationError, match=r"at most half of lease\.ttl_seconds"):
        LeaseConfig(ttl_seconds=10, renew_seconds=6)
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        LeaseConfig(ttl_seconds=1, renew_seconds=0.5)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ExecutorConfig.model_validate({"lease": {"ttl": 10}})


# --- the lease of a plan's run ------------------------------------------------------


async def test_a_runner_keeps_its_plan_past_the_ttl_and_lets_go_at_the_end(
    rails: SafetyRails,
) -> None:
    a, b = run_of(rails, "exec-a"), run_of(rails, "exec-b")
    assert await a.start()
    assert not await b.start()
    held_since = time.monotonic()
    while time.monotonic() - held_since < 3 * TTL:  # renewed in the background
        holder = await rails.run_holder("p1")
        assert holder is not None and holder.holder == "exec-a"
        assert not await b.lease.try_acquire()
        await asyncio.sleep(0.2)
    assert await a.regain()  # ours all along
    await a.end()
    assert await rails.run_holder("p1") is None
    assert await b.start()  # at once, without waiting for a TTL
    await b.end()


async def test_a_runner_whose_lease_lapsed_waits_and_takes_it_back(
    rails: SafetyRails,
) -> None:
    """exec-a's lease lapses (as if NATS were away longer than the TTL) and exec-b takes
    the plan over; exec-a's next move waits until exec-b lets go, then says its tenure
    broke off."""
    a = run_of(rails, "exec-a")
    assert await a.start()
    await rails.kv.delete("runs.p1")  # the lapse, as the server would drop it
    b = run_of(rails, "exec-b")
    assert await b.start()
    regained = asyncio.create_task(a.regain())
    await asyncio.sleep(3 * RENEW)
    assert not regained.done()  # b holds it: a waits
    holder = await rails.run_holder("p1")
    assert holder is not None and holder.holder == "exec-b"
    await b.end()
    assert await asyncio.wait_for(regained, 30) is False  # taken back, not held throughout
    holder = await rails.run_holder("p1")
    assert holder is not None and holder.holder == "exec-a"
    assert await a.regain()
    await a.end()


async def test_leases_are_per_plan(rails: SafetyRails) -> None:
    a, b = run_of(rails, "exec-a", "p1"), run_of(rails, "exec-b", "p2")
    assert await a.start() and await b.start()
    holders = [await rails.run_holder(p) for p in ("p1", "p2")]
    assert [h.holder if h else None for h in holders] == ["exec-a", "exec-b"]
    assert isinstance(a.lease, Lease) and a.lease.key != b.lease.key
    await a.end()
    await b.end()


# --- the plan book ------------------------------------------------------------------


async def test_an_interrupted_end_gives_way_to_the_real_one(nc: Client) -> None:
    book = await PlanBook.open(nc.jetstream())
    plan = factories.plan()
    assert (await book.on_plan(plan, {}, [])).action == "run"
    await book.finish(plan.plan_id, "interrupted", "step 1 was interrupted")
    record, _ = await book.get(plan.plan_id)
    assert record is not None and (record.state, record.outcome) == ("done", "interrupted")
    await book.finish(plan.plan_id, "interrupted", "again")  # a repeat changes nothing
    record, _ = await book.get(plan.plan_id)
    assert record is not None and record.note == "step 1 was interrupted"
    await book.finish(plan.plan_id, "not_fixed", "1 step(s) done, no fix verified")
    record, _ = await book.get(plan.plan_id)
    assert record is not None and (record.state, record.outcome) == ("done", "not_fixed")
    await book.finish(plan.plan_id, "failed", "later")  # a real end stays
    await book.finish(plan.plan_id, "interrupted", "later")
    record, _ = await book.get(plan.plan_id)
    assert record is not None and record.outcome == "not_fixed"


async def test_following_the_book_gives_every_record_then_each_change(nc: Client) -> None:
    book = await PlanBook.open(nc.jetstream())
    running, waiting = factories.plan(), factories.plan(requires_approval=True)
    await book.on_plan(running, {}, [])
    seen: dict[str, PlanRecord | None] = {}
    changes = asyncio.Queue[str]()

    async def follow() -> None:
        async for key, record in book.follow():
            seen[key] = record
            await changes.put(key)

    following = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(changes.get(), 30)
        [record] = seen.values()
        assert record is not None and record.state == "running"
        await book.on_plan(waiting, {}, ["it asks for approval"])
        await asyncio.wait_for(changes.get(), 30)
        await book.finish(running.plan_id, "verified", "fixed")
        await asyncio.wait_for(changes.get(), 30)
        states = {plan_id(r): r.state for r in seen.values() if r is not None}
        assert states == {running.plan_id: "done", waiting.plan_id: "pending"}
        await book.kv.put(f"plans.{waiting.plan_id}", b"not json")  # unreadable: None
        await asyncio.wait_for(changes.get(), 30)
        assert seen[f"plans.{waiting.plan_id}"] is None
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


def plan_id(record: PlanRecord) -> str:
    plan = record.parsed_plan()
    assert isinstance(plan, Plan)
    return plan.plan_id
