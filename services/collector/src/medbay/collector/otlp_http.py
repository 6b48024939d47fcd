"""The OTLP/HTTP trace receiver: ``POST /v1/traces``, as the OpenTelemetry SDKs send.

Applications point their exporter at it
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://<host>:4318/v1/traces``); their spans go
into a :class:`RedAggregator`, which every scrape empties (:meth:`TraceReceiver.read`).

The answers are the OTLP/HTTP specification's: 200 with an empty
ExportTraceServiceResponse in the request's encoding (protobuf or JSON); 400 with a
``google.rpc.Status`` whose ``message`` says what is wrong with the body; 413 for a
body over ``max_body_bytes`` (told by Content-Length at once, otherwise found while
reading and while decompressing, so that a gzip bomb stops at the limit); 415 for a
content type or encoding it does not take; 405 for another method; 404 for another
path. Problems go back as a Status in the request's encoding when that is protobuf or
JSON, as plain text otherwise. No request can stop the receiver.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable

from aiohttp import web
from google.protobuf import json_format
from google.rpc.code_pb2 import Code
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry, Counter

from medbay.collector.config import OtlpReceiver
from medbay.collector.spans import (
    JSON,
    PROTOBUF,
    RedAggregator,
    RedSnapshot,
    SpanError,
    decode_traces,
)

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
BODY_SECONDS = 30.0
"""Longest time to receive a request body (a client sending too slowly gets 408)."""
SHUTDOWN_SECONDS = 2.0
"""How long stopping waits for requests under way."""

_EMPTY_RESPONSES = {
    PROTOBUF: ExportTraceServiceResponse().SerializeToString(),
    JSON: json_format.MessageToJson(ExportTraceServiceResponse()).encode(),
}
_CODES = {
    400: Code.INVALID_ARGUMENT,
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    408: Code.DEADLINE_EXCEEDED,
    413: Code.INVALID_ARGUMENT,
    415: Code.INVALID_ARGUMENT,
}
"""The google.rpc code of a problem's Status, by HTTP status."""
_REASONS = {400: "malformed", 408: "too_slow", 413: "too_large", 415: "unsupported_media_type"}
"""The ``reason`` label of a rejected body, by HTTP status."""


class ReceiverError(Exception):
    """The receiver cannot start; the message says why and which setting to change."""


class _Rejected(Exception):
    """A request answered with a problem: its HTTP status and what is wrong."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "medbay_collector_otlp_requests_total",
            "Requests to the OTLP/HTTP trace receiver, by the HTTP status answered.",
            ["code"],
            registry=registry,
        )
        self.spans = Counter(
            "medbay_collector_otlp_spans_total",
            "Spans received in accepted trace bodies.",
            registry=registry,
        )
        self.rejected = Counter(
            "medbay_collector_otlp_rejected_bodies_total",
            "Trace bodies refused, by reason: malformed (400), too_slow (408), "
            "too_large (413), unsupported_media_type (415).",
            ["reason"],
            registry=registry,
        )
        for reason in _REASONS.values():
            self.rejected.labels(reason)


class TraceReceiver:
    """Receives spans over OTLP/HTTP into an aggregator; :meth:`read` empties it."""

    def __init__(
        self,
        config: OtlpReceiver,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.aggregator = RedAggregator(config.max_operations)
        self.metrics = ReceiverMetrics(registry)
        self.port: int | None = None
        """The port listened on, once started (``otlp.port`` 0 picks a free one)."""
        self._clock = clock
        self._read_at = clock()
        self._runner: web.ServerRunner | None = None

    async def start(self) -> None:
        """Listen; :class:`ReceiverError` if the address cannot be had."""
        server = web.Server(self._handle, auto_decompress=False, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_SECONDS)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ReceiverError(
                f"cannot listen for OTLP/HTTP traces on {self.config.host}:{self.config.port} "
                f"({exc.strerror or exc}): change otlp.port (or otlp.host) in the "
                "collector config, or stop what holds that port"
            ) from None
        self._runner = runner
        self.port = site.port
        self._read_at = self._clock()
        log.info(
            "receiving OTLP/HTTP traces on http://%s:%s%s", self.config.host, self.port, TRACES_PATH
        )

    async def stop(self) -> None:
        """Stop listening; requests under way get ``SHUTDOWN_SECONDS`` to finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def read(self) -> RedSnapshot:
        """The figures since the last read, over the time that really passed."""
        now = self._clock()
        elapsed, self._read_at = now - self._read_at, now
        return self.aggregator.flush(max(elapsed, 1e-3))

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        media_type = request.content_type.lower() if "Content-Type" in request.headers else ""
        try:
            response = await self._accept(request, media_type)
        except _Rejected as problem:
            response = _problem(problem, media_type)
            if problem.status in _REASONS:
                self.metrics.rejected.labels(_REASONS[problem.status]).inc()
            log.debug("OTLP/HTTP request refused (%d): %s", problem.status, problem.message)
        self.metrics.requests.labels(str(response.status)).inc()
        return response

    async def _accept(self, request: web.BaseRequest, media_type: str) -> web.Response:
        if request.path != TRACES_PATH:
            raise _Rejected(404, f"not found: OTLP/HTTP traces go to POST {TRACES_PATH}")
        if request.method != "POST":
            raise _Rejected(405, f"{request.method} is not allowed: send traces with POST")
        if media_type not in (PROTOBUF, JSON):
            given = f"unsupported content type {media_type!r}" if media_type else "no content type"
            raise _Rejected(415, f"{given}: send {PROTOBUF} or {JSON}")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise _Rejected(415, f"unsupported content encoding {encoding!r}: send gzip or none")
        body = await self._body(request)
        if encoding == "gzip":
            body = _gunzip(body, self.config.max_body_bytes)
        try:
            records = decode_traces(body, media_type)
        except SpanError as exc:
            raise _Rejected(400, str(exc)) from None
        self.aggregator.add(records)
        self.metrics.spans.inc(len(records))
        return web.Response(body=_EMPTY_RESPONSES[media_type], content_type=media_type)

    async def _body(self, request: web.BaseRequest) -> bytes:
        limit = self.config.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise _Rejected(413, f"body of {length} bytes is over the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_SECONDS):
                async for chunk in request.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise _Rejected(413, f"body over the limit of {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise _Rejected(408, f"body not received within {BODY_SECONDS:g} s") from None
        except ConnectionError:  # nobody will read the answer, but it is counted
            raise _Rejected(400, "body cut short: the client closed the connection") from None
        return b"".join(chunks)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body (every member of it), never past ``limit`` bytes:
    :class:`_Rejected` with 413 beyond it, 400 if it is not gzip."""
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise _Rejected(400, f"not a gzip body: {exc}") from None
        if len(out) > limit:
            raise _Rejected(413, f"body over the limit of {limit} bytes once decompressed")
        if not inflater.eof:
            raise _Rejected(400, "not a gzip body: it ends early")
        data = inflater.unused_data
    return bytes(out)


def _problem(problem: _Rejected, media_type: str) -> web.Response:
    """A Status in the request's encoding, or plain text for anything but OTLP's two."""
    status = Status(code=_CODES.get(problem.status, Code.UNKNOWN), message=problem.message)
    if media_type == PROTOBUF:
        response = web.Response(
            status=problem.status, body=status.SerializeToString(), content_type=PROTOBUF
        )
    elif media_type == JSON:
        response = web.Response(
            status=problem.status,
            text=json_format.MessageToJson(status, indent=None),
            content_type=JSON,
        )
    else:
        response = web.Response(status=problem.status, text=problem.message + "\n")
    if problem.status == 405:
        response.headers["Allow"] = "POST"
    if problem.status != 400:  # the body, or the rest of it, is not worth reading
        response.force_close()
    return response
