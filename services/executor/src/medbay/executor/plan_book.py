"""Where each plan stands (awaiting approval, running, done), kept in JetStream KV.

Every executor replica reads and changes the same records with compare-and-swap
(``medbay.common.kv.change``), so a plan is decided once and started once however
many replicas see it. Every replica follows the book (``follow``) to take over the
``running`` plans nobody runs any more (``medbay.executor.plan_run``).

A record is created by whichever comes first, the plan or its approval (an
approval may overtake its plan), and completed by the other. Every plan that
ends gets its ``outcome`` (``medbay.common.events.PlanOutcome``): ``rejected`` or
``expired`` when it is decided against (by a person, or by the approval's expiry
timer), ``expired`` too when it arrives too old to run, else how its run ended.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from medbay.common.events import Approval, Plan, PlanOutcome
from medbay.common.kv import change, open_key_value
from medbay.common.records import PLAN_BOOK, PlanRecord, plan_key, read_plan

BUCKET = PLAN_BOOK.name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transition:
    """What the caller should do next."""

    action: Literal["run", "wait", "rejected", "nothing"]
    record: PlanRecord
    why: str


class PlanBook:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> PlanBook:
        kv = await open_key_value(
            js, PLAN_BOOK, history=5, replicas=replicas, ttl_seconds=90 * 24 * 3600
        )
        return cls(kv)

    async def get(self, plan_id: str) -> tuple[PlanRecord | None, int]:
        """The record and its revision. An unreadable record reads as (None, its revision):
        it is replaced by the next write rather than blocking the plan for ever."""
        return await read_plan(self.kv, plan_id)

    async def _change(
        self, plan_id: str, transition: Callable[[PlanRecord | None], PlanRecord | None]
    ) -> tuple[PlanRecord | None, PlanRecord | None]:
        """Compare-and-swap the plan's record (``medbay.common.kv.change``); an unreadable
        record is handed to ``transition`` as None, so it is replaced."""
        old, new, _ = await change(
            self.kv, plan_key(plan_id), PlanRecord, transition, unreadable_as_none=True
        )
        return old, new

    async def on_plan(
        self, plan: Plan, traceparent: dict[str, str], approval_reasons: Sequence[str]
    ) -> Transition:
        """Record a plan; it runs at once only if ``approval_reasons`` is empty (the
        executor's own judgement, not the plan's say) or an approval came first."""
        reasons = list(approval_reasons)

        def record_plan(record: PlanRecord | None) -> PlanRecord | None:
            if record is not None and record.plan is not None:
                return None  # seen before
            if record is None:
                return PlanRecord(
                    state="pending" if reasons else "running",
                    plan=plan.model_dump_json(),
                    traceparent=traceparent,
                    approval_reasons=reasons,
                )
            # its approval came first
            return record.model_copy(
                update={
                    "state": "running" if record.state == "approved" else "rejected",
                    "plan": plan.model_dump_json(),
                    "traceparent": traceparent,
                    "approval_reasons": reasons,
                }
            )

        old, new = await self._change(plan.plan_id, record_plan)
        if new is None:
            assert old is not None  # record_plan leaves only an existing record as it is
            return Transition("nothing", old, f"plan already {old.state}")
        if new.state == "running":
            return Transition("run", new, "approved" if old else "no approval needed")
        if new.state == "pending":
            return Transition("wait", new, "waiting for approval: " + "; ".join(reasons))
        return Transition("rejected", new, f"rejected by {new.decided_by} before it arrived")

    async def expire_stale(
        self, plan: Plan, traceparent: dict[str, str], why: str
    ) -> Literal["expired", "seen", "decided"]:
        """Record a plan that arrived too old to run as ended ``expired``. ``seen``: it
        was recorded before (a redelivery), and ends as it does; ``decided``: a
        person's decision came first, and ``on_plan`` applies it."""

        def expire(record: PlanRecord | None) -> PlanRecord | None:
            if record is not None:
                return None
            return PlanRecord(
                state="done",
                plan=plan.model_dump_json(),
                traceparent=traceparent,
                outcome="expired",
                note=why,
            )

        old, new = await self._change(plan.plan_id, expire)
        if new is not None:
            return "expired"
        assert old is not None  # expire leaves only an existing record as it is
        return "seen" if old.plan is not None else "decided"

    async def on_approval(self, approval: Approval) -> Transition:
        approve = approval.decision == "approve"
        decided: dict[str, object] = {
            "decided_by": approval.decided_by,
            "channel": approval.channel,
            "decided_at": approval.timestamp.isoformat(),
            "note": approval.reason,
        }
        if not approve:
            decided["outcome"] = "expired" if approval.channel == "expiry" else "rejected"

        def decide(record: PlanRecord | None) -> PlanRecord | None:
            if record is not None and record.state != "pending":
                return None  # decided before
            if record is None:  # the plan has not arrived yet
                return PlanRecord(state="approved" if approve else "rejected", **decided)
            return record.model_copy(
                update={"state": "running" if approve else "rejected", **decided}
            )

        old, new = await self._change(approval.plan_id, decide)
        if new is None:
            assert old is not None  # decide leaves only an existing record as it is
            return Transition(
                "nothing",
                old,
                f"already {old.state}" + (f" by {old.decided_by}" if old.decided_by else ""),
            )
        if old is None:
            return Transition("nothing", new, f"{new.state} before its plan arrived")
        if new.state == "running":
            return Transition("run", new, f"approved by {approval.decided_by}")
        return Transition("rejected", new, f"rejected by {approval.decided_by}")

    async def finish(self, plan_id: str, outcome: PlanOutcome, note: str) -> None:
        """Record how the plan's run ended; the first end recorded stays, except that an
        ``interrupted`` end gives way to the real one (the executor that was running it
        got through after a replica took it over: ``plan_run``)."""

        def done(record: PlanRecord | None) -> PlanRecord | None:
            if record is None:
                return None
            if record.state == "done" and (
                record.outcome != "interrupted" or outcome == "interrupted"
            ):
                return None
            return record.model_copy(update={"state": "done", "outcome": outcome, "note": note})

        await self._change(plan_id, done)

    async def follow(self) -> AsyncIterator[tuple[str, PlanRecord | None]]:
        """Every plan record as it is now, then each change as it happens, by key; None
        for a record deleted or unreadable. Ends only if the watch stops."""
        watcher = await self.kv.watch("plans.>")
        try:
            async for entry in watcher:
                if entry is None:  # the end of the current records
                    continue
                record = None
                if entry.operation is None and entry.value:
                    try:
                        record = PlanRecord.model_validate_json(entry.value)
                    except ValidationError as exc:
                        log.warning("unreadable record %s: %s", entry.key, exc.errors()[:1])
                yield entry.key, record
        finally:
            # on a lost connection stopping fails too; that must not hide a cancellation
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
