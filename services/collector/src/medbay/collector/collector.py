"""One scrape of everything: host metrics, service checks, directories and scrape targets."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from medbay.collector.checks import CheckJudge, run_checks
from medbay.collector.config import CollectorConfig
from medbay.collector.directories import DirectoryBudgets
from medbay.collector.host_metrics import HostMetrics
from medbay.collector.scrape import scrape_all
from medbay.common.events import MetricBatch, MetricSample, utc_now

log = logging.getLogger(__name__)

MAX_SAMPLES = 20_000
"""The most samples a MetricBatch may hold."""


def fresh_connection_client() -> httpx.AsyncClient:
    """The HTTP client of checks and scrapes: a new connection for every request.

    A kept-alive connection would sit idle for an interval between two checks,
    about as long as servers keep idle connections open (uvicorn: 5 s), so now
    and then a check would go out on a connection the server was just closing
    and fail with the server up. ``Connection: close`` makes both sides close
    it after the response instead; the price is a TCP handshake per request,
    which ``service_latency_ms`` then includes, as it does for every other check.
    """
    # Direct connections: a proxy from the environment would be measured instead.
    return httpx.AsyncClient(trust_env=False, headers={"Connection": "close"})


class Collector:
    def __init__(self, config: CollectorConfig, *, max_batch_bytes: int | None = None) -> None:
        """``max_batch_bytes``: drop samples from the end (scraped ones first) above this size."""
        self.config = config
        self.max_batch_bytes = max_batch_bytes
        self.last_dropped = 0
        self.host_metrics = HostMetrics(config.top_processes)
        self.directories = DirectoryBudgets(config.directories)
        self.judge = CheckJudge(config, started_at=time.monotonic())
        self.http = fresh_connection_client()

    async def collect_once(self) -> MetricBatch:
        collected_at = utc_now()
        host, directories, results, scraped = await asyncio.gather(
            asyncio.to_thread(self.host_metrics.read),
            asyncio.to_thread(self.directories.read),
            run_checks(self.config.services, self.http),
            scrape_all(self.config.scrape, self.http),
        )
        checks = self.judge.judge(results, now=time.monotonic())
        samples: list[MetricSample] = [*host, *directories, *checks.samples, *scraped]
        batch = MetricBatch(
            host=self.config.host,
            collected_at=collected_at,
            samples=samples[:MAX_SAMPLES],
            check_errors=checks.errors,
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
