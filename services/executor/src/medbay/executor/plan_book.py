"""Where each plan stands (awaiting approval, running, done), kept in JetStream KV.

Every executor replica reads and changes the same records with compare-and-swap,
so a plan is decided once and started once however many replicas see it, and a
restarted executor resumes the plans that were running.

A record is created by whichever comes first, the plan or its approval (an
approval may overtake its plan), and completed by the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from medbay.common.events import Approval, Plan
from medbay.common.records import PLAN_BOOK, PlanRecord, PlanState, plan_key, read_plan, read_plans

BUCKET = PLAN_BOOK.name


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
    async def open(cls, js: JetStreamContext) -> PlanBook:
        kv = await js.create_key_value(
            config=KeyValueConfig(
                bucket=BUCKET,
                history=5,
                ttl=90 * 24 * 3600,
                storage=StorageType.FILE,
                description=PLAN_BOOK.description,
            )
        )
        return cls(kv)

    async def get(self, plan_id: str) -> tuple[PlanRecord | None, int]:
        """The record and its revision. An unreadable record reads as (None, its revision):
        it is replaced by the next write rather than blocking the plan for ever."""
        return await read_plan(self.kv, plan_id)

    async def _write(self, plan_id: str, record: PlanRecord, revision: int) -> bool:
        """Create (revision 0) or compare-and-swap; False if someone else got there first."""
        data = record.model_dump_json().encode()
        try:
            if revision == 0:
                await self.kv.create(plan_key(plan_id), data)
            else:
                await self.kv.update(plan_key(plan_id), data, last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def on_plan(
        self, plan: Plan, traceparent: dict[str, str], approval_reasons: Sequence[str]
    ) -> Transition:
        """Record a plan; it runs at once only if ``approval_reasons`` is empty (the
        executor's own judgement, not the plan's say) or an approval came first."""
        reasons = list(approval_reasons)
        while True:
            record, revision = await self.get(plan.plan_id)
            if record is not None and record.plan is not None:
                return Transition("nothing", record, f"plan already {record.state}")
            if record is None:
                state: PlanState = "pending" if reasons else "running"
                new = PlanRecord(
                    state=state,
                    plan=plan.model_dump_json(),
                    traceparent=traceparent,
                    approval_reasons=reasons,
                )
            else:  # its approval came first
                state = "running" if record.state == "approved" else "rejected"
                new = record.model_copy(
                    update={
                        "state": state,
                        "plan": plan.model_dump_json(),
                        "traceparent": traceparent,
                        "approval_reasons": reasons,
                    }
                )
            if await self._write(plan.plan_id, new, revision):
                if state == "running":
                    return Transition("run", new, "approved" if record else "no approval needed")
                if state == "pending":
                    return Transition("wait", new, "waiting for approval: " + "; ".join(reasons))
                return Transition("nothing", new, f"rejected by {new.decided_by}")

    async def on_approval(self, approval: Approval) -> Transition:
        approve = approval.decision == "approve"
        while True:
            record, revision = await self.get(approval.plan_id)
            if record is not None and record.state != "pending":
                return Transition(
                    "nothing",
                    record,
                    f"already {record.state}"
                    + (f" by {record.decided_by}" if record.decided_by else ""),
                )
            decided = {
                "decided_by": approval.decided_by,
                "channel": approval.channel,
                "decided_at": approval.timestamp.isoformat(),
                "note": approval.reason,
            }
            if record is None:  # the plan has not arrived yet
                new = PlanRecord(state="approved" if approve else "rejected", **decided)
            else:
                new = record.model_copy(
                    update={"state": "running" if approve else "rejected", **decided}
                )
            if await self._write(approval.plan_id, new, revision):
                if record is None:
                    return Transition("nothing", new, f"{new.state} before its plan arrived")
                if new.state == "running":
                    return Transition("run", new, f"approved by {approval.decided_by}")
                return Transition("rejected", new, f"rejected by {approval.decided_by}")

    async def finish(self, plan_id: str, note: str) -> None:
        while True:
            record, revision = await self.get(plan_id)
            if record is None:
                return
            done = record.model_copy(update={"state": "done", "note": note})
            if await self._write(plan_id, done, revision):
                return

    async def records(self) -> dict[str, PlanRecord]:
        """Every readable plan record, by plan id (unreadable ones are logged and skipped)."""
        return await read_plans(self.kv)
