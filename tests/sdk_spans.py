"""Spans made by the official OpenTelemetry SDK, for tests of what takes them in."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

T0 = 1_700_000_000_000_000_000
"""When every span starts (epoch nanoseconds)."""
MS = 1_000_000


def server_spans(service: str, requests: int, errors: int) -> list[ReadableSpan]:
    """``requests`` SERVER spans of ``service`` on /pay taking 1, 2, 3 ... ms, the first
    ``errors`` answering HTTP 500."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("medbay-test")
    for n in range(requests):
        span = tracer.start_span(
            "POST /pay",
            kind=trace.SpanKind.SERVER,
            start_time=T0,
            attributes={
                "http.route": "/pay",
                "http.response.status_code": 500 if n < errors else 200,
            },
        )
        span.end(end_time=T0 + (n + 1) * MS)
    return list(exporter.get_finished_spans())
