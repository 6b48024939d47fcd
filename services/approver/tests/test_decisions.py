"""The approver's bookkeeping without NATS or Telegram: a KV in memory with the same
compare-and-swap rules, a chat that records, and a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from medbay.approver import messages
from medbay.approver.book import ApprovalBook, ChatMessage, approval_event_id
from medbay.approver.callbacks import CallbackSigner
from medbay.approver.decisions import Decisions, Person
from medbay.common.events import Approval, Plan, Risk
from tests import factories
from tests.factories import step

START = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
EXPIRY = timedelta(minutes=15)
ALICE = Person(1, "@alice")
BOB = Person(2, "@bob")
STRANGER = Person(666, "@mallory")
SIGNER = CallbackSigner("sixteen or more characters")


@dataclass
class Entry:
    value: bytes
    revision: int


class MemoryKV:
    """Enough of nats-py's KeyValue: get, create and compare-and-swap update."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.sequence = 0

    async def get(self, key: str) -> Entry:
        await asyncio.sleep(0)  # let racing tasks interleave
        if key not in self.entries:
            raise KeyNotFoundError
        return self.entries[key]

    async def create(self, key: str, value: bytes) -> int:
        return await self.update(key, value, last=0)

    async def update(self, key: str, value: bytes, last: int) -> int:
        await asyncio.sleep(0)
        current = self.entries.get(key)
        if (current.revision if current else 0) != last:
            raise KeyWrongLastSequenceError("wrong last sequence")
        self.sequence += 1
        self.entries[key] = Entry(value, self.sequence)
        return self.sequence


@dataclass
class RecordingChat:
    sent: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    shown: list[tuple[list[ChatMessage], str]] = field(default_factory=list)
    down: bool = False

    async def announce(self, text: str, buttons: Sequence[tuple[str, str]]) -> list[ChatMessage]:
        if self.down:
            return []
        self.sent.append((text, list(buttons)))
        return [ChatMessage(chat_id=-100, message_id=len(self.sent))]

    async def show(self, sent: Sequence[ChatMessage], text: str) -> bool:
        if self.down:
            return False
        self.shown.append((list(sent), text))
        return True


class Harness:
    def __init__(self, *, chat: bool = True) -> None:
        self.now = START
        self.published: list[Approval] = []
        self.chat = RecordingChat() if chat else None
        self.book = ApprovalBook(MemoryKV())  # type: ignore[arg-type]  # a fake KeyValue
        self.fail_publish = False
        self.service = Decisions(
            self.book,
            self.publish,
            expiry=EXPIRY,
            allowed_user_ids=[ALICE.user_id, BOB.user_id],
            chat=self.chat,
            signer=SIGNER,
            clock=lambda: self.now,
        )

    async def publish(self, approval: Approval, traceparent: str) -> None:
        if self.fail_publish:
            raise ConnectionError("NATS is away")
        self.published.append(approval)

    def button(self, choice: str) -> str:
        assert self.chat is not None
        _, buttons = self.chat.sent[-1]
        return dict(buttons)[
            messages.APPROVE_LABEL if choice == "approve" else messages.REJECT_LABEL
        ]


def make_plan(requires_approval: bool = True) -> Plan:
    return factories.plan(
        step("restart_service", "web", Risk.HIGH, 30),
        plan_id="0123456789abcdef0123456789abcdef",
        issue_event_id="e" * 32,
        labels={},
        confidence=0.7,
        requires_approval=requires_approval,
        timestamp=START,
    )


PLAN = make_plan()
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def h() -> Harness:
    harness = Harness()
    await harness.service.on_plan(PLAN, TRACEPARENT)
    return harness


async def test_a_plan_is_asked_about_once_with_signed_buttons(h: Harness):
    await h.service.on_plan(PLAN, TRACEPARENT)  # redelivered
    assert h.chat is not None and len(h.chat.sent) == 1
    text, buttons = h.chat.sent[0]
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in text
    assert [SIGNER.verify(data, START).choice for _, data in buttons] == ["approve", "reject"]
    assert PLAN.plan_id in h.service.pending_text()


async def test_a_plan_without_approval_is_ignored():
    harness = Harness()
    await harness.service.on_plan(make_plan(requires_approval=False), TRACEPARENT)
    assert harness.chat is not None and harness.chat.sent == []
    assert harness.service.open == {}


async def test_the_first_click_decides_and_later_ones_change_nothing(h: Harness):
    answer = await h.service.on_click(ALICE, h.button("approve"))
    assert answer == messages.DECIDED["approve"]
    [approval] = h.published
    assert (approval.decision, approval.channel) == ("approve", "telegram")
    assert approval.decided_by == "@alice (telegram 1)"
    assert approval.event_id == approval_event_id(PLAN.plan_id)
    assert h.chat is not None and "✅ Approved by @alice (telegram 1)" in h.chat.shown[0][1]
    h.now += timedelta(minutes=1)
    for who, choice in ((ALICE, "approve"), (BOB, "reject")):
        again = await h.service.on_click(who, h.button(choice))
        assert again == "Already approved by @alice (telegram 1) at 2025-01-06 12:00:00 UTC."
    assert len(h.published) == 1 and len(h.chat.shown) == 1
    assert h.service.open == {}  # nothing left to do


async def test_racing_clicks_decide_once(h: Harness):
    answers = await asyncio.gather(
        h.service.on_click(ALICE, h.button("approve")),
        h.service.on_click(BOB, h.button("reject")),
        h.service.on_click(ALICE, h.button("approve")),
    )
    assert len(h.published) == 1
    assert sum(a in messages.DECIDED.values() for a in answers) == 1
    assert sum(a.startswith("Already") for a in answers) == 2


async def test_strangers_and_forgeries_are_refused(h: Harness):
    assert await h.service.on_click(STRANGER, h.button("approve")) == messages.NOT_ALLOWED
    forged = h.button("approve")[:-2] + "AA"
    assert await h.service.on_click(ALICE, forged) == messages.NOT_VALID
    assert await h.service.on_click(ALICE, "garbage") == messages.NOT_VALID
    other = SIGNER.sign("f" * 32, "approve", START + EXPIRY)
    assert await h.service.on_click(ALICE, other) == messages.UNKNOWN_PLAN
    assert h.published == []
    assert PLAN.plan_id in h.service.pending_text()


async def test_an_undecided_plan_expires_into_a_rejection(h: Harness):
    h.now = START + EXPIRY - timedelta(seconds=1)
    await h.service.sweep()
    assert h.published == []
    h.now = START + EXPIRY
    assert await h.service.on_click(ALICE, h.button("approve")) == messages.EXPIRED
    await h.service.sweep()
    [approval] = h.published
    assert (approval.decision, approval.channel, approval.decided_by) == (
        "reject",
        "expiry",
        "expiry",
    )
    assert approval.reason == "not decided within 15 minutes"
    assert h.chat is not None and "⌛ Expired" in h.chat.shown[-1][1]
    assert not await h.service.expire(PLAN.plan_id)  # once only
    assert h.service.pending_text() == "Nothing is waiting for approval."


async def test_a_decision_made_elsewhere_is_recorded_and_shown(h: Harness):
    cli = Approval(plan_id=PLAN.plan_id, decision="reject", decided_by="ops@box", channel="cli")
    await h.service.on_approval(cli)
    assert h.published == []  # it is on APPROVALS already
    assert h.chat is not None and "❌ Rejected by ops@box via cli" in h.chat.shown[0][1]
    assert (await h.service.on_click(ALICE, h.button("approve"))).startswith(
        "Already rejected by ops@box"
    )
    h.now = START + EXPIRY
    await h.service.sweep()
    assert h.published == []


async def test_a_decision_before_its_plan_means_the_plan_is_not_asked_about():
    harness = Harness()
    await harness.service.on_approval(
        Approval(plan_id=PLAN.plan_id, decision="approve", decided_by="ops", channel="gateway")
    )
    await harness.service.on_plan(PLAN, TRACEPARENT)
    assert harness.chat is not None and harness.chat.sent == []


async def test_what_an_outage_left_undone_is_finished_by_the_sweep():
    harness = Harness()
    assert harness.chat is not None
    harness.chat.down = True
    await harness.service.on_plan(PLAN, TRACEPARENT)
    harness.chat.down = False
    await harness.service.sweep()
    assert harness.chat.sent == []  # the first attempt's lease still holds
    harness.now += timedelta(seconds=31)
    await harness.service.sweep()
    assert len(harness.chat.sent) == 1
    harness.fail_publish = True
    assert (
        await harness.service.on_click(ALICE, harness.button("approve"))
        == (messages.DECIDED["approve"])
    )
    assert harness.published == []
    harness.fail_publish = False
    harness.now += timedelta(seconds=11)
    await harness.service.sweep()
    assert [a.decision for a in harness.published] == ["approve"]
    assert "✅ Approved" in harness.chat.shown[-1][1]
    assert harness.service.open == {}


async def test_without_telegram_plans_are_still_tracked_and_expire():
    harness = Harness(chat=False)
    await harness.service.on_plan(PLAN, TRACEPARENT)
    assert PLAN.plan_id in harness.service.pending_text()
    harness.now = START + EXPIRY
    await harness.service.sweep()
    assert [a.channel for a in harness.published] == ["expiry"]


async def test_a_stale_plan_is_not_asked_about_and_expires_at_once():
    harness = Harness()
    harness.now = START + EXPIRY + timedelta(minutes=1)
    await harness.service.on_plan(PLAN, TRACEPARENT)
    assert harness.chat is not None and harness.chat.sent == []
    await harness.service.sweep()
    assert [a.channel for a in harness.published] == ["expiry"]
