"""The collector's latest published batch on its own Prometheus ``/metrics``.

Every sample of the batch becomes a gauge ``medbay_<sample name>`` labelled ``host``
(the batch's) and the sample's labels, their names made valid for Prometheus
(``[a-zA-Z_][a-zA-Z0-9_]*``; a sample's own ``host`` label becomes ``exported_host``).
So Prometheus, Grafana and alert rules made from Medbay's see the numbers the
detector sees: ``medbay_span_service_errors_per_second{host="web-1",service="checkout"}``,
``medbay_cpu_percent{host="web-1"}``. Names in the collector's own namespace
(``medbay_collector_*``, its counters) are left out rather than shown twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

from medbay.common.events import MetricBatch

PREFIX = "medbay_"
OWN_PREFIX = "medbay_collector_"
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """``name`` as a Prometheus label name; the reserved ``__`` start becomes ``_``."""
    name = _INVALID_LABEL_CHARS.sub("_", name)
    if not name or name[0].isdigit():
        name = f"_{name}"
    if name.startswith("__"):
        name = "_" + name.lstrip("_")
    return name


def export_labels(host: str, labels: Mapping[str, str]) -> dict[str, str]:
    """``host`` and the sample's labels, renamed; of two that end up with one name,
    the first in sorted order stays."""
    exported = {"host": host}
    for name, value in sorted(labels.items()):
        renamed = "exported_host" if name == "host" else label_name(name)
        exported.setdefault(renamed, value)
    return exported


class LatestBatchExport:
    """A prometheus_client collector: register it, set ``batch`` after each publish."""

    def __init__(self) -> None:
        self.batch: MetricBatch | None = None

    def collect(self) -> Iterator[Metric]:
        batch = self.batch
        if batch is None:
            return
        families: dict[str, GaugeMetricFamily] = {}
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for s in batch.samples:
            name = PREFIX + s["name"]
            if name.startswith(OWN_PREFIX):
                continue
            labels = export_labels(batch.host, s.get("labels", {}))
            series = (name, tuple(sorted(labels.items())))
            if series in seen:
                continue
            seen.add(series)
            family = families.get(name)
            if family is None:
                unit = s.get("unit")
                family = families[name] = GaugeMetricFamily(
                    name,
                    f"{s['name']} in the collector's latest batch" + (f" ({unit})" if unit else ""),
                )
            family.samples.append(Sample(name, labels, s["value"]))
        yield from families.values()
