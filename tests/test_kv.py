"""Listing a KV bucket completely, on a real secured nats-server: the executor writes its
plan book, the approver (a reader, as in ``medbay.approver.status``) lists it."""

from __future__ import annotations

import asyncio

import nats
from nats.js.api import KeyValueConfig

from conftest import NatsServer
from medbay.common.kv import declare_key_value, entries, keys
from medbay.common.records import PLAN_BOOK, PlanRecord, plan_key, read_plans

PLANS = 300


async def test_a_listing_holds_every_record_written_and_no_deleted_one(
    secured_nats: NatsServer,
) -> None:
    owner = await nats.connect(secured_nats.url, **secured_nats.client("executor"))
    reader = await nats.connect(secured_nats.url, **secured_nats.client("approver"))
    try:
        book = await declare_key_value(owner.jetstream(), KeyValueConfig(bucket=PLAN_BOOK.name))
        records = {f"plan-{i}": PlanRecord(state="running") for i in range(PLANS)}
        await asyncio.gather(
            *(book.put(plan_key(p), r.model_dump_json().encode()) for p, r in records.items())
        )
        await book.delete(plan_key("plan-0"))
        await book.put(plan_key("plan-1"), b"{not json")
        await book.put("elsewhere.key", b"{}")

        kv = await reader.jetstream().key_value(PLAN_BOOK.name)
        listed = await keys(kv, "plans.>")
        assert listed == sorted(plan_key(p) for p in records)  # the deleted key: a marker
        live = {e.key for e in await entries(kv, "plans.>")}
        assert live == {plan_key(p) for p in records} - {plan_key("plan-0")}
        read = await read_plans(kv)
        assert set(read) == set(records) - {"plan-0", "plan-1"}  # keys without "plans."
        assert all(r.state == "running" for r in read.values())
    finally:
        await reader.close()
        await owner.close()
    assert secured_nats.violations() == []
