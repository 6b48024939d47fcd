"""The approver's own record of each plan it asks about, and of each alert it
delivers, in a JetStream KV bucket.

Bucket ``medbay_approver``, one key per plan: ``plans.<plan_id>`` (the id made a
safe key token), holding an ``ApprovalRecord`` as JSON. Every change is a
compare-and-swap, so a plan is decided once however many approver instances,
clicks and redelivered updates race for it: the first write of a decision wins
and everyone else sees it. A record keeps the plan's deadline, so expiry survives
restarts, and what is still to do after a decision (publishing it, showing it in
the chats), so a crash in between is made good later.

One key per alert too: ``alerts.<alert_id>``, an ``AlertRecord`` saying which chats
have it, so a redelivered alert is not sent again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from medbay.common import kv as kv_records
from medbay.common.access import APPROVER_BOOK
from medbay.common.events import Approval, Plan, derived_event_id
from medbay.common.kv import open_key_value
from medbay.common.records import approval_key, key_token
from medbay.common.telemetry import trace_id_of

log = logging.getLogger(__name__)

BUCKET = APPROVER_BOOK.name
KEY_PREFIX = "plans."
ALERT_KEY_PREFIX = "alerts."
RETENTION = timedelta(days=30)
"""How long a record outlives its last change (the bucket's max age)."""

Verdict = Literal["approve", "reject"]
Channel = Literal["telegram", "gateway", "cli", "expiry"]
"""As in ``Approval``."""


def plan_key(plan_id: str) -> str:
    return approval_key(plan_id)


def alert_key(alert_id: str) -> str:
    return ALERT_KEY_PREFIX + key_token(alert_id)


def approval_event_id(plan_id: str) -> str:
    """The one Approval the approver may publish for a plan: a repeat is deduplicated."""
    return derived_event_id("approver", plan_id)


class _Stored(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ChatMessage(_Stored):
    chat_id: int
    message_id: int


class Decision(_Stored):
    decision: Verdict
    decided_by: str
    channel: Channel
    decided_at: AwareDatetime
    reason: str = ""
    event_id: str
    """Of the Approval that carries it."""

    @classmethod
    def of(cls, approval: Approval) -> Decision:
        return cls(
            decision=approval.decision,
            decided_by=approval.decided_by,
            channel=approval.channel,
            decided_at=approval.timestamp,
            reason=approval.reason,
            event_id=approval.event_id,
        )

    def approval(self, plan_id: str) -> Approval:
        return Approval(
            event_id=self.event_id,
            timestamp=self.decided_at,
            plan_id=plan_id,
            decision=self.decision,
            decided_by=self.decided_by,
            channel=self.channel,
            reason=self.reason,
        )


class ApprovalRecord(_Stored):
    plan_id: str
    plan: str | None = None
    """The plan's JSON; None when only a decision made elsewhere is known."""
    traceparent: str = ""
    created_at: AwareDatetime | None = None
    deadline: AwareDatetime | None = None
    messages: list[ChatMessage] = Field(default_factory=list)
    """Where the plan was shown: edited once it is decided."""
    announce_claimed_at: AwareDatetime | None = None
    """When an instance last set out to send the messages (a lease against sending twice)."""
    decision: Decision | None = None
    published: bool = False
    """Whether the decision is on APPROVALS (always, for decisions made elsewhere)."""
    shown: bool = False
    """Whether every message shows the decision."""

    @property
    def pending(self) -> bool:
        return self.decision is None and self.plan is not None

    @property
    def trace_id(self) -> str:
        return trace_id_of(self.traceparent) or ""

    def parsed_plan(self) -> Plan | None:
        return None if self.plan is None else Plan.model_validate_json(self.plan)

    def expired(self, now: datetime) -> bool:
        return self.pending and self.deadline is not None and now >= self.deadline


class AlertRecord(_Stored):
    """How far the delivery of one ``AlertRaised`` got."""

    alert_id: str
    plan_id: str
    sending_since: AwareDatetime | None = None
    """When an instance set out to send it (a lease against sending it twice); None: nobody is."""
    sent: list[ChatMessage] = Field(default_factory=list)
    """The chats that have it."""
    refused: list[int] = Field(default_factory=list)
    """The chats that would not take it (no such chat, the bot removed): given up on."""
    done: bool = False
    """Whether every chat has it or refused it (or, without Telegram, it was logged)."""

    @property
    def settled_chats(self) -> set[int]:
        return {m.chat_id for m in self.sent} | set(self.refused)


@dataclass(frozen=True)
class Change:
    """What a compare-and-swap found and wrote; ``new`` is None when nothing was written."""

    old: ApprovalRecord | None
    new: ApprovalRecord | None
    revision: int


@dataclass(frozen=True)
class AlertChange:
    """As ``Change``, for an alert's record."""

    old: AlertRecord | None
    new: AlertRecord | None
    revision: int


Transition = Callable[[ApprovalRecord | None], ApprovalRecord | None]
AlertTransition = Callable[[AlertRecord | None], AlertRecord | None]


class ApprovalBook:
    """The bucket's records; any number of approver instances may share it."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> ApprovalBook:
        kv = await open_key_value(
            js, APPROVER_BOOK, history=5, replicas=replicas, ttl_seconds=RETENTION.total_seconds()
        )
        return cls(kv)

    async def get(self, plan_id: str) -> tuple[ApprovalRecord | None, int]:
        return await kv_records.read(self.kv, plan_key(plan_id), ApprovalRecord)

    async def change(self, plan_id: str, transition: Transition) -> Change:
        """Apply ``transition`` until no other writer gets in between.

        ``transition`` gets the current record (None if there is none) and returns the
        new one, or None to leave it as it is.
        """
        return Change(
            *await kv_records.change(self.kv, plan_key(plan_id), ApprovalRecord, transition)
        )

    async def change_alert(self, alert_id: str, transition: AlertTransition) -> AlertChange:
        """As ``change``, for the record of an alert."""
        return AlertChange(
            *await kv_records.change(self.kv, alert_key(alert_id), AlertRecord, transition)
        )

    async def watch(self) -> AsyncIterator[tuple[str, int, ApprovalRecord | None]]:
        """(key, revision, record) for every record, then for every change; None when deleted."""
        watcher = await self.kv.watch(KEY_PREFIX + ">")
        try:
            async for entry in watcher:
                if entry is None:  # the end of the current values
                    continue
                gone = entry.operation in (KV_DEL, KV_PURGE) or not entry.value
                if gone:
                    yield entry.key, entry.revision or 0, None
                    continue
                try:
                    record = ApprovalRecord.model_validate_json(entry.value or b"")
                except ValidationError as exc:
                    log.warning("unreadable approval record %s, skipped: %s", entry.key, exc)
                    continue
                yield entry.key, entry.revision or 0, record
        finally:
            # on a lost connection stopping fails too; that must not hide a cancellation
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
