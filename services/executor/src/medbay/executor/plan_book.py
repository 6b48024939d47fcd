"""Where each plan stands (awaiting approval, running, done), kept in JetStream KV.

Every executor replica reads and changes the same records with compare-and-swap,
so a plan is decided once and started once however many replicas see it, and a
restarted executor resumes the plans that were running.

A record is created by whichever comes first, the plan or its approval (an
approval may overtake its plan), and completed by the other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from medbay.common.events import Approval, Plan
from medbay.common.streams import token

BUCKET = "medbay_plans"

PlanState = Literal["pending", "approved", "rejected", "running", "done"]


@dataclass
class PlanRecord:
    state: PlanState
    plan: str | None = None
    """The plan's JSON; None while only its approval is known."""
    traceparent: dict[str, str] = field(default_factory=dict)
    decided_by: str = ""
    channel: str = ""
    decided_at: str = ""
    note: str = ""

    def parsed_plan(self) -> Plan | None:
        return None if self.plan is None else Plan.model_validate_json(self.plan)


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
                description="Executor: where each plan stands",
            )
        )
        return cls(kv)

    @staticmethod
    def key(plan_id: str) -> str:
        return f"plans.{token(plan_id)}"

    async def get(self, plan_id: str) -> tuple[PlanRecord | None, int]:
        try:
            entry = await self.kv.get(self.key(plan_id))
        except (KeyNotFoundError, KeyDeletedError):
            return None, 0
        if entry.value is None:
            return None, 0
        return PlanRecord(**json.loads(entry.value)), entry.revision or 0

    async def _write(self, plan_id: str, record: PlanRecord, revision: int) -> bool:
        """Create (revision 0) or compare-and-swap; False if someone else got there first."""
        data = json.dumps(asdict(record)).encode()
        try:
            if revision == 0:
                await self.kv.create(self.key(plan_id), data)
            else:
                await self.kv.update(self.key(plan_id), data, last=revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def on_plan(self, plan: Plan, traceparent: dict[str, str]) -> Transition:
        while True:
            record, revision = await self.get(plan.plan_id)
            if record is not None and record.plan is not None:
                return Transition("nothing", record, f"plan already {record.state}")
            if record is None:
                state: PlanState = "pending" if plan.requires_approval else "running"
                new = PlanRecord(state, plan.model_dump_json(), traceparent)
            else:  # its approval came first
                state = "running" if record.state == "approved" else "rejected"
                new = PlanRecord(
                    state,
                    plan.model_dump_json(),
                    traceparent,
                    record.decided_by,
                    record.channel,
                    record.decided_at,
                )
            if await self._write(plan.plan_id, new, revision):
                if state == "running":
                    return Transition("run", new, "approved" if record else "no approval needed")
                if state == "pending":
                    return Transition("wait", new, "waiting for approval")
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
            if record is None:  # the plan has not arrived yet
                new = PlanRecord("approved" if approve else "rejected")
            else:
                new = PlanRecord(
                    "running" if approve else "rejected", record.plan, record.traceparent
                )
            new.decided_by = approval.decided_by
            new.channel = approval.channel
            new.decided_at = approval.timestamp.isoformat()
            new.note = approval.reason
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
            record.state = "done"
            record.note = note
            if await self._write(plan_id, record, revision):
                return

    async def records(self) -> dict[str, PlanRecord]:
        """Every plan record, by plan id (for resuming, and for `medbay plans`)."""
        try:
            keys = await self.kv.keys()
        except Exception:  # nats-py raises NoKeysError for an empty bucket
            return {}
        out: dict[str, PlanRecord] = {}
        for key in keys:
            plan_id = key.removeprefix("plans.")
            record, _ = await self.get(plan_id)
            if record is not None:
                out[plan_id] = record
        return out
