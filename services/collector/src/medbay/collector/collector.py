"""One scrape of everything: host metrics, service checks and scrape targets."""

from __future__ import annotations

import asyncio
import logging

import httpx

from medbay.collector.checks import run_checks
from medbay.collector.config import CollectorConfig
from medbay.collector.host_metrics import HostMetrics
from medbay.collector.scrape import scrape_all
from medbay.common.events import MetricBatch, MetricSample, utc_now

log = logging.getLogger(__name__)

MAX_SAMPLES = 20_000
"""The most samples a MetricBatch may hold."""


class Collector:
    def __init__(self, config: CollectorConfig, *, max_batch_bytes: int | None = None) -> None:
        """``max_batch_bytes``: drop samples from the end (scraped ones first) above this size."""
        self.config = config
        self.max_batch_bytes = max_batch_bytes
        self.last_dropped = 0
        self.host_metrics = HostMetrics(config.top_processes)
        # Direct connections: a proxy from the environment would be measured instead.
        self.http = httpx.AsyncClient(trust_env=False)

    async def collect_once(self) -> MetricBatch:
        collected_at = utc_now()
        host, checks, scraped = await asyncio.gather(
            asyncio.to_thread(self.host_metrics.read),
            run_checks(self.config.services, self.http),
            scrape_all(self.config.scrape, self.http),
        )
        samples: list[MetricSample] = [*host, *checks, *scraped]
        batch = MetricBatch(
            host=self.config.host, collected_at=collected_at, samples=samples[:MAX_SAMPLES]
        )
        return self._fit(batch, len(samples))

    def _fit(self, batch: MetricBatch, total: int) -> MetricBatch:
        if self.max_batch_bytes is not None:
            size = len(batch.model_dump_json())
            while size > self.max_batch_bytes and batch.samples:
                keep = int(len(batch.samples) * self.max_batch_bytes / size * 0.95)
                batch = batch.model_copy(update={"samples": batch.samples[:keep]})
                size = len(batch.model_dump_json())
        self.last_dropped = total - len(batch.samples)
        if self.last_dropped:
            log.warning("batch too large: dropped %d of %d samples", self.last_dropped, total)
        return batch

    async def aclose(self) -> None:
        await self.http.aclose()
