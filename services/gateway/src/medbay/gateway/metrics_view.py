"""Current metric values per host, with a short history per series.

Bounded three ways: hosts (the least recently reporting go first), series per
host (new ones beyond the limit are counted, not kept) and points per series.
Points are packed in an ``array`` (16 bytes each) rather than tuples (~100).

The collector's trace figures (``span_*``, ``service_edge_*``: many series per host)
are not held here but in ``medbay.gateway.monitoring``; a batch of nothing else adds
no host.

The collector's ``service_up{service=...}`` series (1 up, 0 down) are also shown
as the services it checks, each with when its current state began (as far as the
history held shows).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from datetime import UTC, datetime

from medbay.common.events import MetricBatch
from medbay.gateway.config import MetricsConfig
from medbay.gateway.monitoring import TRACE_SAMPLES
from medbay.gateway.schemas import CheckedService, HostMetrics, SeriesValue

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
SERVICE_UP = "service_up"
"""The collector's check of a service: 1 when up, 0 when down; label ``service``."""


class _Series:
    __slots__ = ("changed_at", "labels", "name", "points", "unit", "value")

    def __init__(self, name: str, labels: dict[str, str], unit: str | None) -> None:
        self.name = name
        self.labels = labels
        self.unit = unit
        self.value = 0.0
        self.points = array("d")
        """Interleaved (epoch seconds, value)."""
        self.changed_at = 0.0
        """When the current value was first reported (epoch seconds)."""

    def add(self, at: float, value: float, keep: int) -> None:
        if not self.points or value != self.value:
            self.changed_at = at
        self.value = value
        self.points.extend((at, value))
        if len(self.points) >= 4 * keep:  # trim now and then, not on every point
            del self.points[: len(self.points) - 2 * keep]

    def history(self, keep: int) -> list[tuple[datetime, float]]:
        p = self.points[-2 * keep :]
        return [(datetime.fromtimestamp(p[i], UTC), p[i + 1]) for i in range(0, len(p), 2)]


class _Host:
    __slots__ = ("collected_at", "dropped", "series")

    def __init__(self, collected_at: datetime) -> None:
        self.collected_at = collected_at
        self.series: dict[SeriesKey, _Series] = {}
        self.dropped = 0


class MetricsBoard:
    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self._hosts: OrderedDict[str, _Host] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hosts)

    def apply(self, batch: MetricBatch) -> None:
        samples = [s for s in batch.samples if s["name"] not in TRACE_SAMPLES]
        if not samples and batch.samples:
            return  # trace figures only
        host = self._hosts.get(batch.host)
        if host is None:
            host = self._hosts[batch.host] = _Host(batch.collected_at)
            while len(self._hosts) > self.config.max_hosts:
                self._hosts.popitem(last=False)
        elif batch.collected_at < host.collected_at:
            return  # older than what is shown: a repeat
        self._hosts.move_to_end(batch.host)
        host.collected_at = batch.collected_at
        at = batch.collected_at.timestamp()
        keep = self.config.history_points
        for sample in samples:
            labels = sample.get("labels") or {}
            key = (sample["name"], tuple(sorted(labels.items())))
            series = host.series.get(key)
            if series is None:
                if len(host.series) >= self.config.max_series_per_host:
                    host.dropped += 1
                    continue
                series = host.series[key] = _Series(sample["name"], labels, sample.get("unit"))
            series.add(at, sample["value"], keep)

    def prune(self, older_than: datetime) -> None:
        """Forget hosts that have not reported since ``older_than``."""
        for name in [n for n, h in self._hosts.items() if h.collected_at < older_than]:
            del self._hosts[name]

    def hosts(self, name: str | None = None) -> list[HostMetrics]:
        """Every host's current values (of metric ``name`` only, if given), by host name."""
        return [self._view(h, self._hosts[h], name, False) for h in sorted(self._hosts)]

    def checked_services(self) -> list[CheckedService]:
        """Every service the collector checks, by host and service name."""
        found = [
            CheckedService(
                host=name,
                service=series.labels.get("service", ""),
                up=series.value >= 1,
                since=datetime.fromtimestamp(series.changed_at, UTC),
                checked_at=datetime.fromtimestamp(series.points[-2], UTC),
            )
            for name, host in self._hosts.items()
            for series in host.series.values()
            if series.name == SERVICE_UP and series.labels.get("service")
        ]
        return sorted(found, key=lambda c: (c.host, c.service))

    def host(self, host: str, name: str | None = None, history: bool = True) -> HostMetrics | None:
        found = self._hosts.get(host)
        return None if found is None else self._view(host, found, name, history)

    def _view(self, name: str, host: _Host, metric: str | None, history: bool) -> HostMetrics:
        keep = self.config.history_points
        series = [
            SeriesValue(
                name=s.name,
                labels=s.labels,
                unit=s.unit,
                value=s.value,
                history=s.history(keep) if history else None,
            )
            for s in host.series.values()
            if metric is None or s.name == metric
        ]
        return HostMetrics(
            host=name, collected_at=host.collected_at, series=series, dropped_series=host.dropped
        )
