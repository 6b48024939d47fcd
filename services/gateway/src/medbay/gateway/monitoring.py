"""What services' traces show, from the collector's trace figures on METRICS.

The collector turns spans into samples of each host's batch: per service
``span_service_*`` (requests and errors per second, error ratio, latency
p50/p95/p99), the same per operation (``span_*`` with labels service and
operation), the calls between services (``service_edge_requests_per_second`` with
labels client and server) and how much it dropped over its limits. Figures come
only for what had spans in the interval, so a service or edge missing from a
host's latest batch had none then: it is no longer ``current``.

Held per host: each service's RED history (``history_points`` points, packed in an
``array``: 56 bytes a point), the current figures of each operation and each edge.
Bounded in all by ``max_services`` (services, and hosts too), ``max_operations`` and
``max_edges`` (the least recently reported go first); operations and edges not reported for
``stale_seconds`` are dropped, services not reported for ``forget_seconds`` too.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from medbay.common.events import MetricBatch
from medbay.gateway.config import MonitoringConfig
from medbay.gateway.schemas import (
    OperationFigures,
    RedPoint,
    ServiceEdge,
    ServiceRed,
    TracedHost,
)

RED = (
    "requests_per_second",
    "errors_per_second",
    "error_ratio",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
)
"""The figures of a point, in the order they are packed."""
SERVICE_SAMPLES = {f"span_service_{name}": index for index, name in enumerate(RED)}
"""Per service (label ``service``): sample name -> figure."""
OPERATION_SAMPLES = {f"span_{name}": index for index, name in enumerate(RED)}
"""Per operation (labels ``service``, ``operation``): sample name -> figure."""
EDGE_SAMPLE = "service_edge_requests_per_second"
DROPPED_OPERATIONS = "spans_dropped_operations"
DROPPED_EDGES = "spans_dropped_edges"
TRACE_SAMPLES = frozenset(
    [*SERVICE_SAMPLES, *OPERATION_SAMPLES, EDGE_SAMPLE, DROPPED_OPERATIONS, DROPPED_EDGES]
)
"""Every sample name of the collector's trace figures: held here, not with host metrics."""
TRACE_KINDS = frozenset({"error_rate", "latency", "no_traffic"})
"""The issue kinds the detector raises from services' trace figures."""

_WIDTH = 1 + len(RED)
"""Numbers per packed point: the time, then the figures."""
_NO_FIGURE = math.nan
"""A figure the batch did not have."""

Figures = list[float]
K = TypeVar("K")
V = TypeVar("V")


def _figure(value: float) -> float | None:
    return None if math.isnan(value) else value


def _point(at: float, figures: Iterable[float]) -> RedPoint:
    """A point of a history: built without validation (its parts are a time and floats
    or None), since a response may hold tens of thousands."""
    values = [_figure(v) for v in figures]
    return RedPoint.model_construct(None, at=_time(at), **dict(zip(RED, values, strict=True)))


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


class _Service:
    __slots__ = ("points",)

    def __init__(self) -> None:
        self.points = array("d")
        """Interleaved (epoch seconds, *figures)."""

    @property
    def last_seen(self) -> float:
        return self.points[-_WIDTH]

    def add(self, at: float, figures: Figures, keep: int) -> None:
        self.points.append(at)
        self.points.extend(figures)
        if len(self.points) >= 2 * keep * _WIDTH:  # trim now and then, not on every point
            del self.points[: len(self.points) - keep * _WIDTH]

    def history(self, points: int) -> list[RedPoint]:
        p = self.points[-points * _WIDTH :]
        return [_point(p[i], p[i + 1 : i + _WIDTH]) for i in range(0, len(p), _WIDTH)]


class _Figures:
    """An operation's or edge's figures, as last reported."""

    __slots__ = ("figures", "seen_at")

    def __init__(self, seen_at: float, figures: Figures) -> None:
        self.seen_at = seen_at
        self.figures = figures


class _Host:
    __slots__ = ("dropped_edges", "dropped_operations", "seen_at")

    def __init__(self, seen_at: float) -> None:
        self.seen_at = seen_at
        """Its latest batch of trace figures (epoch seconds)."""
        self.dropped_operations = _NO_FIGURE
        self.dropped_edges = _NO_FIGURE


def _put(table: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Put ``value`` last (most recently reported), dropping the first over ``limit``."""
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


class MonitoringBoard:
    def __init__(self, config: MonitoringConfig) -> None:
        self.config = config
        self._hosts: OrderedDict[str, _Host] = OrderedDict()
        self._services: OrderedDict[tuple[str, str], _Service] = OrderedDict()
        self._operations: OrderedDict[tuple[str, str, str], _Figures] = OrderedDict()
        self._edges: OrderedDict[tuple[str, str, str], _Figures] = OrderedDict()
        """(host, client, server) -> its requests per second (the one figure)."""

    def __len__(self) -> int:
        """The services held."""
        return len(self._services)

    def apply(self, batch: MetricBatch) -> None:
        """Take in a batch's trace figures; a batch without any, or older than the host's
        latest (a repeat), changes nothing."""
        services: dict[str, Figures] = {}
        operations: dict[tuple[str, str], Figures] = {}
        edges: dict[tuple[str, str], float] = {}
        dropped: dict[str, float] = {}
        for sample in batch.samples:
            name = sample["name"]
            if name not in TRACE_SAMPLES:
                continue
            labels = sample.get("labels") or {}
            service = labels.get("service", "")
            if name in SERVICE_SAMPLES and service:
                figures = services.setdefault(service, [_NO_FIGURE] * len(RED))
                figures[SERVICE_SAMPLES[name]] = sample["value"]
            elif name in OPERATION_SAMPLES and service and labels.get("operation"):
                key = (service, labels["operation"])
                figures = operations.setdefault(key, [_NO_FIGURE] * len(RED))
                figures[OPERATION_SAMPLES[name]] = sample["value"]
            elif name == EDGE_SAMPLE and labels.get("client") and labels.get("server"):
                edges[(labels["client"], labels["server"])] = sample["value"]
            elif name in (DROPPED_OPERATIONS, DROPPED_EDGES):
                dropped[name] = sample["value"]
        if not (services or operations or edges or dropped):
            return
        at = batch.collected_at.timestamp()
        host = self._hosts.get(batch.host)
        if host is not None and at <= host.seen_at:
            return
        host = host or _Host(at)
        host.seen_at = at
        host.dropped_operations = dropped.get(DROPPED_OPERATIONS, _NO_FIGURE)
        host.dropped_edges = dropped.get(DROPPED_EDGES, _NO_FIGURE)
        limits = self.config
        _put(self._hosts, batch.host, host, limits.max_services)
        for service, figures in services.items():
            track = self._services.get((batch.host, service)) or _Service()
            track.add(at, figures, limits.history_points)
            _put(self._services, (batch.host, service), track, limits.max_services)
        for (service, operation), figures in operations.items():
            held = _Figures(at, figures)
            _put(self._operations, (batch.host, service, operation), held, limits.max_operations)
        for (client, server), rate in edges.items():
            _put(self._edges, (batch.host, client, server), _Figures(at, [rate]), limits.max_edges)

    def prune(self, now: datetime) -> None:
        """Forget what has not been reported for too long."""
        stale = (now - timedelta(seconds=self.config.stale_seconds)).timestamp()
        forgotten = (now - timedelta(seconds=self.config.forget_seconds)).timestamp()
        for service in [k for k, s in self._services.items() if s.last_seen < forgotten]:
            del self._services[service]
        for table in (self._operations, self._edges):
            for gone in [k for k, o in table.items() if o.seen_at < stale]:
                del table[gone]
        for name in [n for n, h in self._hosts.items() if h.seen_at < forgotten]:
            del self._hosts[name]

    # --- reading ---------------------------------------------------------------------

    def _current(self, host_name: str, seen_at: float) -> bool:
        """Whether something seen at ``seen_at`` was in the host's latest trace figures."""
        host = self._hosts.get(host_name)
        return host is not None and seen_at == host.seen_at

    def services(
        self, now: datetime, *, host: str | None, service: str | None, points: int
    ) -> list[ServiceRed]:
        """Each service's RED figures (the latest ``points`` of its history), by host and
        service name."""
        forgotten = (now - timedelta(seconds=self.config.forget_seconds)).timestamp()
        stale = (now - timedelta(seconds=self.config.stale_seconds)).timestamp()
        operations: dict[tuple[str, str], list[OperationFigures]] = {}
        for (host_name, service_name, operation), found in self._operations.items():
            if found.seen_at >= stale and _wanted(host_name, service_name, host, service):
                operations.setdefault((host_name, service_name), []).append(
                    OperationFigures(
                        operation=operation,
                        last_seen=_time(found.seen_at),
                        current=self._current(host_name, found.seen_at),
                        **dict(zip(RED, map(_figure, found.figures), strict=True)),
                    )
                )
        found_services = []
        for (host_name, service_name), track in sorted(self._services.items()):
            if track.last_seen < forgotten or not _wanted(host_name, service_name, host, service):
                continue
            history = track.history(min(points, self.config.history_points))
            by_rate = sorted(
                operations.get((host_name, service_name), []),
                key=lambda o: (-(o.requests_per_second or 0.0), o.operation),
            )
            found_services.append(
                ServiceRed(
                    host=host_name,
                    service=service_name,
                    last_seen=history[-1].at,
                    current=self._current(host_name, track.last_seen),
                    latest=history[-1],
                    history=history,
                    operations=by_rate,
                )
            )
        return found_services

    def edges(self, now: datetime, *, host: str | None, service: str | None) -> list[ServiceEdge]:
        """The calls between services not stale yet (of ``service``, as client or server,
        if given), by host, client and server."""
        stale = (now - timedelta(seconds=self.config.stale_seconds)).timestamp()
        return [
            ServiceEdge(
                host=host_name,
                client=client,
                server=server,
                requests_per_second=found.figures[0],
                last_seen=_time(found.seen_at),
                current=self._current(host_name, found.seen_at),
            )
            for (host_name, client, server), found in sorted(self._edges.items())
            if found.seen_at >= stale
            and (host is None or host_name == host)
            and (service is None or service in (client, server))
        ]

    def hosts(self, *, host: str | None) -> list[TracedHost]:
        """The hosts that sent trace figures, by name."""
        return [
            TracedHost(
                host=name,
                last_seen=_time(found.seen_at),
                dropped_operations=_figure(found.dropped_operations),
                dropped_edges=_figure(found.dropped_edges),
            )
            for name, found in sorted(self._hosts.items())
            if host is None or name == host
        ]


def _wanted(host_name: str, service_name: str, host: str | None, service: str | None) -> bool:
    return (host is None or host_name == host) and (service is None or service_name == service)
