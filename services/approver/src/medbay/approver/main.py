"""``python -m medbay.approver.main``: PLANS, APPROVALS and the alerts on RESULTS in,
APPROVALS out (and alerts to Telegram).

Wiring only: the bus handlers are in ``service``, the logic in ``decisions`` and
``alerts``, the records in ``book``, the buttons in ``callbacks``, the texts in
``messages``, Telegram in ``telegram`` and the ``/status`` sources in ``status``.
Of several replicas one is active (``medbay.common.active``): only it consumes,
sweeps and polls Telegram; the others stand by to take over.
"""

from __future__ import annotations

import asyncio
import os

from medbay.approver import alerts
from medbay.approver.config import ApproverConfig, load_config
from medbay.approver.service import ApproverService
from medbay.common.access import (
    APPROVER_ALERTS,
    APPROVER_APPROVALS,
    APPROVER_BOOK,
    APPROVER_PLANS,
)
from medbay.common.active import ActiveReplica
from medbay.common.bus import consumer, wait_for_streams
from medbay.common.events import AlertRaised, Approval, Plan
from medbay.common.runtime import ServiceRuntime
from medbay.common.settings import config_from_command_line
from medbay.common.streams import APPROVALS, PLANS, RESULTS


async def serve(config: ApproverConfig) -> None:
    rt = ServiceRuntime("approver")
    active = ActiveReplica(rt, APPROVER_BOOK.name, ttl_seconds=config.active_lease_seconds)
    approver = ApproverService(rt, config)
    plans = consumer(
        rt, APPROVER_PLANS, approver.handle_plans, Plan, batch_size=64, deliver_new=True
    )
    approvals = consumer(
        rt,
        APPROVER_APPROVALS,
        approver.handle_approvals,
        Approval,
        batch_size=64,
        deliver_new=True,
    )
    alert_consumer = consumer(
        rt,
        APPROVER_ALERTS,
        approver.handle_alerts,
        AlertRaised,
        batch_size=16,
        max_deliver=alerts.ATTEMPTS,
        retry_delay=alerts.RETRY_SECONDS,
        start_back_seconds=alerts.BACKLOG_SECONDS,
    )

    async def consume_approvals() -> None:
        await wait_for_streams(rt.broker, [APPROVALS])  # the executor's; may come later
        await approvals.run()

    async def consume_alerts() -> None:
        await wait_for_streams(rt.broker, [RESULTS])  # the executor's too
        await alert_consumer.run()

    tasks = [plans.run, consume_approvals, consume_alerts, approver.watch, approver.sweep]
    if approver.bot is not None:
        tasks.append(approver.poll_telegram)

    # The active replica's PLANS durable exists before it reports ready (or takes over):
    # no plan published from then on is missed.
    await active.run(
        needs=[PLANS],
        on_start=approver.start,
        on_active=plans.open,
        tasks=tasks,
        on_stop=approver.stop,
    )


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line(
        "approver", argv, lambda path: load_config(path, os.environ), otherwise="Telegram off"
    )
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
