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
is wrong; the receiver (``otlp_http``) answers it with a 400. Decoding is the hot
path of the receiver: it reads only the fields and the handful of attributes the
figures use.
"""

from __future__ import annotations

import json
import random
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from sys import intern
from typing import Any, NamedTuple, NoReturn, TypeVar

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
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


_NOT_A_REQUEST = "not an OTLP ExportTraceServiceRequest"


class SpanRecord(NamedTuple):
    """What the collector needs of one span (a named tuple: cheap to make, one per span)."""

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
    if media_type == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError, RecursionError) as exc:
            raise SpanError(f"{_NOT_A_REQUEST}: {exc}") from None
        return _records(request)
    if media_type == JSON:
        return _json_records(body)
    raise SpanError(f"unsupported content type {content_type!r}: send {PROTOBUF} or {JSON}")


def _records(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        service = UNKNOWN_SERVICE
        for attribute in resource_spans.resource.attributes:
            if attribute.key == "service.name":
                service = attribute.value.string_value or UNKNOWN_SERVICE
        for scope_spans in resource_spans.scope_spans:
            records += [_record(service, span) for span in scope_spans.spans]
    return records


_KIND_NAMES = tuple(
    name.removeprefix(_KIND_PREFIX) for name, _ in sorted(Span.SpanKind.items(), key=lambda i: i[1])
)
"""``SERVER`` for SPAN_KIND_SERVER (2), by number."""
_NAME_ATTRIBUTES = frozenset({"http.route", "peer.service", "server.address"})
"""Attributes read as names: only a string will do."""
_STATUS_ATTRIBUTES = frozenset({"http.response.status_code", "http.status_code"})
_STATUS_ERROR = Status.STATUS_CODE_ERROR


def _record(service: str, span: Span) -> SpanRecord:
    """The hot path: a span's few fields and the handful of attributes the figures use."""
    names: dict[str, str] = {}
    http_status = 0
    for attribute in span.attributes:
        key = attribute.key
        if key in _NAME_ATTRIBUTES:
            names[key] = attribute.value.string_value
        elif key in _STATUS_ATTRIBUTES and (key == "http.response.status_code" or not http_status):
            http_status = _as_int(_scalar(attribute.value))
    number = span.kind
    kind = _KIND_NAMES[number] if 0 <= number < len(_KIND_NAMES) else str(number)
    operation = names.get("http.route") or span.name
    error = span.status.code == _STATUS_ERROR or (kind == "SERVER" and http_status >= 500)
    peer = (names.get("peer.service") or names.get("server.address")) if kind == "CLIENT" else None
    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano
    return SpanRecord(
        service,
        operation,
        kind,
        start_ns,
        end_ns,
        (end_ns - start_ns) / 1e6 if end_ns > start_ns else 0.0,
        error,
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        peer or None,
    )


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


# --- OTLP JSON --------------------------------------------------------------------
# Read straight from the parsed document, which is many times faster than protobuf's
# JSON parser: only the fields the figures use are read, and those are checked.


def _json_records(body: bytes) -> list[SpanRecord]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SpanError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SpanError(f"an OTLP JSON body is an object, not {type(document).__name__}")
    records: list[SpanRecord] = []
    for i, resource_spans in _objects(document, "resourceSpans", "resource_spans", ""):
        path = f"resourceSpans[{i}]"
        service = UNKNOWN_SERVICE
        resource = resource_spans.get("resource")
        if resource is not None:
            if not isinstance(resource, dict):
                raise _json_error(path, "resource", "not an object")
            for _, value in _json_attributes(resource, _SERVICE_NAME, f"{path}.resource"):
                service = value if isinstance(value, str) and value else UNKNOWN_SERVICE
        for j, scope_spans in _objects(resource_spans, "scopeSpans", "scope_spans", path):
            scope_path = f"{path}.scopeSpans[{j}]"
            for k, span in _objects(scope_spans, "spans", "spans", scope_path):
                try:
                    records.append(_json_record(service, span))
                except _BadField as bad:
                    raise _json_error(f"{scope_path}.spans[{k}]", bad.field, bad.problem) from None
    return records


class _BadField(Exception):
    """A field of a span that is not what OTLP says; the caller knows where the span is."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _json_error(path: str, field: str, problem: str) -> SpanError:
    where = f"{path}.{field}" if path else field
    return SpanError(f"{_NOT_A_REQUEST}: {where}: {problem}")


def _field(holder: dict[str, Any], camel: str, snake: str) -> Any:
    """A field by its JSON name or its protobuf name; None when absent."""
    value = holder.get(camel)
    return holder.get(snake) if value is None else value


def _objects(
    parent: dict[str, Any], camel: str, snake: str, path: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    values = _field(parent, camel, snake)
    if values is None:
        return
    if not isinstance(values, list):
        raise _json_error(path, camel, f"not a list but {type(values).__name__}")
    for n, value in enumerate(values):
        if not isinstance(value, dict):
            raise _json_error(path, f"{camel}[{n}]", f"not an object but {type(value).__name__}")
        yield n, value


_SERVICE_NAME = frozenset({"service.name"})
_SPAN_ATTRIBUTES = _NAME_ATTRIBUTES | _STATUS_ATTRIBUTES


def _json_attributes(
    holder: dict[str, Any], wanted: frozenset[str], path: str = ""
) -> Iterator[tuple[str, object]]:
    """(key, scalar value) of the ``wanted`` attributes (the others are not read);
    None for arrays, maps and bytes. Problems are :class:`_BadField` (within a span,
    ``path`` empty) or :class:`SpanError`."""
    attributes = holder.get("attributes")
    if attributes is None:
        return
    if not isinstance(attributes, list):
        _bad(path, "attributes", "not a list")
    for n, attribute in enumerate(attributes):
        key = attribute.get("key") if isinstance(attribute, dict) else None
        if not isinstance(key, str):
            _bad(path, f"attributes[{n}]", "not an object with a string key")
        if key not in wanted:
            continue
        value = attribute.get("value")
        if value is not None and not isinstance(value, dict):
            _bad(path, f"attributes[{n}].value", "not an object")
        try:
            yield key, None if value is None else _json_scalar(value)
        except _BadField as bad:
            _bad(path, f"attributes[{n}].value.{bad.field}", bad.problem)


def _bad(path: str, field: str, problem: str) -> NoReturn:
    if path:
        raise _json_error(path, field, problem)
    raise _BadField(field, problem)


def _json_scalar(value: dict[str, Any]) -> object:
    if (text := _field(value, "stringValue", "string_value")) is not None:
        if not isinstance(text, str):
            raise _BadField("stringValue", "not a string")
        return text
    if (number := _field(value, "intValue", "int_value")) is not None:
        return _json_int(number, "intValue", signed=True)
    if (real := _field(value, "doubleValue", "double_value")) is not None:
        if isinstance(real, bool) or not isinstance(real, int | float):
            raise _BadField("doubleValue", "not a number")
        return float(real)
    if (flag := _field(value, "boolValue", "bool_value")) is not None:
        if not isinstance(flag, bool):
            raise _BadField("boolValue", "not true or false")
        return flag
    return None


def _json_int(value: object, field: str, *, signed: bool) -> int:
    """A 64-bit integer, as a number or (protobuf's JSON mapping) a decimal string."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and _DECIMAL.fullmatch(value)
    ):
        number = int(value)
    else:
        raise _BadField(field, f"{value!r} is not an integer")
    low, high = (-(2**63), 2**63 - 1) if signed else (0, 2**64 - 1)
    if not low <= number <= high:
        raise _BadField(field, f"{number} is out of range")
    return number


def _json_enum(value: object, names: dict[str, int], field: str) -> int:
    """An enum given as its number or (leniently) its name."""
    if isinstance(value, str):
        if value not in names:
            raise _BadField(field, f"unknown value {value!r}")
        return names[value]
    return _json_int(value, field, signed=True)


_DECIMAL = re.compile(r"-?[0-9]{1,20}")
_SPAN_KINDS = dict(Span.SpanKind.items())
_STATUS_CODES = dict(Status.StatusCode.items())
_HEX_IDS = {digits: re.compile(f"[0-9a-fA-F]{{{digits}}}") for digits in set(_ID_DIGITS.values())}


def _json_id(span: dict[str, Any], camel: str, snake: str) -> bytes:
    value = _field(span, camel, snake)
    if value is None or value == "":
        return b""
    digits = _ID_DIGITS[camel]
    if not isinstance(value, str) or not _HEX_IDS[digits].fullmatch(value):
        raise _BadField(camel, f"not {digits} hex digits")
    return bytes.fromhex(value)


def _json_record(service: str, span: dict[str, Any]) -> SpanRecord:
    names: dict[str, str] = {}
    http_status = 0
    for key, value in _json_attributes(span, _SPAN_ATTRIBUTES):
        if key in _NAME_ATTRIBUTES:
            names[key] = value if isinstance(value, str) else ""
        elif key == "http.response.status_code" or not http_status:
            http_status = _as_int(value)
    kind_value = span.get("kind")
    number = 0 if kind_value is None else _json_enum(kind_value, _SPAN_KINDS, "kind")
    kind = _KIND_NAMES[number] if 0 <= number < len(_KIND_NAMES) else str(number)
    status = span.get("status")
    code = 0
    if status is not None:
        if not isinstance(status, dict):
            raise _BadField("status", "not an object")
        if (code_value := status.get("code")) is not None:
            code = _json_enum(code_value, _STATUS_CODES, "status.code")
    name = span.get("name")
    if name is not None and not isinstance(name, str):
        raise _BadField("name", "not a string")
    start = _field(span, "startTimeUnixNano", "start_time_unix_nano")
    end = _field(span, "endTimeUnixNano", "end_time_unix_nano")
    start_ns = 0 if start is None else _json_int(start, "startTimeUnixNano", signed=False)
    end_ns = 0 if end is None else _json_int(end, "endTimeUnixNano", signed=False)
    error = code == _STATUS_ERROR or (kind == "SERVER" and http_status >= 500)
    peer = (names.get("peer.service") or names.get("server.address")) if kind == "CLIENT" else None
    return SpanRecord(
        service,
        names.get("http.route") or name or "",
        kind,
        start_ns,
        end_ns,
        (end_ns - start_ns) / 1e6 if end_ns > start_ns else 0.0,
        error,
        _json_id(span, "traceId", "trace_id"),
        _json_id(span, "spanId", "span_id"),
        _json_id(span, "parentSpanId", "parent_span_id"),
        peer or None,
    )


# --- aggregation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperationRed:
    """Rate, errors and duration of one (service, operation) over one interval."""

    service: str
    operation: str
    requests_per_second: float
    errors_per_second: float
    error_ratio: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    """None when no durations were seen (a spanmetrics scrape without the histogram)."""
    latency_samples: int
    """How many durations the percentiles were computed from (at most RESERVOIR_SIZE)."""


@dataclass(frozen=True, slots=True)
class ServiceRed:
    """Rate, errors and duration of all of one service's requests over one interval."""

    service: str
    requests: float
    """Requests in the interval: the error ratio is only worth telling past a few."""
    requests_per_second: float
    errors_per_second: float
    error_ratio: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_samples: int


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
    services: tuple[ServiceRed, ...]
    operations: tuple[OperationRed, ...]
    edges: tuple[EdgeRate, ...]
    dropped_operations: int
    """Spans counted under ``(other)`` because their key was over the limit."""
    dropped_edges: int
    """Calls not counted because their edge was over the limit."""


@dataclass(slots=True)
class _Stats:
    """Counts and a reservoir of durations (8 bytes each in an array, not 32 in a list)."""

    requests: int = 0
    errors: int = 0
    durations: array[float] = field(default_factory=lambda: array("d"))

    def count(self, duration_ms: float, error: bool, draw: Callable[[], float]) -> None:
        self.requests += 1
        self.errors += error
        if len(self.durations) < RESERVOIR_SIZE:
            self.durations.append(duration_ms)
        else:  # reservoir sampling: every duration so far kept with the same chance
            slot = int(draw() * self.requests)
            if slot < RESERVOIR_SIZE:
                self.durations[slot] = duration_ms


@dataclass(slots=True)
class _Client:
    service: str
    peer: str | None
    matched: bool = False


_SpanKey = bytes
"""Trace id and span id, one after the other: one small object per remembered span."""
_V = TypeVar("_V")


class RedAggregator:
    """Accumulates spans into per-interval RED figures and call edges."""

    def __init__(self, max_operations: int = 1000, *, seed: int = 0) -> None:
        if max_operations < 1:
            raise ValueError("max_operations must be at least 1")
        self._max = max_operations
        self._draw = random.Random(seed).random
        self._stats: dict[tuple[str, str], _Stats] = {}
        self._services: dict[str, _Stats] = {}
        """Each service's entry spans (of every operation, ``(other)`` included)."""
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
            kind = record.kind
            if kind == "CLIENT":
                self._add_client(record)
                continue
            if kind == "SERVER" and record.parent_span_id:
                self._add_server(record)
            if kind in _ENTRY_KINDS or (kind in _ROOT_KINDS and not record.parent_span_id):
                self._count(record)

    def flush(self, interval_seconds: float) -> RedSnapshot:
        """The figures since the last flush, over ``interval_seconds``; starts a new interval."""
        if not interval_seconds > 0:
            raise ValueError("the interval must be positive")
        for client in self._new_clients.values():
            if client.peer is not None:
                self._count_edge(client.service, client.peer)
        snapshot = RedSnapshot(
            interval_seconds=interval_seconds,
            services=tuple(
                service_red(
                    service,
                    stats.requests,
                    stats.errors,
                    interval_seconds,
                    _percentiles(stats.durations),
                    len(stats.durations),
                )
                for service, stats in sorted(self._services.items())
            ),
            operations=tuple(
                operation_red(
                    service,
                    operation,
                    stats.requests,
                    stats.errors,
                    interval_seconds,
                    _percentiles(stats.durations),
                    len(stats.durations),
                )
                for (service, operation), stats in sorted(self._stats.items())
            ),
            edges=tuple(
                EdgeRate(client, server, count / interval_seconds)
                for (client, server), count in sorted(self._edges.items())
            ),
            dropped_operations=self._dropped_operations,
            dropped_edges=self._dropped_edges,
        )
        self._stats, self._services, self._edges = {}, {}, {}
        self._new_clients, self._waiting = {}, {}
        self._dropped_operations = self._dropped_edges = 0
        return snapshot

    def _count(self, record: SpanRecord) -> None:
        service, operation = record.service, record.operation
        if len(service) > MAX_LABEL_CHARS or len(operation) > MAX_LABEL_CHARS:
            service, operation = _label(service), _label(operation)
        key = (service, operation)
        stats = self._stats.get(key)
        if stats is None:
            key = self._key_for(key)
            stats = self._stats.setdefault(key, _Stats())
        stats.count(record.duration_ms, record.error, self._draw)
        service_stats = self._services.get(key[0])
        if service_stats is None:
            service_stats = self._services[key[0]] = _Stats()
        service_stats.count(record.duration_ms, record.error, self._draw)

    def _key_for(self, key: tuple[str, str]) -> tuple[str, str]:
        """A new key, or past the limit its service's ``(other)``, and past twice the
        limit the single ``((other), (other))``."""
        if len(self._stats) < self._max:
            return key
        self._dropped_operations += 1
        folded = (key[0], OTHER)
        if folded not in self._stats and len(self._stats) >= 2 * self._max:
            return (OTHER, OTHER)
        return folded

    def _add_client(self, record: SpanRecord) -> None:
        key = record.trace_id + record.span_id
        peer = record.peer
        # the peer's name is interned: many remembered spans, few distinct peers
        client = _Client(_label(record.service), None if peer is None else intern(_label(peer)))
        _remember(self._clients, key, client)
        servers = self._waiting.pop(key, None) if self._waiting else None
        if servers is not None:
            for server in servers:
                self._match(client, server)
        if not client.matched and peer is not None:
            _remember(self._new_clients, key, client)

    def _add_server(self, record: SpanRecord) -> None:
        parent = record.trace_id + record.parent_span_id
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


Percentiles = tuple[float, float, float]
"""p50, p95 and p99, in ms."""


def _percentiles(durations: array[float]) -> Percentiles | None:
    if not durations:
        return None
    p50, p95, p99 = np.percentile(np.frombuffer(durations), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def operation_red(
    service: str,
    operation: str,
    requests: float,
    errors: float,
    seconds: float,
    latency: Percentiles | None,
    latency_samples: int,
) -> OperationRed:
    """One operation's figures from its counts over ``seconds`` (``requests`` > 0)."""
    p50, p95, p99 = (None, None, None) if latency is None else latency
    return OperationRed(
        service=service,
        operation=operation,
        requests_per_second=requests / seconds,
        errors_per_second=errors / seconds,
        error_ratio=errors / requests,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        latency_samples=latency_samples,
    )


def service_red(
    service: str,
    requests: float,
    errors: float,
    seconds: float,
    latency: Percentiles | None,
    latency_samples: int,
) -> ServiceRed:
    """One service's figures from its counts over ``seconds`` (``requests`` > 0)."""
    p50, p95, p99 = (None, None, None) if latency is None else latency
    return ServiceRed(
        service=service,
        requests=requests,
        requests_per_second=requests / seconds,
        errors_per_second=errors / seconds,
        error_ratio=errors / requests,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        latency_samples=latency_samples,
    )


def red_samples(snapshot: RedSnapshot, *, min_requests_for_ratio: int = 5) -> list[MetricSample]:
    """The snapshot as metric samples for the collector's MetricBatch.

    Most telling first, since a batch too large to publish loses samples from its end:
    per service, then the dropped counts, per operation, and the edges last. A
    service's error ratio is left out below ``min_requests_for_ratio`` requests in the
    interval, where one failure would look like a disaster.
    """
    samples: list[MetricSample] = []
    for svc in snapshot.services:
        service = {"service": svc.service}
        samples += [
            sample(
                "span_service_requests_per_second", svc.requests_per_second, PER_SECOND, **service
            ),
            sample("span_service_errors_per_second", svc.errors_per_second, PER_SECOND, **service),
        ]
        if svc.requests >= min_requests_for_ratio:
            samples.append(sample("span_service_error_ratio", svc.error_ratio, "", **service))
        samples += _latency_samples("span_service_latency", svc, service)
    samples.append(sample("spans_dropped_operations", snapshot.dropped_operations))
    samples.append(sample("spans_dropped_edges", snapshot.dropped_edges))
    for op in snapshot.operations:
        labels = {"service": op.service, "operation": op.operation}
        samples += [
            sample("span_requests_per_second", op.requests_per_second, PER_SECOND, **labels),
            sample("span_errors_per_second", op.errors_per_second, PER_SECOND, **labels),
            sample("span_error_ratio", op.error_ratio, "", **labels),
            *_latency_samples("span_latency", op, labels),
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
    return samples


def _latency_samples(
    prefix: str, figures: OperationRed | ServiceRed, labels: dict[str, str]
) -> list[MetricSample]:
    return [
        sample(f"{prefix}_p{p}_ms", value, MS, **labels)
        for p, value in (
            (50, figures.latency_p50_ms),
            (95, figures.latency_p95_ms),
            (99, figures.latency_p99_ms),
        )
        if value is not None
    ]
