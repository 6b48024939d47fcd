"""The collector's bus side: every interval, one MetricBatch for this host to METRICS.

``CollectorService`` schedules the scrapes, publishes each batch and reports its
own health and metrics (the latest batch's samples among them); what a scrape reads
is in ``collector`` (host metrics, service checks, directory budgets, span figures,
scrape targets). It owns the OTLP/HTTP trace receiver when one is configured.
``main`` wires it to the bus.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Histogram

from medbay.collector.collector import Collector
from medbay.collector.config import CollectorConfig
from medbay.collector.exposition import LatestBatchExport
from medbay.collector.otlp_http import TraceReceiver
from medbay.common.bus import publish_event
from medbay.common.runtime import ServiceRuntime
from medbay.common.streams import METRICS

log = logging.getLogger("medbay.collector")


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
        self.dropped_operations = Counter(
            "medbay_collector_span_operations_dropped_total",
            "Spans (requests) counted under operation (other): their (service, operation) "
            "was over max_operations in its interval.",
            registry=registry,
        )
        self.dropped_edges = Counter(
            "medbay_collector_span_edges_dropped_total",
            "Calls between services not counted: their edge was over max_operations.",
            registry=registry,
        )
        self.trace_failures = Counter(
            "medbay_collector_spanmetrics_failures_total",
            "Scrapes whose span figures could not be read from the spanmetrics endpoint, "
            "by reason: unreachable, http_status, too_large, unparseable.",
            ["reason"],
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
        self.receiver = None if config.otlp is None else TraceReceiver(config.otlp, rt.registry)
        self.collector = Collector(
            config, max_batch_bytes=rt.settings.max_event_bytes, traces=self.receiver
        )
        self.metrics = CollectorMetrics(rt.registry)
        self.latest = LatestBatchExport()
        rt.registry.register(self.latest)
        self.tracer = rt.tracer_provider.get_tracer("medbay.collector")
        self.last_published = time.monotonic()
        self.stopped = False
        rt.checks["publish"] = self.publish_problem

    def publish_problem(self) -> str | None:
        age = time.monotonic() - self.last_published
        limit = 3 * self.config.interval_seconds + self.rt.settings.publish_timeout
        return None if age <= limit else f"no batch published for {age:.0f} s"

    async def start(self) -> None:
        """Open the trace receiver, if any: its port is taken before anything else
        starts, or start-up ends (``ReceiverError``)."""
        if self.receiver is not None:
            await self.receiver.start()

    async def stop(self) -> None:
        """Close the receiver and the HTTP client; again, does nothing."""
        if self.stopped:
            return
        self.stopped = True
        if self.receiver is not None:
            await self.receiver.stop()
        await self.collector.aclose()

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
                self._count_traces()
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
        self.latest.batch = batch

    def _count_traces(self) -> None:
        traces = self.collector.last_traces
        if traces is not None:
            self.metrics.dropped_operations.inc(traces.dropped_operations)
            self.metrics.dropped_edges.inc(traces.dropped_edges)
        if self.collector.last_trace_failure is not None:
            self.metrics.trace_failures.labels(self.collector.last_trace_failure).inc()

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
