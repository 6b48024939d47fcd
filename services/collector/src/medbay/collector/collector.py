"""One scrape of everything: host metrics, service checks, directories, span figures and
scrape targets."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import httpx

from medbay.collector.checks import CheckJudge, run_checks
from medbay.collector.config import CollectorConfig
from medbay.collector.directories import DirectoryBudgets
from medbay.collector.host_metrics import HostMetrics
from medbay.collector.scrape import scrape_all
from medbay.collector.spanmetrics import SpanmetricsError, SpanmetricsReader
from medbay.collector.spans import RedSnapshot, red_samples
from medbay.common.events import MAX_SAMPLES, MetricBatch, MetricSample, SampleColumns, utc_now

log = logging.getLogger(__name__)


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


class TraceIntake(Protocol):
    """Where span figures come from: the OTLP receiver, or a spanmetrics scrape."""

    async def read(self) -> RedSnapshot | None:
        """The figures since the previous read; None when there are none yet."""
        ...


class Collector:
    def __init__(
        self,
        config: CollectorConfig,
        *,
        max_batch_bytes: int | None = None,
        traces: TraceIntake | None = None,
    ) -> None:
        """``max_batch_bytes``: drop samples from the end (scraped ones first) above this size.
        ``traces``: the OTLP receiver, when ``otlp`` is configured (it is started and
        stopped with the service); a ``spanmetrics`` scrape is made here."""
        self.config = config
        self.max_batch_bytes = max_batch_bytes
        self.last_dropped = 0
        self.host_metrics = HostMetrics(config.top_processes)
        self.directories = DirectoryBudgets(config.directories)
        self.judge = CheckJudge(config, started_at=time.monotonic())
        self.http = fresh_connection_client()
        self.traces = traces
        if config.spanmetrics is not None:
            self.traces = SpanmetricsReader(config.spanmetrics, self.http)
        intake = config.otlp or config.spanmetrics
        self.min_requests_for_ratio = 5 if intake is None else intake.min_requests_for_ratio
        self.last_traces: RedSnapshot | None = None
        """The span figures of the last scrape, if it had any."""
        self.last_trace_failure: str | None = None
        """Why the last scrape had no span figures, when they could not be read."""

    async def collect_once(self) -> MetricBatch:
        collected_at = utc_now()
        host, directories, results, traces, scraped = await asyncio.gather(
            asyncio.to_thread(self.host_metrics.read),
            asyncio.to_thread(self.directories.read),
            run_checks(self.config.services, self.http),
            self._read_traces(),
            scrape_all(self.config.scrape, self.http),
        )
        checks = self.judge.judge(results, now=time.monotonic())
        samples: list[MetricSample] = [*host, *directories, *checks.samples, *traces, *scraped]
        batch = MetricBatch(
            host=self.config.host,
            collected_at=collected_at,
            samples=SampleColumns.of(samples[:MAX_SAMPLES]),
            check_errors=checks.errors,
        )
        return self._fit(batch, samples)

    async def _read_traces(self) -> list[MetricSample]:
        """The span samples; a spanmetrics scrape that fails is logged when its reason
        changes, and this batch goes out without them."""
        self.last_traces = None
        if self.traces is None:
            return []
        failure = self.last_trace_failure
        try:
            snapshot = await self.traces.read()
        except SpanmetricsError as exc:
            self.last_trace_failure = exc.reason
            if exc.reason != failure:
                log.warning("span figures not read (%s): %s", exc.reason, exc)
            return []
        self.last_trace_failure = None
        if failure is not None:
            log.info("span figures read again")
        if snapshot is None:
            return []
        self.last_traces = snapshot
        return red_samples(snapshot, min_requests_for_ratio=self.min_requests_for_ratio)

    def _fit(self, batch: MetricBatch, samples: list[MetricSample]) -> MetricBatch:
        """The batch with as many of ``samples`` as fit, from the start."""
        if self.max_batch_bytes is not None:
            size = len(batch.model_dump_json())
            while size > self.max_batch_bytes and batch.samples:
                keep = int(len(batch.samples) * self.max_batch_bytes / size * 0.95)
                batch = batch.model_copy(update={"samples": SampleColumns.of(samples[:keep])})
                size = len(batch.model_dump_json())
        total = len(samples)
        self.last_dropped = total - len(batch.samples)
        if self.last_dropped:
            log.warning("batch too large: dropped %d of %d samples", self.last_dropped, total)
        return batch

    async def aclose(self) -> None:
        await self.http.aclose()
