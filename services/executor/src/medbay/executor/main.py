"""``python -m medbay.executor.main``: PLANS, APPROVALS and AUDIT in, RESULTS out.

Wiring only: the handlers and the step loop are in ``service``.
"""

from __future__ import annotations

import asyncio

from medbay.common.access import EXECUTOR_APPROVALS, EXECUTOR_AUDIT, EXECUTOR_PLANS
from medbay.common.bus import consumer
from medbay.common.events import Approval, BreakerReset, Plan
from medbay.common.runtime import ServiceRuntime
from medbay.common.settings import config_from_command_line
from medbay.common.streams import PLANS
from medbay.executor.config import ExecutorConfig, load_config
from medbay.executor.service import ExecutorService


async def serve(config: ExecutorConfig) -> None:
    rt = ServiceRuntime("executor")
    rt.info["mode"] = "dry-run" if config.dry_run else "live"
    executor = ExecutorService(rt, config)
    plans = consumer(
        rt,
        EXECUTOR_PLANS,
        executor.handle_plans,
        Plan,
        batch_size=64,
        start_back_seconds=config.max_plan_age_seconds,
    )
    approvals = consumer(
        rt,
        EXECUTOR_APPROVALS,
        executor.handle_approvals,
        Approval,
        batch_size=64,
        start_back_seconds=24 * 3600,
    )
    audit = consumer(rt, EXECUTOR_AUDIT, executor.handle_audit, BreakerReset, batch_size=64)
    await rt.run(
        needs=[PLANS],
        on_start=executor.start,
        tasks=[
            plans.run,
            approvals.run,
            audit.run,
            executor.watch_resolved,
            executor.follow_plan_book,
            executor.take_over,
        ],
        on_stop=executor.stop,
    )


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line(
        "executor", argv, load_config, otherwise="dry-run with no targets"
    )
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
