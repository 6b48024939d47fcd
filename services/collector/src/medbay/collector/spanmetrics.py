"""Span figures from an OpenTelemetry Collector's spanmetrics and servicegraph connectors.

Where spans already go to an OpenTelemetry Collector, its ``spanmetrics`` connector
counts them (``calls`` per service, span name, kind and status, and a ``duration``
histogram) and its ``servicegraph`` connector counts the calls between services;
its Prometheus exporter shows them as cumulative counters. This module reads that
text every scrape and turns what the counters grew by since the previous scrape
into the same :class:`RedSnapshot` (so the same samples) as the OTLP receiver:

- requests: ``calls`` of SERVER and CONSUMER spans, by (``service_name``, the
  operation: ``http_route`` when the connector has it as a dimension, as the
  shipped config does, else ``span_name``, as the receiver names operations);
  errors: those with ``status_code`` STATUS_CODE_ERROR;
- percentiles: from the histogram's bucket increases, interpolated within the
  bucket as PromQL's ``histogram_quantile`` does (so within bucket resolution);
- edges: the servicegraph request counter's increase by (``client``, ``server``).

The first scrape is the baseline and gives no figures. A counter lower than at the
previous scrape was reset (the OpenTelemetry Collector restarted, or the series
expired and came back): its whole value is the increase. A series new since the
previous scrape counts whole too. At most ``max_operations`` operations and edges
are kept per interval, the busiest: the others are counted under operation
``(other)`` of their service (past twice the limit, under service ``(other)``) and
as dropped, like the receiver does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from medbay.collector.config import SpanmetricsScrape
from medbay.collector.scrape import ACCEPT
from medbay.collector.spans import (
    MAX_LABEL_CHARS,
    OTHER,
    UNKNOWN_SERVICE,
    EdgeRate,
    Percentiles,
    RedSnapshot,
    operation_red,
    service_red,
)

log = logging.getLogger(__name__)

ENTRY_KINDS = frozenset({"SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"})
ERROR_STATUS = "STATUS_CODE_ERROR"
MAX_EXPOSITION_BYTES = 64 * 1024 * 1024
"""A larger exposition is refused (reason ``too_large``) rather than held in memory."""
QUANTILES = (0.5, 0.95, 0.99)

_Series = tuple[str, tuple[tuple[str, str], ...]]
"""A sample's name and its labels, sorted."""
_Key = tuple[str, str]
"""(service, operation), or (client, server)"""


class SpanmetricsError(Exception):
    """A scrape that gave no figures; ``reason`` is a short label for counting."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class _Operation:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    """Increase of each cumulative bucket, by its upper bound in ms."""

    def merge(self, other: _Operation) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for bound, count in other.buckets.items():
            self.buckets[bound] += count


class SpanmetricsDeltas:
    """Successive expositions in, one :class:`RedSnapshot` per interval out."""

    def __init__(self, config: SpanmetricsScrape) -> None:
        self.config = config
        self._bucket_name = f"{config.duration_metric}_bucket"
        self._to_ms = 1000.0 if config.duration_metric.endswith("_seconds") else 1.0
        self._previous: dict[_Series, float] | None = None
        self._previous_at = 0.0

    def read(self, text: str, now: float) -> RedSnapshot | None:
        """The figures since the previous exposition (None for the first);
        :class:`SpanmetricsError` if ``text`` is not the Prometheus text format."""
        current = self._counters(text)
        previous, self._previous = self._previous, current
        elapsed, self._previous_at = now - self._previous_at, now
        if previous is None:
            return None
        increases = {
            series: value - before if (before := previous.get(series, 0.0)) <= value else value
            for series, value in current.items()
        }
        return self._snapshot(increases, max(elapsed, 1e-3))

    def _counters(self, text: str) -> dict[_Series, float]:
        """The samples used: calls and duration buckets of entry spans, and edges."""
        wanted = {self.config.calls_metric, self._bucket_name, self.config.edges_metric}
        counters: dict[_Series, float] = {}
        try:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name not in wanted or not math.isfinite(s.value):
                        continue
                    if s.name != self.config.edges_metric and (
                        s.labels.get("span_kind") not in ENTRY_KINDS
                    ):
                        continue
                    counters[s.name, tuple(sorted(s.labels.items()))] = s.value
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise SpanmetricsError(
                "unparseable", f"not the Prometheus text format: {exc}"
            ) from None
        return counters

    def _snapshot(self, increases: dict[_Series, float], seconds: float) -> RedSnapshot:
        operations: dict[_Key, _Operation] = defaultdict(_Operation)
        edges: dict[_Key, float] = defaultdict(float)
        for (name, label_items), increase in increases.items():
            labels = dict(label_items)
            if name == self.config.edges_metric:
                edges[_cut(labels.get("client", "")), _cut(labels.get("server", ""))] += increase
                continue
            key = (
                _cut(labels.get("service_name") or UNKNOWN_SERVICE),
                _cut(labels.get("http_route") or labels.get("span_name", "")),
            )
            if name == self.config.calls_metric:
                operations[key].requests += increase
                if labels.get("status_code") == ERROR_STATUS:
                    operations[key].errors += increase
            else:
                bound = _bound(labels.get("le"))
                if bound is not None:
                    operations[key].buckets[bound * self._to_ms] += increase
        kept, dropped_operations = _fold(operations, self.config.max_operations)
        kept_edges, dropped_edges = _busiest_edges(edges, self.config.max_operations)
        services: dict[str, _Operation] = defaultdict(_Operation)
        for (service, _), figures in kept.items():
            services[service].merge(figures)
        return RedSnapshot(
            interval_seconds=seconds,
            services=tuple(
                service_red(service, f.requests, f.errors, seconds, *_latency(f.buckets))
                for service, f in sorted(services.items())
            ),
            operations=tuple(
                operation_red(service, op, f.requests, f.errors, seconds, *_latency(f.buckets))
                for (service, op), f in sorted(kept.items())
            ),
            edges=tuple(
                EdgeRate(client, server, calls / seconds)
                for (client, server), calls in sorted(kept_edges.items())
            ),
            dropped_operations=round(dropped_operations),
            dropped_edges=round(dropped_edges),
        )


def _cut(text: str) -> str:
    return text[:MAX_LABEL_CHARS]


def _bound(le: str | None) -> float | None:
    try:
        return None if le is None else float(le)
    except ValueError:
        return None


def _fold(operations: dict[_Key, _Operation], limit: int) -> tuple[dict[_Key, _Operation], float]:
    """The ``limit`` busiest operations that had requests; the others folded into
    ``(other)``, and how many requests were folded."""
    busy = sorted(
        ((key, f) for key, f in operations.items() if f.requests > 0),
        key=lambda item: (-item[1].requests, item[0]),
    )
    kept: dict[_Key, _Operation] = dict(busy[:limit])
    folded = 0.0
    for (service, _), figures in busy[limit:]:
        target = (service, OTHER)
        if target not in kept and len(kept) >= 2 * limit:
            target = (OTHER, OTHER)
        kept.setdefault(target, _Operation()).merge(figures)
        folded += figures.requests
    return kept, folded


def _busiest_edges(edges: dict[_Key, float], limit: int) -> tuple[dict[_Key, float], float]:
    busy = sorted(((k, calls) for k, calls in edges.items() if calls > 0), key=lambda i: -i[1])
    return dict(busy[:limit]), sum(calls for _, calls in busy[limit:])


def _latency(buckets: dict[float, float]) -> tuple[Percentiles | None, int]:
    """p50, p95 and p99 from bucket increases, and how many durations they hold."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][0] != math.inf or ordered[-1][1] <= 0:
        return None, 0
    cumulative: list[tuple[float, float]] = []
    highest = 0.0
    for bound, count in ordered:  # as PromQL: a count below the one before it is raised
        highest = max(highest, count)
        cumulative.append((bound, highest))
    p50, p95, p99 = (histogram_quantile(q, cumulative) for q in QUANTILES)
    if p50 is None or p95 is None or p99 is None:
        return None, 0
    return (p50, p95, p99), round(highest)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """PromQL's ``histogram_quantile`` over (upper bound, cumulative count) pairs sorted
    by bound, the last one +Inf: linear within the bucket where the rank falls; the
    highest finite bound when it falls in the +Inf bucket; None without a finite one."""
    pairs = list(buckets)
    if len(pairs) < 2:
        return None
    rank = q * pairs[-1][1]
    index = next(i for i, (_, count) in enumerate(pairs) if count >= rank)
    if index == len(pairs) - 1:
        return pairs[-2][0]
    upper, count = pairs[index]
    if index == 0:
        lower, below = (upper if upper <= 0 else 0.0), 0.0
    else:
        lower, below = pairs[index - 1]
    if count == below:
        return upper
    return lower + (upper - lower) * (rank - below) / (count - below)


class SpanmetricsReader:
    """Fetches the exposition every scrape; figures from the second scrape on."""

    def __init__(
        self,
        config: SpanmetricsScrape,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.http = http
        self.deltas = SpanmetricsDeltas(config)
        self._clock = clock

    async def read(self) -> RedSnapshot | None:
        """:class:`SpanmetricsError` when the exposition cannot be had or read."""
        text = await self._fetch()
        return await asyncio.to_thread(self.deltas.read, text, self._clock())

    async def _fetch(self) -> str:
        url, timeout = str(self.config.url), self.config.timeout_seconds
        chunks: list[bytes] = []
        size = 0
        try:
            async with (
                asyncio.timeout(timeout),
                self.http.stream("GET", url, headers={"Accept": ACCEPT}, timeout=timeout) as answer,
            ):
                if answer.status_code != 200:
                    raise SpanmetricsError(
                        "http_status", f"{url} answered HTTP {answer.status_code}"
                    )
                async for chunk in answer.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_EXPOSITION_BYTES:
                        raise SpanmetricsError(
                            "too_large", f"{url} sent over {MAX_EXPOSITION_BYTES} bytes"
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise SpanmetricsError(
                "unreachable", f"{url}: no answer within {timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise SpanmetricsError("unreachable", f"{url}: {exc!r}") from None
        try:
            return b"".join(chunks).decode()
        except UnicodeDecodeError as exc:
            raise SpanmetricsError("unparseable", f"{url}: not UTF-8 text: {exc}") from None
