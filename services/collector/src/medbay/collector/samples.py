"""Building validated metric samples."""

from __future__ import annotations

from pydantic import TypeAdapter

from medbay.common.events import MetricSample

PERCENT = "%"
BYTES = "bytes"
BYTES_PER_SECOND = "bytes/s"
MS = "ms"
SECONDS = "s"

SAMPLE = TypeAdapter(MetricSample)


def sample(name: str, value: float, unit: str = "", /, **labels: str) -> MetricSample:
    """A sample, validated here so that a bad one fails where it is made, not the batch."""
    return SAMPLE.validate_python(
        {"name": name, "value": float(value), "unit": unit, "labels": labels}
    )
