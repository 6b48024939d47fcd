"""``python -m medbay.planner.main``: ISSUES, REQUESTS and RESULTS in, PLANS out.

Wiring only: the bus handlers are in ``service``; the config is read first, and
the service (and scikit-learn with it, seconds to import) loads only once the
config is known to be good, so a bad config is reported at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from medbay.common.access import PLANNER_ISSUES, PLANNER_REQUESTS, PLANNER_RESULTS
from medbay.common.bus import BatchConsumer, consumer
from medbay.common.events import ActionRequested, ActionResult
from medbay.common.runtime import ServiceRuntime
from medbay.common.settings import config_from_command_line
from medbay.common.streams import DEADLETTER, ISSUES, RESULTS
from medbay.planner.config import PlannerConfig, load_config


async def serve(config: PlannerConfig) -> None:
    from medbay.planner.service import PlannerService, parse_issue

    rt = ServiceRuntime("planner")
    service = PlannerService(rt, config)
    # When first created, the durables start with what is recent enough to plan
    # for (issues and requests) or with what comes next (results).
    size, back = config.batch_size, config.max_event_age_seconds
    consumers: list[BatchConsumer[Any]] = [
        consumer(
            rt,
            PLANNER_ISSUES,
            service.handle_issues,
            parse=parse_issue,
            batch_size=size,
            deliver_new=True,
            start_back_seconds=back,
        ),
        consumer(
            rt,
            PLANNER_REQUESTS,
            service.handle_requests,
            ActionRequested,
            batch_size=size,
            deliver_new=True,
            start_back_seconds=back,
        ),
        consumer(
            rt,
            PLANNER_RESULTS,
            service.handle_results,
            ActionResult,
            batch_size=size,
            deliver_new=True,
        ),
    ]

    async def start() -> None:
        await service.start([c.spec for c in consumers])

    await rt.run(
        needs=[ISSUES, RESULTS, DEADLETTER],
        on_start=start,
        tasks=[c.run for c in consumers],
        on_stop=service.stop,
    )


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line("planner", argv, load_config, otherwise="defaults")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
