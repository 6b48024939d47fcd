"""RED metrics and service dependency edges from OpenTelemetry spans.

Services that already export traces over OTLP/HTTP can send them to the collector,
which turns them into the figures an operator looks at first: per service and
operation the Rate of requests, the Errors among them and their Duration
(p50/p95/p99), plus the edges of the call graph (which service calls which, how
often). This module is the pure part: decoding an OTLP/HTTP trace body
(:func:`decode_traces`), aggregating spans over an interval (:class:`RedAggregator`)
and turning the result into metric samples (:func:`red_samples`).

Memory and cardinality are bounded: at most ``max_operations`` (service, operation)
keys per interval (spans of further keys are counted under operation ``(other)`` of
their service, and reported as ``spans_dropped_operations``), at most
``RESERVOIR_SIZE`` durations per key (reservoir sampling), at most ``max_operations``
edges, and the last ``MAX_REMEMBERED_SPANS`` client spans for matching calls across
batches.

A body that cannot be decoded raises :class:`SpanError`, whose message says what
is wrong; the HTTP endpoint (still to be built) answers it with a 400.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from medbay.collector.samples import MS, sample
from medbay.common.events import MetricSample

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

UNKNOWN_SERVICE = "unknown_service"
"""The service of spans whose resource has no ``service.name``, as the SDKs say."""
OTHER = "(other)"
"""The operation (and, past twice the limit, the service) of spans over the limit."""
RESERVOIR_SIZE = 2048
"""Durations kept per (service, operation) per interval for the percentiles."""
MAX_REMEMBERED_SPANS = 100_000
"""Client spans remembered (oldest forgotten first) to match later server spans."""
MAX_LABEL_CHARS = 200
"""Service, operation and peer names are cut to this length before use as labels."""
PER_SECOND = "1/s"

_ID_DIGITS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
_ENTRY_KINDS = frozenset({"SERVER", "CONSUMER"})
_ROOT_KINDS = frozenset({"INTERNAL", "UNSPECIFIED"})
_KIND_PREFIX = "SPAN_KIND_"


class SpanError(ValueError):
    """A trace body that is not a valid OTLP/HTTP ExportTraceServiceRequest."""


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """What the collector needs of one span."""

    service: str
    operation: str
    kind: str
    start_ns: int
    end_ns: int
    duration_ms: float
    error: bool
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    peer: str | None


def decode_traces(body: bytes, content_type: str) -> list[SpanRecord]:
    """The spans of an OTLP/HTTP trace export body; :class:`SpanError` if it is not one."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    request = ExportTraceServiceRequest()
    if media_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError, RecursionError) as exc:
            raise SpanError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    elif media_type == JSON:
        _parse_json(body, request)
    else:
        raise SpanError(f"unsupported content type {content_type!r}: send {PROTOBUF} or {JSON}")
    return list(_records(request))


def _parse_json(body: bytes, request: ExportTraceServiceRequest) -> None:
    """Parse OTLP JSON: ids are hex there, where protobuf's JSON mapping wants base64."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SpanError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SpanError(f"an OTLP JSON body is an object, not {type(document).__name__}")
    for path, holder in _id_holders(document):
        for key, digits in _ID_DIGITS.items():
            value = holder.get(key)
            if value in (None, ""):
                continue
            if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", value):
                raise SpanError(f"{path}.{key}: not {digits} hex digits")
            holder[key] = base64.b64encode(bytes.fromhex(value)).decode()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise SpanError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None


def _id_holders(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every span and span link in an OTLP JSON document, with its path."""
    for i, resource_spans in _items(document, "resourceSpans"):
        for j, scope_spans in _items(resource_spans, "scopeSpans"):
            for k, span in _items(scope_spans, "spans"):
                path = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                yield path, span
                for m, link in _items(span, "links"):
                    yield f"{path}.links[{m}]", link


def _items(parent: dict[str, Any], key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The objects in ``parent[key]`` (camelCase or snake_case); structural errors are
    left for the protobuf parser to report."""
    snake = re.sub(r"[A-Z]", lambda m: "_" + m.group().lower(), key)
    values = parent.get(key, parent.get(snake))
    if isinstance(values, list):
        yield from ((n, v) for n, v in enumerate(values) if isinstance(v, dict))


def _records(request: ExportTraceServiceRequest) -> Iterator[SpanRecord]:
    for resource_spans in request.resource_spans:
        service = _attributes(resource_spans.resource.attributes).get("service.name")
        service_name = service if isinstance(service, str) and service else UNKNOWN_SERVICE
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield _record(service_name, span)


def _record(service: str, span: Span) -> SpanRecord:
    attributes = _attributes(span.attributes)
    kind = _kind_name(span.kind)
    route = attributes.get("http.route")
    status = attributes.get("http.response.status_code", attributes.get("http.status_code"))
    http_failed = kind == "SERVER" and _as_int(status) >= 500
    peer: str | None = None
    if kind == "CLIENT":
        for key in ("peer.service", "server.address"):
            value = attributes.get(key)
            if isinstance(value, str) and value:
                peer = value
                break
    return SpanRecord(
        service=service,
        operation=route if isinstance(route, str) and route else span.name,
        kind=kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        duration_ms=max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        error=span.status.code == Status.STATUS_CODE_ERROR or http_failed,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        peer=peer,
    )


def _kind_name(kind: int) -> str:
    """``SERVER`` for SPAN_KIND_SERVER; the number itself for a kind this release lacks."""
    try:
        return str(Span.SpanKind.Name(kind)).removeprefix(_KIND_PREFIX)
    except ValueError:
        return str(kind)


def _attributes(attributes: Iterable[KeyValue]) -> dict[str, str | int | float | bool]:
    """The scalar attributes; arrays, maps and bytes are of no use here."""
    scalars: dict[str, str | int | float | bool] = {}
    for attribute in attributes:
        value = _scalar(attribute.value)
        if value is not None:
            scalars[attribute.key] = value
    return scalars


def _scalar(value: AnyValue) -> str | int | float | bool | None:
    match value.WhichOneof("value"):
        case "string_value":
            return value.string_value
        case "int_value":
            return value.int_value
        case "double_value":
            return value.double_value
        case "bool_value":
            return value.bool_value
    return None


def _as_int(value: object) -> int:
    """An HTTP status code given as a number or a string; 0 when it is neither."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return 0


# --- aggregation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationRed:
    """Rate, errors and duration of one (service, operation) over one interval."""

    service: str
    operation: str
    requests_per_second: float
    errors_per_second: float
    error_ratio: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_samples: int
    """How many durations the percentiles were computed from (at most RESERVOIR_SIZE)."""


@dataclass(frozen=True, slots=True)
class EdgeRate:
    """Calls from one service to another over one interval."""

    client: str
    server: str
    requests_per_second: float


@dataclass(frozen=True, slots=True)
class RedSnapshot:
    """One interval's figures, sorted by service and operation (by client and server)."""

    interval_seconds: float
    operations: tuple[OperationRed, ...]
    edges: tuple[EdgeRate, ...]
    dropped_operations: int
    """Spans counted under ``(other)`` because their key was over the limit."""
    dropped_edges: int
    """Calls not counted because their edge was over the limit."""


@dataclass(slots=True)
class _Stats:
    requests: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)


@dataclass(slots=True)
class _Client:
    service: str
    peer: str | None
    matched: bool = False


_SpanKey = tuple[bytes, bytes]
"""(trace id, span id)"""
_V = TypeVar("_V")


class RedAggregator:
    """Accumulates spans into per-interval RED figures and call edges."""

    def __init__(self, max_operations: int = 1000, *, seed: int = 0) -> None:
        if max_operations < 1:
            raise ValueError("max_operations must be at least 1")
        self._max = max_operations
        self._random = random.Random(seed)
        self._stats: dict[tuple[str, str], _Stats] = {}
        self._edges: dict[tuple[str, str], int] = {}
        self._dropped_operations = 0
        self._dropped_edges = 0
        self._clients: dict[_SpanKey, _Client] = {}
        """Recent client spans, across intervals, oldest first."""
        self._new_clients: dict[_SpanKey, _Client] = {}
        """This interval's unmatched client spans that name a peer."""
        self._waiting: dict[_SpanKey, list[str]] = {}
        """This interval's server spans (their services) by their not-yet-seen parent."""

    def add(self, records: Iterable[SpanRecord]) -> None:
        """Count spans into the current interval."""
        for record in records:
            if record.kind == "CLIENT":
                self._add_client(record)
            elif record.kind == "SERVER" and record.parent_span_id:
                self._add_server(record)
            if record.kind in _ENTRY_KINDS or (
                record.kind in _ROOT_KINDS and not record.parent_span_id
            ):
                self._count(record)

    def flush(self, interval_seconds: float) -> RedSnapshot:
        """The figures since the last flush, over ``interval_seconds``; starts a new interval."""
        if not interval_seconds > 0:
            raise ValueError("the interval must be positive")
        for client in self._new_clients.values():
            if client.peer is not None:
                self._count_edge(client.service, client.peer)
        operations = tuple(
            _operation(service, operation, stats, interval_seconds)
            for (service, operation), stats in sorted(self._stats.items())
        )
        edges = tuple(
            EdgeRate(client, server, count / interval_seconds)
            for (client, server), count in sorted(self._edges.items())
        )
        snapshot = RedSnapshot(
            interval_seconds, operations, edges, self._dropped_operations, self._dropped_edges
        )
        self._stats, self._edges, self._new_clients, self._waiting = {}, {}, {}, {}
        self._dropped_operations = self._dropped_edges = 0
        return snapshot

    def _count(self, record: SpanRecord) -> None:
        stats = self._stats_for(_label(record.service), _label(record.operation))
        stats.requests += 1
        stats.errors += record.error
        if len(stats.durations) < RESERVOIR_SIZE:
            stats.durations.append(record.duration_ms)
        else:
            slot = self._random.randrange(stats.requests)
            if slot < RESERVOIR_SIZE:
                stats.durations[slot] = record.duration_ms

    def _stats_for(self, service: str, operation: str) -> _Stats:
        """The key's figures; past the limit its service's ``(other)``, and past twice
        the limit the single ``((other), (other))``."""
        key = (service, operation)
        if key not in self._stats and len(self._stats) >= self._max:
            self._dropped_operations += 1
            key = (service, OTHER)
            if key not in self._stats and len(self._stats) >= 2 * self._max:
                key = (OTHER, OTHER)
        return self._stats.setdefault(key, _Stats())

    def _add_client(self, record: SpanRecord) -> None:
        key = (record.trace_id, record.span_id)
        client = _Client(
            _label(record.service), None if record.peer is None else _label(record.peer)
        )
        _remember(self._clients, key, client)
        for server in self._waiting.pop(key, []):
            self._match(client, server)
        if not client.matched and client.peer is not None:
            _remember(self._new_clients, key, client)

    def _add_server(self, record: SpanRecord) -> None:
        parent = (record.trace_id, record.parent_span_id)
        client = self._clients.get(parent)
        if client is None:
            waiting = self._waiting.get(parent)
            if waiting is None:
                _remember(self._waiting, parent, [_label(record.service)])
            else:
                waiting.append(_label(record.service))
        else:
            self._match(client, _label(record.service))
            self._new_clients.pop(parent, None)

    def _match(self, client: _Client, server: str) -> None:
        client.matched = True
        if client.service != server:
            self._count_edge(client.service, server)

    def _count_edge(self, client: str, server: str) -> None:
        key = (client, server)
        if key in self._edges or len(self._edges) < self._max:
            self._edges[key] = self._edges.get(key, 0) + 1
        else:
            self._dropped_edges += 1


def _remember(memory: dict[_SpanKey, _V], key: _SpanKey, value: _V) -> None:
    """Store, forgetting the oldest entry past ``MAX_REMEMBERED_SPANS``."""
    memory[key] = value
    if len(memory) > MAX_REMEMBERED_SPANS:
        del memory[next(iter(memory))]


def _label(text: str) -> str:
    return text[:MAX_LABEL_CHARS]


def _operation(service: str, operation: str, stats: _Stats, seconds: float) -> OperationRed:
    p50, p95, p99 = (float(p) for p in np.percentile(stats.durations, [50, 95, 99]))
    return OperationRed(
        service=service,
        operation=operation,
        requests_per_second=stats.requests / seconds,
        errors_per_second=stats.errors / seconds,
        error_ratio=stats.errors / stats.requests,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        latency_samples=len(stats.durations),
    )


def red_samples(snapshot: RedSnapshot) -> list[MetricSample]:
    """The snapshot as metric samples for the collector's MetricBatch.

    With the default limit of 1000 operations and edges that is at most about 13,000
    samples, within a batch's 20,000.
    """
    samples: list[MetricSample] = []
    for op in snapshot.operations:
        labels = {"service": op.service, "operation": op.operation}
        samples += [
            sample("span_requests_per_second", op.requests_per_second, PER_SECOND, **labels),
            sample("span_errors_per_second", op.errors_per_second, PER_SECOND, **labels),
            sample("span_error_ratio", op.error_ratio, "", **labels),
            sample("span_latency_p50_ms", op.latency_p50_ms, MS, **labels),
            sample("span_latency_p95_ms", op.latency_p95_ms, MS, **labels),
            sample("span_latency_p99_ms", op.latency_p99_ms, MS, **labels),
        ]
    samples += [
        sample(
            "service_edge_requests_per_second",
            edge.requests_per_second,
            PER_SECOND,
            client=edge.client,
            server=edge.server,
        )
        for edge in snapshot.edges
    ]
    samples.append(sample("spans_dropped_operations", snapshot.dropped_operations))
    samples.append(sample("spans_dropped_edges", snapshot.dropped_edges))
    return samples
