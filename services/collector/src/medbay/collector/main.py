"""``python -m medbay.collector.main``: this host's metrics to METRICS, every interval.

Run it with ``--config PATH`` (or ``MEDBAY_COLLECTOR_CONFIG``); without either it
publishes host metrics only. A bad config file exits with status 2 before
anything connects. Wiring only: the schedule and publishing are in ``service``,
the scrape itself in ``collector``.
"""

from __future__ import annotations

import asyncio
import logging

from medbay.collector.config import CollectorConfig, load_config
from medbay.collector.service import CollectorService
from medbay.common.runtime import ServiceRuntime
from medbay.common.settings import config_from_command_line

log = logging.getLogger("medbay.collector")


async def serve(config: CollectorConfig) -> None:
    rt = ServiceRuntime("collector")
    service = CollectorService(rt, config)
    log.info(
        "collecting for host %s every %s s: %d checks, %d scrape targets, %d directories",
        config.host,
        config.interval_seconds,
        len(config.services),
        len(config.scrape),
        len(config.directories),
    )
    await rt.run(tasks=[service.scrape_forever], on_stop=service.collector.aclose)


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line("collector", argv, load_config, otherwise="host metrics only")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
