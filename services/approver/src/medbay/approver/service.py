"""The approver's bus side: what its consumers call, what it publishes, its loops.

``ApproverService`` turns deliveries from PLANS and APPROVALS into calls on
``decisions.Decisions`` (the logic) and alerts from RESULTS into calls on
``alerts.Alerts``, publishes the decisions to APPROVALS within the plan's trace,
follows the approval records of every instance and polls Telegram. ``main`` wires
it to the bus.
"""

from __future__ import annotations

import asyncio
import logging

from opentelemetry import propagate, trace

from medbay.approver import status
from medbay.approver.alerts import Alerts
from medbay.approver.book import ApprovalBook
from medbay.approver.callbacks import CallbackSigner
from medbay.approver.config import ApproverConfig
from medbay.approver.decisions import Decisions
from medbay.approver.telegram import TelegramChat, make_bot, poll
from medbay.common.bus import Delivery, jetstream, publish_event
from medbay.common.events import AlertRaised, Approval, Plan
from medbay.common.runtime import ServiceRuntime, current_task_cancelling
from medbay.common.streams import APPROVALS
from medbay.common.telemetry import CRITICAL_SPAN_ATTRIBUTE, mark_critical

log = logging.getLogger("medbay.approver")
tracer = trace.get_tracer("medbay.approver")

SWEEP_SECONDS = 1.0


class ApproverService:
    def __init__(self, rt: ServiceRuntime, config: ApproverConfig) -> None:
        self.rt = rt
        self.config = config
        self.bot = (
            make_bot(config.token.get_secret_value(), config.api_base)
            if config.token is not None
            else None
        )
        self.decisions: Decisions | None = None
        self.alerts: Alerts | None = None

    async def start(self) -> None:
        js = jetstream(self.rt.broker)
        config = self.config
        book = await ApprovalBook.open(js, self.rt.settings.nats_replicas)
        chat = None if self.bot is None else TelegramChat(self.bot, config.chat_ids)
        self.alerts = Alerts(book, chat)
        self.decisions = Decisions(
            book,
            self.publish,
            expiry=config.expiry,
            allowed_user_ids=config.allowed_user_ids,
            chat=chat,
            signer=None
            if config.secret is None
            else CallbackSigner(config.secret.get_secret_value()),
            status=lambda waiting: status.snapshot(js, waiting),
            registry=self.rt.registry,
        )
        if self.bot is None:
            log.warning(
                "Telegram is off (no token configured): plans are tracked and expire after "
                "%g min; decide through the gateway or `medbay approve`; alerts are only logged",
                config.expiry_minutes,
            )
        else:
            log.info(
                "Telegram is on: Bot API at %s, %d chat(s), %d allowed user(s), expiry %g min",
                config.api_base,
                len(config.chat_ids),
                len(config.allowed_user_ids),
                config.expiry_minutes,
            )

    async def publish(self, approval: Approval, traceparent: str) -> None:
        """Publish within the plan's trace, so one trace runs from the metric to the fix."""
        parent = propagate.extract({"traceparent": traceparent}) if traceparent else None
        with tracer.start_as_current_span(
            "approver.publish_decision",
            context=parent,
            attributes={
                CRITICAL_SPAN_ATTRIBUTE: True,
                "medbay.plan_id": approval.plan_id,
                "medbay.decision": approval.decision,
            },
        ):
            await publish_event(
                self.rt.broker, approval, stream=APPROVALS, timeout=self.rt.settings.publish_timeout
            )

    async def handle_plans(self, deliveries: list[Delivery[Plan]]) -> None:
        assert self.decisions is not None
        for d in deliveries:
            with trace.use_span(mark_critical(d.span("approver.receive_plan")), end_on_exit=True):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                await self.decisions.on_plan(d.event, carrier.get("traceparent", ""))

    async def handle_approvals(self, deliveries: list[Delivery[Approval]]) -> None:
        assert self.decisions is not None
        for d in deliveries:
            with trace.use_span(
                mark_critical(d.span("approver.receive_approval")), end_on_exit=True
            ):
                await self.decisions.on_approval(d.event)

    async def handle_alerts(self, deliveries: list[Delivery[AlertRaised]]) -> None:
        assert self.alerts is not None
        for d in deliveries:
            with trace.use_span(mark_critical(d.span("approver.deliver_alert")), end_on_exit=True):
                await self.alerts.on_alert(d.event)

    async def watch(self) -> None:
        """Follow the records of every instance (this keeps the expiry timers armed)."""
        assert self.decisions is not None
        while True:
            try:
                async for key, revision, record in self.decisions.book.watch():
                    self.decisions.observe(key, revision, record)
            except Exception:
                if current_task_cancelling():
                    raise
                log.exception("watching the approval records failed; starting over")
            await asyncio.sleep(1.0)

    async def sweep(self) -> None:
        assert self.decisions is not None
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            await self.decisions.sweep()

    async def poll_telegram(self) -> None:
        assert self.bot is not None and self.decisions is not None
        await poll(self.bot, self.decisions)

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.session.close()
