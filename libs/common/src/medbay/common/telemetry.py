"""OpenTelemetry tracing and structured JSON logs.

Tracing is configured from the standard ``OTEL_*`` variables: spans are always
created (so trace ids exist in logs and message headers) and exported over OTLP/HTTP
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set,
or to stderr when ``OTEL_TRACES_EXPORTER=console``. Sampling follows
``OTEL_TRACES_SAMPLER`` (the SDK default: parent-based, always on).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

CRITICAL_SPAN_ATTRIBUTE: Final = "medbay.critical"
"""A boolean attribute, true on the spans of the remediation path (the detector's
issue, the planner's plan, the approver's and the executor's handling of a plan): an
OpenTelemetry Collector's tail sampling keeps every trace holding such a span."""

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``<time> <service> <LEVEL> <message>``, then `` trace=<id>`` when there is one."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = trace.get_current_span().get_span_context()
        trace_id = (
            format(ctx.trace_id, "032x") if ctx.is_valid else getattr(record, "trace_id", None)
        )
        if not trace_id:
            return text
        first, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{first} trace={trace_id}{newline}{rest}"


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("faststream", "nats", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def setup_tracing(service: str) -> TracerProvider:
    """Install and return the global tracer provider for ``service``."""
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp" if endpoint else "none")
    if exporter_name == "otlp" and endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(provider)
    return provider


def mark_critical(span: trace.Span) -> trace.Span:
    """``span``, marked as on the remediation path (``CRITICAL_SPAN_ATTRIBUTE``)."""
    span.set_attribute(CRITICAL_SPAN_ATTRIBUTE, True)
    return span


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id in a W3C ``traceparent`` value (``00-<trace>-<span>-<flags>``)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
