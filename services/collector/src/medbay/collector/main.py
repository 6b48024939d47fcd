"""The collector service: every interval, one MetricBatch for this host to METRICS.

Run it with ``python -m medbay.collector.main --config PATH`` (or ``MEDBAY_COLLECTOR_CONFIG``).
A bad config file exits with status 2 before anything connects.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import sys
import time
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from medbay.collector.collector import Collector
from medbay.collector.config import CollectorConfig, ConfigError, load_config
from medbay.common.bus import publish_event
from medbay.common.runtime import ServiceRuntime
from medbay.common.streams import METRICS

log = logging.getLogger("medbay.collector")

CONFIG_ENV = "MEDBAY_COLLECTOR_CONFIG"


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.scrapes = Counter(
            "medbay_collector_scrapes_total", "Scrapes started.", registry=registry
        )
        self.failures = Counter(
            "medbay_collector_scrape_failures_total",
            "Scrapes that published nothing, by the stage that failed.",
            ["stage"],
            registry=registry,
        )
        for stage in ("collect", "publish"):
            self.failures.labels(stage)
        self.duration = Histogram(
            "medbay_collector_scrape_duration_seconds",
            "Time to collect and publish one batch.",
            registry=registry,
        )
        self.samples = Counter(
            "medbay_collector_samples_total", "Samples published.", registry=registry
        )
        self.dropped = Counter(
            "medbay_collector_dropped_samples_total",
            "Samples left out to keep a batch under the size consumers accept.",
            registry=registry,
        )
        self.missed_ticks = Counter(
            "medbay_collector_missed_ticks_total",
            "Scheduled scrapes skipped because the previous one overran its interval.",
            registry=registry,
        )


class CollectorService:
    def __init__(self, rt: ServiceRuntime, config: CollectorConfig) -> None:
        self.rt = rt
        self.config = config
        self.collector = Collector(config, max_batch_bytes=rt.settings.max_event_bytes)
        self.metrics = CollectorMetrics(rt.registry)
        self.tracer = rt.tracer_provider.get_tracer("medbay.collector")
        self.last_published = time.monotonic()
        rt.checks["publish"] = self.publish_problem

    def publish_problem(self) -> str | None:
        age = time.monotonic() - self.last_published
        limit = 3 * self.config.interval_seconds + self.rt.settings.publish_timeout
        return None if age <= limit else f"no batch published for {age:.0f} s"

    async def scrape_once(self) -> None:
        """Collect and publish one batch; a failure is logged and counted, never raised."""
        self.metrics.scrapes.inc()
        # A root span (empty parent context): each scrape is where a trace begins.
        with (
            self.metrics.duration.time(),
            self.tracer.start_as_current_span(
                "collector.scrape", context=otel_context.Context()
            ) as span,
        ):
            stage = "collect"
            try:
                batch = await self.collector.collect_once()
                self.metrics.dropped.inc(self.collector.last_dropped)
                span.set_attribute("medbay.host", batch.host)
                span.set_attribute("medbay.samples", len(batch.samples))
                stage = "publish"
                await publish_event(
                    self.rt.broker, batch, stream=METRICS, timeout=self.rt.settings.publish_timeout
                )
            except Exception as exc:
                self.metrics.failures.labels(stage).inc()
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{stage} failed"))
                log.warning("scrape failed to %s: %r", stage, exc, exc_info=stage == "collect")
                return
        self.last_published = time.monotonic()
        self.metrics.samples.inc(len(batch.samples))

    async def scrape_forever(self) -> None:
        """Scrape on a steady schedule: ticks every interval, whatever each scrape took."""
        loop = asyncio.get_running_loop()
        interval = self.config.interval_seconds
        tick = loop.time()
        while True:
            await self.scrape_once()
            tick += interval
            now = loop.time()
            if now > tick:
                missed = math.ceil((now - tick) / interval)
                self.metrics.missed_ticks.inc(missed)
                tick += missed * interval
            await asyncio.sleep(tick - now)


async def serve(config: CollectorConfig) -> None:
    rt = ServiceRuntime("collector")
    service = CollectorService(rt, config)
    log.info(
        "collecting for host %s every %s s: %d checks, %d scrape targets",
        config.host,
        config.interval_seconds,
        len(config.services),
        len(config.scrape),
    )
    await rt.run(tasks=[service.scrape_forever], on_stop=service.collector.aclose)


def run(config_path: Path | None) -> int:
    """Run the collector until SIGINT/SIGTERM; returns the exit status (2: bad config)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="medbay-collector", description="Publish this host's metrics to Medbay."
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help=f"YAML config file (default: ${CONFIG_ENV}; without either, host metrics only)",
    )
    args = parser.parse_args(argv)
    env_path = os.environ.get(CONFIG_ENV)
    status = run(args.config or (Path(env_path) if env_path else None))
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
