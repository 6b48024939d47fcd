"""Delivering alerts to the chats, on the approver's real KV bucket (a real nats-server),
with a messenger whose chats the test makes unreachable or refusing, and a clock the
test moves: once per chat, again only where it did not arrive, logged without Telegram."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import nats
import pytest

from medbay.approver.alerts import (
    SENDING_LEASE,
    AlertNotDelivered,
    Alerts,
    TryLater,
    Undeliverable,
)
from medbay.approver.book import ApprovalBook, ChatMessage
from medbay.common.events import AlertRaised

if TYPE_CHECKING:
    from conftest import NatsServer

START = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)
OPS, ONCALL, GONE = -100, -200, -300


@dataclass
class RecordingMessenger:
    """Chats that record what they get; ``unreachable`` and ``refusing`` ones do not."""

    chat_ids: Sequence[int]
    got: list[tuple[int, str]] = field(default_factory=list)
    unreachable: set[int] = field(default_factory=set)
    refusing: set[int] = field(default_factory=set)
    broken: bool = False

    async def send(self, chat_id: int, text: str) -> ChatMessage:
        if self.broken:
            raise RuntimeError("the process dies mid-send")
        if chat_id in self.unreachable:
            raise TryLater("Telegram server says - Bad Gateway")
        if chat_id in self.refusing:
            raise Undeliverable("Telegram server says - Bad Request: chat not found")
        self.got.append((chat_id, text))
        return ChatMessage(chat_id=chat_id, message_id=len(self.got))

    def texts(self, chat_id: int) -> list[str]:
        return [text for chat, text in self.got if chat == chat_id]


@pytest.fixture
async def book(nats_server: NatsServer) -> AsyncIterator[ApprovalBook]:
    nc = await nats.connect(nats_server.url)
    yield await ApprovalBook.open(nc.jetstream())
    await nc.close()


def alert(alert_id: str = "a-1", message: str = "web is still down after a restart") -> AlertRaised:
    return AlertRaised(
        alert_id=alert_id,
        plan_id="p-1",
        issue_fingerprint="f" * 16,
        issue_kind="service_down",
        host="web-1",
        target="oncall",
        message=message,
    )


async def test_each_chat_gets_an_alert_once_however_often_it_comes(book: ApprovalBook):
    chats = RecordingMessenger([OPS, ONCALL])
    alerts = Alerts(book, chats, clock=lambda: START)
    first = alert(message="web is down: <b>connection refused</b> *again*")
    await alerts.on_alert(first)
    again = first.model_copy(update={"event_id": "a-redelivered-copy"})
    await alerts.on_alert(again)
    await Alerts(book, chats, clock=lambda: START).on_alert(first)  # another instance

    assert [chat for chat, _ in chats.got] == [OPS, ONCALL]
    [text] = chats.texts(OPS)
    assert text.startswith("🚨 Alert: service_down on web-1\n")
    assert "web is down: <b>connection refused</b> *again*" in text  # plain text, as written
    assert text.endswith("\n\nPlan: p-1")
    await alerts.on_alert(alert("a-2"))
    assert len(chats.got) == 4  # another alert is another message


async def test_an_unreachable_chat_is_tried_again_and_only_it(book: ApprovalBook):
    chats = RecordingMessenger([OPS, ONCALL], unreachable={ONCALL})
    alerts = Alerts(book, chats, clock=lambda: START)
    with pytest.raises(AlertNotDelivered, match="-200 could not be reached"):
        await alerts.on_alert(alert())
    assert [chat for chat, _ in chats.got] == [OPS]

    with pytest.raises(AlertNotDelivered):  # still down: nothing sent twice meanwhile
        await alerts.on_alert(alert())
    chats.unreachable.clear()
    await alerts.on_alert(alert())  # the lease was given back: no wait
    await alerts.on_alert(alert())
    assert [chat for chat, _ in chats.got] == [OPS, ONCALL]


async def test_a_refusing_chat_is_given_up_on_and_said_so(
    book: ApprovalBook, caplog: pytest.LogCaptureFixture
):
    chats = RecordingMessenger([OPS, GONE], refusing={GONE})
    alerts = Alerts(book, chats, clock=lambda: START)
    await alerts.on_alert(alert())
    await alerts.on_alert(alert())
    assert [chat for chat, _ in chats.got] == [OPS]
    [refusal] = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert refusal.levelname == "ERROR" and "chat not found" in refusal.getMessage()
    assert "web is still down" in refusal.getMessage()  # the alert is in the log at least

    nobody = RecordingMessenger([GONE], refusing={GONE})
    await Alerts(book, nobody, clock=lambda: START).on_alert(alert("a-2"))
    assert any("reached no chat" in r.getMessage() for r in caplog.records)


async def test_a_sender_that_died_mid_send_is_taken_over_after_its_lease(book: ApprovalBook):
    now = START
    chats = RecordingMessenger([OPS], broken=True)
    with pytest.raises(RuntimeError):
        await Alerts(book, chats, clock=lambda: now).on_alert(alert())
    chats.broken = False
    other = Alerts(book, chats, clock=lambda: now)
    with pytest.raises(AlertNotDelivered, match="being sent by another instance"):
        await other.on_alert(alert())
    assert chats.got == []
    now = START + SENDING_LEASE
    await other.on_alert(alert())
    assert [chat for chat, _ in chats.got] == [OPS]


async def test_without_telegram_an_alert_is_logged_once(
    book: ApprovalBook, caplog: pytest.LogCaptureFixture
):
    for _ in range(2):
        await Alerts(book, None).on_alert(alert())
    logged = [r for r in caplog.records if "a-1" in r.getMessage()]
    assert [r.levelname for r in logged] == ["WARNING"]
    line = logged[0].getMessage()
    assert "Telegram is off" in line and "web is still down after a restart" in line
    assert "service_down on web-1" in line and "p-1" in line
