"""Alerts for people (``AlertRaised``: an ``alert_human`` step or an escalation by the
executor), sent to the chats that get approval requests.

Each alert is sent once to each chat, however often it is redelivered and however
many approver instances share the work: its record in the ``ApprovalBook``
(``alerts.<alert_id>``) says which chats have it, and a lease on the record keeps a
second sender away while one is at it. A chat that cannot be reached now (network,
Telegram's server errors, flood control) makes ``on_alert`` raise
``AlertNotDelivered``, so the consumer tries the message again later, and then only
the chats still missing it; a chat that refuses it for good (no such chat, the bot
removed) is given up on, said in the log. Without Telegram nothing can deliver an
alert: it is logged at WARNING, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from medbay.approver import messages
from medbay.approver.book import AlertRecord, ApprovalBook, ChatMessage
from medbay.common.events import AlertRaised, utc_now

log = logging.getLogger("medbay.approver")

SENDING_LEASE = timedelta(minutes=2)
"""An instance that set out to send an alert has this long before another may (it only
matters after a crash mid-send: an attempt that ends gives the lease back)."""
RETRY_SECONDS = 15.0
"""How long after a failed attempt an alert is tried again."""
ATTEMPTS = 40
"""Deliveries of an alert's message before it goes to DEADLETTER (about ten minutes
of tries; each delivery makes two attempts)."""
BACKLOG_SECONDS = 3600.0
"""When the approver's alert consumer is first made, the alerts of the hour before are
still sent; older ones are news no longer."""


class TryLater(Exception):
    """The chat cannot be reached now; another attempt may succeed."""


class Undeliverable(Exception):
    """The chat will not take the message, however often it is sent."""


class AlertNotDelivered(Exception):
    """Some chat could not be reached (or another instance is sending): try again later."""


class Messenger(Protocol):
    """Where alerts go (Telegram)."""

    @property
    def chat_ids(self) -> Sequence[int]: ...

    async def send(self, chat_id: int, text: str) -> ChatMessage:
        """Send ``text`` to one chat; ``TryLater`` or ``Undeliverable`` if it did not go."""
        ...


class Alerts:
    def __init__(
        self,
        book: ApprovalBook,
        messenger: Messenger | None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.book = book
        self.messenger = messenger
        self.clock = clock

    async def on_alert(self, alert: AlertRaised) -> None:
        """Send the alert to every chat that does not have it yet."""
        if self.messenger is None:
            await self._log_undeliverable(alert)
            return
        record = await self._claim(alert)
        if record is None:
            return
        text = messages.alert_text(alert)
        unreachable: list[int] = []
        for chat_id in self.messenger.chat_ids:
            if chat_id in record.settled_chats:
                continue
            try:
                sent = await self.messenger.send(chat_id, text)
            except TryLater as exc:
                log.warning("alert %s: chat %s unreachable: %s", alert.alert_id, chat_id, exc)
                unreachable.append(chat_id)
                continue
            except Undeliverable as exc:
                log.error(
                    "alert %s: chat %s refuses it (%s); given up on: %s",
                    alert.alert_id,
                    chat_id,
                    exc,
                    alert.message,
                    extra={"plan_id": alert.plan_id},
                )
                record = await self._update(alert, refused=[*record.refused, chat_id])
                continue
            record = await self._update(alert, sent=[*record.sent, sent])
        if unreachable:
            await self._update(alert, sending_since=None)
            raise AlertNotDelivered(
                f"alert {alert.alert_id}: chat(s) {', '.join(map(str, unreachable))} "
                "could not be reached; will try again"
            )
        record = await self._update(alert, sending_since=None, done=True)
        if record.sent:
            log.info(
                "alert %s for %s on %s sent to %d chat(s)",
                alert.alert_id,
                alert.issue_kind,
                alert.host,
                len(record.sent),
                extra={"plan_id": alert.plan_id},
            )
        else:
            log.error(
                "alert %s reached no chat: %s",
                alert.alert_id,
                alert.message,
                extra={"plan_id": alert.plan_id},
            )

    async def _log_undeliverable(self, alert: AlertRaised) -> None:
        """Without Telegram: log the alert, once (the first instance to record it does)."""

        def record_it(old: AlertRecord | None) -> AlertRecord | None:
            if old is not None:
                return None
            return AlertRecord(alert_id=alert.alert_id, plan_id=alert.plan_id, done=True)

        change = await self.book.change_alert(alert.alert_id, record_it)
        if change.new is not None:
            log.warning(
                "alert %s for %s on %s (plan %s) not delivered, Telegram is off: %s",
                alert.alert_id,
                alert.issue_kind,
                alert.host,
                alert.plan_id,
                alert.message,
                extra={"plan_id": alert.plan_id},
            )

    async def _claim(self, alert: AlertRaised) -> AlertRecord | None:
        """Take the lease on sending the alert; None if it is sent already.

        Raises ``AlertNotDelivered`` while another sender holds the lease.
        """
        now = self.clock()

        def claim(old: AlertRecord | None) -> AlertRecord | None:
            if old is None:
                return AlertRecord(
                    alert_id=alert.alert_id, plan_id=alert.plan_id, sending_since=now
                )
            if old.done or (
                old.sending_since is not None and old.sending_since + SENDING_LEASE > now
            ):
                return None
            return old.model_copy(update={"sending_since": now})

        change = await self.book.change_alert(alert.alert_id, claim)
        if change.new is not None:
            return change.new
        if change.old is not None and change.old.done:
            log.info("alert %s was sent already", alert.alert_id)
            return None
        raise AlertNotDelivered(f"alert {alert.alert_id} is being sent by another instance")

    async def _update(self, alert: AlertRaised, **fields: object) -> AlertRecord:
        """Change fields of the alert's record (which this instance holds the lease on)."""
        change = await self.book.change_alert(
            alert.alert_id,
            lambda old: None if old is None else old.model_copy(update=fields),
        )
        if change.new is None:  # deleted meanwhile (the bucket's retention is 30 days)
            raise AlertNotDelivered(f"alert {alert.alert_id}: its record is gone")
        return change.new
