"""``python -m medbay.planner.main``: ISSUES, REQUESTS and RESULTS in, PLANS out.

Wiring only: the bus handlers are in ``service``; the config is read first, and
the service (and scikit-learn with it, seconds to import) loads only once the
config is known to be good, so a bad config is reported at once. So is an
``initial_model`` file that cannot be read or is refused (exit status 2).
The issue consumer starts fetching once the executor's target catalog is known.
Of several replicas one is active (``medbay.common.active``): only it consumes
and plans; the others stand by to take over.
"""

from __future__ import annotations

import asyncio
import sys

from medbay.common.access import PLANNER_ISSUES, PLANNER_REQUESTS, PLANNER_RESULTS, PLANNER_STATE
from medbay.common.active import ActiveReplica
from medbay.common.bus import consumer
from medbay.common.events import ActionRequested, ActionResult
from medbay.common.runtime import ServiceRuntime
from medbay.common.settings import config_from_command_line
from medbay.common.streams import DEADLETTER, ISSUES, RESULTS
from medbay.planner.config import PlannerConfig, load_config


async def serve(config: PlannerConfig) -> None:
    from medbay.planner.modelfile import RefusedModel, read_file
    from medbay.planner.service import PlannerService, parse_issue

    initial = None
    if config.initial_model is not None:
        try:
            initial = read_file(config.initial_model)
        except RefusedModel as exc:
            print(f"medbay planner: bad config: initial_model: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    rt = ServiceRuntime("planner")
    active = ActiveReplica(rt, PLANNER_STATE.name, ttl_seconds=config.active_lease_seconds)
    service = PlannerService(rt, config, initial, is_active=lambda: active.acting)
    # When first created, the durables start with what is recent enough to plan
    # for (issues and requests) or with what comes next (results).
    size, back = config.batch_size, config.max_event_age_seconds
    issues = consumer(
        rt,
        PLANNER_ISSUES,
        service.handle_issues,
        parse=parse_issue,
        batch_size=size,
        deliver_new=True,
        start_back_seconds=back,
    )
    requests = consumer(
        rt,
        PLANNER_REQUESTS,
        service.handle_requests,
        ActionRequested,
        batch_size=size,
        deliver_new=True,
        start_back_seconds=back,
    )
    results = consumer(
        rt,
        PLANNER_RESULTS,
        service.handle_results,
        ActionResult,
        batch_size=size,
        deliver_new=True,
    )

    async def start() -> None:
        await service.start([issues.spec, requests.spec, results.spec])

    async def plan_issues() -> None:
        await service.wait_for_catalog()
        await issues.run()

    await active.run(
        needs=[ISSUES, RESULTS, DEADLETTER],
        on_start=service.open,
        on_active=start,
        tasks=[
            service.watch_catalog,
            plan_issues,
            service.plan_waiting_issues,
            requests.run,
            results.run,
        ],
        on_stop=service.stop,
    )


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line("planner", argv, load_config, otherwise="defaults")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
