"""``python -m medbay.collector.main``: this host's metrics to METRICS, every interval.

Run it with ``--config PATH`` (or ``MEDBAY_COLLECTOR_CONFIG``); without either it
publishes host metrics only. A bad config file, or an ``otlp`` receiver port that is
taken, exits with status 2 before anything connects. Wiring only: the schedule and
publishing are in ``service``, the scrape itself in ``collector``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from medbay.collector.config import CollectorConfig, load_config
from medbay.collector.otlp_http import ReceiverError
from medbay.collector.service import CollectorService
from medbay.common.runtime import ServiceRuntime, bounded
from medbay.common.settings import config_from_command_line

log = logging.getLogger("medbay.collector")


async def serve(config: CollectorConfig) -> None:
    rt = ServiceRuntime("collector")
    service = CollectorService(rt, config)
    log.info(
        "collecting for host %s every %s s: %d checks, %d scrape targets, %d directories, spans %s",
        config.host,
        config.interval_seconds,
        len(config.services),
        len(config.scrape),
        len(config.directories),
        "over OTLP/HTTP" if config.otlp else "from spanmetrics" if config.spanmetrics else "off",
    )
    try:
        await service.start()
    except ReceiverError as exc:
        log.error("%s", exc)
        print(f"medbay collector: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    try:
        await rt.run(tasks=[service.scrape_forever], on_stop=service.stop)
    finally:  # also when start-up never got as far as the stop hook
        await bounded(service.stop(), "stopping the collector")


def main(argv: list[str] | None = None) -> None:
    config = config_from_command_line("collector", argv, load_config, otherwise="host metrics only")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
