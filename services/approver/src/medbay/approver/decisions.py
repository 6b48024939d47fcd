"""The approver's logic, with NATS and Telegram behind small interfaces.

A plan that requires approval gets a record in the ``ApprovalBook`` with its
deadline, and a message with signed Approve and Reject buttons in every
configured chat. The first decision written to the record wins: a click by an
allowed person, a decision made elsewhere (gateway, CLI: seen on APPROVALS) or
the expiry. The winner publishes the ``Approval`` and edits the messages to show
it. Everything still to do lives in the record, so ``sweep`` (run every second
by every instance, over the records it watches) finishes what a crash or an
outage left undone: expiring, publishing, announcing, showing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from medbay.approver import messages
from medbay.approver.book import (
    ApprovalBook,
    ApprovalRecord,
    Change,
    ChatMessage,
    Decision,
    approval_event_id,
    plan_key,
)
from medbay.approver.callbacks import CallbackExpired, CallbackSigner, InvalidCallback
from medbay.common.events import Approval, Plan, utc_now
from medbay.common.runtime import current_task_cancelling

log = logging.getLogger("medbay.approver")

ANNOUNCE_LEASE = timedelta(seconds=30)
"""An instance that set out to send a plan's messages has this long before another may."""
SETTLE_GRACE = timedelta(seconds=10)
"""A decision still unpublished or unshown after this is finished by the sweep."""


class Chat(Protocol):
    """Where plans are shown (Telegram)."""

    async def announce(self, text: str, buttons: Sequence[tuple[str, str]]) -> list[ChatMessage]:
        """Send ``text`` with (label, callback data) buttons; return what was sent."""
        ...

    async def show(self, sent: Sequence[ChatMessage], text: str) -> bool:
        """Replace the text of ``sent`` (dropping the buttons); False to try again later."""
        ...


Publish = Callable[[Approval, str], Awaitable[None]]
"""Publish an approval to APPROVALS, within the trace of the given ``traceparent``."""

StatusSource = Callable[[int], Awaitable[messages.StatusSnapshot]]
"""The ``/status`` snapshot, given the number of plans waiting for approval."""


@dataclass(frozen=True)
class Person:
    """Who clicked or sent a command."""

    user_id: int
    name: str
    """``@username``, else the full name."""

    @property
    def label(self) -> str:
        """As ``decided_by``: readable, and unique by the user id."""
        return f"{self.name} (telegram {self.user_id})"


class Decisions:
    def __init__(
        self,
        book: ApprovalBook,
        publish: Publish,
        *,
        expiry: timedelta,
        allowed_user_ids: Sequence[int] = (),
        chat: Chat | None = None,
        signer: CallbackSigner | None = None,
        status: StatusSource | None = None,
        clock: Callable[[], datetime] = utc_now,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if chat is not None and signer is None:
            raise ValueError("a chat needs a signer for its buttons")
        self.book = book
        self.publish = publish
        self.expiry = expiry
        self.allowed = frozenset(allowed_user_ids)
        self.chat = chat
        self.signer = signer
        self.status = status
        self.clock = clock
        self.open: dict[str, tuple[int, ApprovalRecord]] = {}
        """Records with something left to do, by key, with their revision (kept by ``observe``)."""
        registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "medbay_approver_decisions",
            "Plans decided, by channel and decision",
            ["channel", "decision"],
            registry=registry,
        )
        self.refused = Counter(
            "medbay_approver_refused_clicks",
            "Button clicks that changed nothing, by reason",
            ["reason"],
            registry=registry,
        )
        self.waiting = Gauge(
            "medbay_approver_waiting", "Plans waiting for approval", registry=registry
        )

    # --- plans and decisions ----------------------------------------------------------

    async def on_plan(self, plan: Plan, traceparent: str) -> None:
        """Track a plan that requires approval and ask in the chats (once per plan)."""
        if not plan.requires_approval:
            return
        now = self.clock()
        created = min(plan.timestamp, now)  # a plan expires counting from when it was made
        deadline = created + self.expiry
        ask = self.chat is not None and deadline > now
        record = ApprovalRecord(
            plan_id=plan.plan_id,
            plan=plan.model_dump_json(),
            traceparent=traceparent,
            created_at=created,
            deadline=deadline,
            announce_claimed_at=now if ask else None,
        )
        change = await self.book.change(plan.plan_id, lambda old: record if old is None else None)
        if change.new is None:
            log.info("plan %s is known already", plan.plan_id, extra={"plan_id": plan.plan_id})
            return
        self._observe(change)
        log.info(
            "plan %s for %s on %s awaits approval until %s",
            plan.plan_id,
            plan.issue_kind,
            plan.host,
            deadline.isoformat(),
            extra={"plan_id": plan.plan_id},
        )
        if ask:
            await self._announce(change.new)

    async def on_approval(self, approval: Approval) -> None:
        """A decision on APPROVALS: the approver's own (already recorded) or one made elsewhere."""
        decision = Decision.of(approval)

        def record_it(old: ApprovalRecord | None) -> ApprovalRecord | None:
            if old is not None and old.decision is not None:
                return None
            if old is None:  # its plan is still to come (or never asked about)
                return ApprovalRecord(plan_id=approval.plan_id, decision=decision, published=True)
            return old.model_copy(update={"decision": decision, "published": True})

        change = await self.book.change(approval.plan_id, record_it)
        if change.new is None:
            return
        self._observe(change)
        self.decisions.labels(approval.channel, approval.decision).inc()
        log.info(
            "plan %s %sd by %s via %s",
            approval.plan_id,
            approval.decision,
            approval.decided_by,
            approval.channel,
            extra={"plan_id": approval.plan_id},
        )
        await self._settle(change.new)

    async def on_click(self, person: Person, data: str) -> str:
        """Handle an Approve or Reject button; returns the answer shown to ``person``."""
        now = self.clock()
        if person.user_id not in self.allowed:
            log.warning("refused a click by %s: not an allowed user", person.label)
            self.refused.labels("not_allowed").inc()
            return messages.NOT_ALLOWED
        if self.signer is None:  # no buttons were made, so none can be valid
            return messages.NOT_VALID
        try:
            signed = self.signer.verify(data, now)
        except CallbackExpired:
            self.refused.labels("expired").inc()
            return messages.EXPIRED
        except InvalidCallback as exc:
            log.warning("refused a click by %s: invalid callback data (%s)", person.label, exc)
            self.refused.labels("invalid").inc()
            return messages.NOT_VALID
        decision = Decision(
            decision=signed.choice,
            decided_by=person.label,
            channel="telegram",
            decided_at=now,
            event_id=approval_event_id(signed.plan_id),
        )

        def decide(old: ApprovalRecord | None) -> ApprovalRecord | None:
            if old is None or not old.pending or old.expired(now):
                return None
            return old.model_copy(update={"decision": decision})

        change = await self.book.change(signed.plan_id, decide)
        if change.new is None:
            old = change.old
            if old is not None and old.decision is not None:
                self.refused.labels("decided").inc()
                return messages.already_decided(old.decision)
            if old is None:
                log.warning("refused a click by %s: unknown plan %s", person.label, signed.plan_id)
                self.refused.labels("unknown").inc()
                return messages.UNKNOWN_PLAN
            self.refused.labels("expired").inc()
            return messages.EXPIRED
        self._observe(change)
        self.decisions.labels("telegram", signed.choice).inc()
        log.info(
            "plan %s %sd by %s",
            signed.plan_id,
            signed.choice,
            person.label,
            extra={"plan_id": signed.plan_id},
        )
        await self._settle(change.new)
        return messages.DECIDED[signed.choice]

    async def expire(self, plan_id: str) -> bool:
        """Reject the plan if it is still undecided past its deadline; True if this did it."""
        now = self.clock()

        def reject(old: ApprovalRecord | None) -> ApprovalRecord | None:
            if old is None or not old.expired(now):
                return None
            assert old.deadline is not None and old.created_at is not None
            window = messages.window_text(old.deadline - old.created_at)
            decision = Decision(
                decision="reject",
                decided_by="expiry",
                channel="expiry",
                decided_at=now,
                reason=f"not decided within {window}",
                event_id=approval_event_id(old.plan_id),
            )
            return old.model_copy(update={"decision": decision})

        change = await self.book.change(plan_id, reject)
        if change.new is None:
            return False
        self._observe(change)
        self.decisions.labels("expiry", "reject").inc()
        log.warning("plan %s expired undecided: rejected", plan_id, extra={"plan_id": plan_id})
        await self._settle(change.new)
        return True

    # --- after a decision ---------------------------------------------------------------

    async def _settle(self, record: ApprovalRecord) -> None:
        """Publish the record's decision and show it in the chats, whichever is not done yet.

        A failure is logged and left to the sweep.
        """
        decision = record.decision
        assert decision is not None
        plan_id = record.plan_id
        if not record.published:
            try:
                await self.publish(decision.approval(plan_id), record.traceparent)
            except Exception:
                if current_task_cancelling():
                    raise
                log.exception("publishing the decision on plan %s failed; will retry", plan_id)
                return
            record = await self._update(plan_id, lambda old: {"published": True}) or record
        if self.chat is None or record.shown or not record.messages:
            return
        sent = record.messages
        if await self.chat.show(sent, messages.final_text(record)):
            # Only if no message was added meanwhile (it would still show the buttons).
            await self._update(
                plan_id, lambda old: {"shown": True} if old.messages == sent else None
            )

    async def _update(
        self, plan_id: str, fields: Callable[[ApprovalRecord], dict[str, object] | None]
    ) -> ApprovalRecord | None:
        """Change some fields of an existing record; returns the record written, if any."""

        def apply(old: ApprovalRecord | None) -> ApprovalRecord | None:
            update = None if old is None else fields(old)
            return None if old is None or update is None else old.model_copy(update=update)

        change = await self.book.change(plan_id, apply)
        self._observe(change)
        return change.new

    # --- asking -------------------------------------------------------------------------

    async def _announce(self, record: ApprovalRecord) -> None:
        """Send the plan with its buttons to the chats (this instance holds the lease)."""
        assert self.chat is not None and self.signer is not None
        plan = record.parsed_plan()
        assert plan is not None and record.deadline is not None
        text = messages.plan_text(plan, trace_id=record.trace_id, deadline=record.deadline)
        buttons: list[tuple[str, str]] = []
        if self.signer.fits(plan.plan_id, record.deadline):
            sign = self.signer.sign
            buttons = [
                (messages.APPROVE_LABEL, sign(plan.plan_id, "approve", record.deadline)),
                (messages.REJECT_LABEL, sign(plan.plan_id, "reject", record.deadline)),
            ]
        else:
            log.warning("plan id %s is too long for buttons: decide with the CLI", plan.plan_id)
        sent = await self.chat.announce(text, buttons)
        if not sent:
            log.warning("plan %s could not be sent to any chat; will retry", plan.plan_id)
            return
        updated = await self._update(
            plan.plan_id, lambda old: {"messages": [*old.messages, *sent], "shown": False}
        )
        if updated is not None and updated.decision is not None:
            await self._settle(updated)  # decided while the messages were on their way

    async def _claim_announcement(self, plan_id: str) -> None:
        now = self.clock()

        def claim(old: ApprovalRecord | None) -> ApprovalRecord | None:
            if old is None or not old.pending or old.messages or old.expired(now):
                return None
            if (
                old.announce_claimed_at is not None
                and old.announce_claimed_at + ANNOUNCE_LEASE > now
            ):
                return None
            return old.model_copy(update={"announce_claimed_at": now})

        change = await self.book.change(plan_id, claim)
        if change.new is not None:
            self._observe(change)
            await self._announce(change.new)

    # --- keeping up -----------------------------------------------------------------------

    def observe(self, key: str, revision: int, record: ApprovalRecord | None) -> None:
        """A record as written (by any instance): keep it while something is left to do."""
        current = self.open.get(key)
        if current is not None and current[0] >= revision:
            return
        if record is None or not self._has_work(record):
            self.open.pop(key, None)
        else:
            self.open[key] = (revision, record)
        self.waiting.set(sum(1 for _, r in self.open.values() if r.pending))

    def _has_work(self, record: ApprovalRecord) -> bool:
        """Whether this instance has something to do for the record, now or later."""
        if record.pending:
            return True
        if record.decision is None:
            return False
        unshown = self.chat is not None and bool(record.messages) and not record.shown
        return not record.published or unshown

    def _observe(self, change: Change) -> None:
        if change.new is not None:
            self.observe(plan_key(change.new.plan_id), change.revision, change.new)

    async def sweep(self) -> None:
        """Do what is due: expire, and finish what a crash or an outage left undone."""
        now = self.clock()
        for _, record in list(self.open.values()):
            plan_id = record.plan_id
            try:
                if record.expired(now):
                    await self.expire(plan_id)
                elif record.decision is not None:
                    if record.decision.decided_at + SETTLE_GRACE <= now:
                        fresh, _ = await self.book.get(plan_id)
                        if fresh is not None and self._has_work(fresh):
                            await self._settle(fresh)
                elif self.chat is not None and not record.messages:
                    claimed = record.announce_claimed_at
                    if claimed is None or claimed + ANNOUNCE_LEASE <= now:
                        await self._claim_announcement(plan_id)
            except Exception:
                if current_task_cancelling():
                    raise
                log.exception("sweeping plan %s failed; will retry", plan_id)

    # --- commands ---------------------------------------------------------------------------

    def may_use_commands(self, user_id: int) -> bool:
        return user_id in self.allowed

    def pending_text(self) -> str:
        return messages.pending_text([r for _, r in self.open.values()], self.clock())

    async def status_text(self) -> str:
        if self.status is None:
            return "Status is not available."
        waiting = sum(1 for _, r in self.open.values() if r.pending)
        return messages.status_text(await self.status(waiting))
