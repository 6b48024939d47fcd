"""The approver service: PLANS and APPROVALS in, APPROVALS out, people asked on Telegram.

Wiring only: the logic is in ``service``, the records in ``book``, the buttons in
``callbacks``, the texts in ``messages``, Telegram in ``telegram`` and the
``/status`` sources in ``status``.
"""

from __future__ import annotations

import asyncio
import logging
import os

from opentelemetry import propagate, trace

from medbay.approver import status
from medbay.approver.book import ApprovalBook
from medbay.approver.callbacks import CallbackSigner
from medbay.approver.config import ApproverConfig, load_config
from medbay.approver.service import ApproverService
from medbay.approver.telegram import TelegramChat, make_bot, poll
from medbay.common.access import APPROVER_APPROVALS, APPROVER_PLANS
from medbay.common.bus import (
    BatchConsumer,
    ConsumerSpec,
    Delivery,
    jetstream,
    json_parser,
    publish_event,
    wait_for_streams,
)
from medbay.common.events import Approval, Plan
from medbay.common.runtime import ServiceRuntime, current_task_cancelling
from medbay.common.settings import config_from_command_line
from medbay.common.streams import APPROVALS, PLANS

log = logging.getLogger("medbay.approver")
tracer = trace.get_tracer("medbay.approver")

SWEEP_SECONDS = 1.0


class Approver:
    def __init__(self, rt: ServiceRuntime, config: ApproverConfig) -> None:
        self.rt = rt
        self.config = config
        self.bot = (
            make_bot(config.token.get_secret_value(), config.api_base)
            if config.token is not None
            else None
        )
        self.service: ApproverService | None = None

    async def start(self) -> None:
        js = jetstream(self.rt.broker)
        config = self.config
        self.service = ApproverService(
            await ApprovalBook.open(js),
            self.publish,
            expiry=config.expiry,
            allowed_user_ids=config.allowed_user_ids,
            chat=None if self.bot is None else TelegramChat(self.bot, config.chat_ids),
            signer=None
            if config.secret is None
            else CallbackSigner(config.secret.get_secret_value()),
            status=lambda waiting: status.snapshot(js, waiting),
            registry=self.rt.registry,
        )
        if self.bot is None:
            log.warning(
                "Telegram is off (no token configured): plans are tracked and expire after "
                "%g min; decide through the gateway or `medbay approve`",
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
            attributes={"medbay.plan_id": approval.plan_id, "medbay.decision": approval.decision},
        ):
            await publish_event(
                self.rt.broker, approval, stream=APPROVALS, timeout=self.rt.settings.publish_timeout
            )

    async def handle_plans(self, deliveries: list[Delivery[Plan]]) -> None:
        assert self.service is not None
        for d in deliveries:
            with trace.use_span(d.span("approver.receive_plan"), end_on_exit=True):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                await self.service.on_plan(d.event, carrier.get("traceparent", ""))

    async def handle_approvals(self, deliveries: list[Delivery[Approval]]) -> None:
        assert self.service is not None
        for d in deliveries:
            with trace.use_span(d.span("approver.receive_approval"), end_on_exit=True):
                await self.service.on_approval(d.event)

    async def watch(self) -> None:
        """Follow the records of every instance (this keeps the expiry timers armed)."""
        assert self.service is not None
        while True:
            try:
                async for key, revision, record in self.service.book.watch():
                    self.service.observe(key, revision, record)
            except Exception:
                if current_task_cancelling():
                    raise
                log.exception("watching the approval records failed; starting over")
            await asyncio.sleep(1.0)

    async def sweep(self) -> None:
        assert self.service is not None
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            await self.service.sweep()

    async def poll_telegram(self) -> None:
        assert self.bot is not None and self.service is not None
        await poll(self.bot, self.service)

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.session.close()


async def serve(config: ApproverConfig) -> None:
    rt = ServiceRuntime("approver")
    approver = Approver(rt, config)

    plans = BatchConsumer(
        rt.broker,
        ConsumerSpec(
            APPROVER_PLANS.name, PLANS.subjects[0], PLANS, batch_size=64, deliver_new=True
        ),
        parse=json_parser(Plan),
        handler=approver.handle_plans,
        service="approver",
        max_bytes=rt.settings.max_event_bytes,
        registry=rt.registry,
    )
    approvals = BatchConsumer(
        rt.broker,
        ConsumerSpec(
            APPROVER_APPROVALS.name,
            APPROVALS.subjects[0],
            APPROVALS,
            batch_size=64,
            deliver_new=True,
        ),
        parse=json_parser(Approval),
        handler=approver.handle_approvals,
        service="approver",
        max_bytes=rt.settings.max_event_bytes,
        registry=rt.registry,
    )

    async def consume_approvals() -> None:
        await wait_for_streams(rt.broker, [APPROVALS])  # the executor's; may come later
        await approvals.run()

    tasks = [plans.run, consume_approvals, approver.watch, approver.sweep]
    if approver.bot is not None:
        tasks.append(approver.poll_telegram)

    async def start() -> None:
        await approver.start()
        await plans.open()  # before ready: no plan published from then on is missed

    await rt.run(needs=[PLANS], on_start=start, tasks=tasks, on_stop=approver.stop)


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line(
        "approver", argv, lambda path: load_config(path, os.environ), otherwise="Telegram off"
    )
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
