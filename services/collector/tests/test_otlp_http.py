"""The OTLP/HTTP receiver over real HTTP: the official SDK's exporter, JSON bodies, and
every kind of bad request answered while the receiver goes on serving."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client import CollectorRegistry

from medbay.collector.config import OtlpReceiver
from medbay.collector.otlp_http import ReceiverError, TraceReceiver
from medbay.collector.spans import JSON, PROTOBUF
from tests.sdk_spans import MS, T0, server_spans

LIMIT = 64 * 1024


class Clock:
    """Seconds that pass only when a test says so: rates come out exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def receiver(clock: Clock, registry: CollectorRegistry) -> AsyncIterator[TraceReceiver]:
    config = OtlpReceiver(port=0, max_body_bytes=LIMIT, min_requests_for_ratio=5)
    started = TraceReceiver(config, registry, clock=clock)
    await started.start()
    yield started
    await started.stop()


def url(receiver: TraceReceiver, path: str = "/v1/traces") -> str:
    return f"http://127.0.0.1:{receiver.port}{path}"


def export(
    receiver: TraceReceiver, spans: Sequence[ReadableSpan], compression: Compression
) -> SpanExportResult:
    """The spans sent by the SDK's own OTLP/HTTP exporter, as an application sends them."""
    exporter = OTLPSpanExporter(endpoint=url(receiver), compression=compression)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
async def test_sdk_exporter(
    receiver: TraceReceiver, clock: Clock, registry: CollectorRegistry, compression: Compression
) -> None:
    result = await asyncio.to_thread(
        export, receiver, server_spans("checkout", 40, 10), compression
    )
    assert result == SpanExportResult.SUCCESS
    clock.now += 20.0

    snapshot = await receiver.read()
    assert snapshot.interval_seconds == 20.0
    (service,) = snapshot.services
    assert (service.service, service.requests) == ("checkout", 40)
    assert service.requests_per_second == 2.0
    assert service.errors_per_second == 0.5
    assert service.error_ratio == 0.25
    assert service.latency_p50_ms == pytest.approx(20.5)
    (operation,) = snapshot.operations
    assert (operation.service, operation.operation) == ("checkout", "/pay")
    assert operation.error_ratio == 0.25
    assert counter(registry, "medbay_collector_otlp_spans_total") == 40
    assert counter(registry, "medbay_collector_otlp_requests_total", code="200") == 1

    clock.now += 5.0
    empty = await receiver.read()  # every read starts a new interval
    assert (empty.interval_seconds, empty.services, empty.operations) == (5.0, (), ())


def otlp_json(requests: int, errors: int) -> bytes:
    """The OTLP JSON encoding: hex ids, lowerCamelCase, enums as numbers, int64 as strings."""
    spans = [
        {
            "traceId": f"{n + 1:032x}",
            "spanId": f"{n + 1:016x}",
            "name": "GET /cart",
            "kind": 2,
            "startTimeUnixNano": str(T0),
            "endTimeUnixNano": str(T0 + 10 * MS),
            "status": {"code": 2} if n < errors else {},
        }
        for n in range(requests)
    ]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]}
    return json.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
    ).encode()


async def test_json_body_gets_a_json_answer(receiver: TraceReceiver, clock: Clock) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            url(receiver), content=otlp_json(8, 2), headers={"Content-Type": JSON}
        )
        gzipped = await http.post(
            url(receiver),
            content=gzip.compress(otlp_json(2, 0)),
            headers={"Content-Type": f"{JSON}; charset=utf-8", "Content-Encoding": "gzip"},
        )
    assert (answer.status_code, gzipped.status_code) == (200, 200)
    assert answer.headers["Content-Type"].startswith(JSON)
    assert answer.json() == {}  # an ExportTraceServiceResponse without partial success
    clock.now += 10.0
    (service,) = (await receiver.read()).services
    assert (service.service, service.requests, service.errors_per_second) == ("cart", 10, 0.2)
    assert service.latency_p99_ms == 10.0


async def test_protobuf_answer_is_an_export_response(receiver: TraceReceiver) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(url(receiver), content=b"", headers={"Content-Type": PROTOBUF})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == PROTOBUF
    response = ExportTraceServiceResponse()
    response.ParseFromString(answer.content)
    assert not response.HasField("partial_success")


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzipped: about a thousandth of that on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join([*parts, compressor.flush()])


def chunks(body: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    """A body sent chunked: no Content-Length to refuse it by."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


BAD_IDS = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not-hex"}]}]}]}'
GZIP = {"Content-Encoding": "gzip"}
TRACES = "/v1/traces"


def bad(
    name: str,
    content_type: str | None,
    body: bytes | list[bytes],
    status: int,
    message: str,
    *,
    method: str = "POST",
    path: str = TRACES,
    headers: dict[str, str] | None = None,
) -> object:
    return pytest.param(method, path, content_type, headers or {}, body, status, message, id=name)


BAD_REQUESTS = [
    bad("truncated protobuf", PROTOBUF, b"\x0a\x05\x0a\x03", 400, "not an OTLP"),
    bad("JSON with bad ids", JSON, BAD_IDS, 400, "spans[0].traceId: not 32 hex digits"),
    bad("not JSON", JSON, b"{not json", 400, "not JSON"),
    bad("not gzip", PROTOBUF, b"plain", 400, "not a gzip body", headers=GZIP),
    bad(
        "gzip cut short", PROTOBUF, gzip.compress(b"\x0a\x00")[:-6], 400, "ends early", headers=GZIP
    ),
    bad("Content-Length over", JSON, bytes(LIMIT + 1), 413, f"body of {LIMIT + 1} bytes is over"),
    bad("chunked over", JSON, list(chunks(bytes(4 * LIMIT))), 413, "over the limit"),
    bad("gzip bomb", PROTOBUF, gzip_bomb(48 * 2**20), 413, "once decompressed", headers=GZIP),
    bad("text", "text/plain", b"{}", 415, "unsupported content type 'text/plain'"),
    bad("no content type", None, b"{}", 415, "no content type"),
    bad(
        "brotli",
        JSON,
        b"{}",
        415,
        "unsupported content encoding 'br'",
        headers={"Content-Encoding": "br"},
    ),
    bad("GET", None, b"", 405, "GET is not allowed", method="GET"),
    bad("PUT", JSON, b"{}", 405, "PUT is not allowed", method="PUT"),
    bad("other path", PROTOBUF, b"", 404, "not found", path="/v1/metrics"),
]


@pytest.mark.parametrize(
    ("method", "path", "content_type", "headers", "body", "status", "message"), BAD_REQUESTS
)
async def test_bad_requests_are_answered_and_serving_goes_on(
    receiver: TraceReceiver,
    registry: CollectorRegistry,
    method: str,
    path: str,
    content_type: str | None,
    headers: dict[str, str],
    body: bytes | list[bytes],
    status: int,
    message: str,
) -> None:
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}
    async with httpx.AsyncClient(timeout=30) as http:
        content = body if isinstance(body, bytes) else _aiter(body)
        try:
            answer = await http.request(
                method, url(receiver, path), content=content, headers=headers
            )
        except httpx.WriteError:  # closed while a refused body was still being sent
            pytest.fail(f"no {status} answer before the connection closed")
        assert answer.status_code == status, answer.text
        if content_type == PROTOBUF:  # a google.rpc.Status in the request's encoding
            problem = Status()
            problem.ParseFromString(answer.content)
            assert message in problem.message
        elif content_type == JSON:
            assert message in answer.json()["message"]
        else:
            assert message in answer.text
        if status == 405:
            assert answer.headers["Allow"] == "POST"

        # the receiver is still there, and still counts
        after = await http.post(
            url(receiver), content=otlp_json(1, 0), headers={"Content-Type": JSON}
        )
    assert after.status_code == 200
    assert counter(registry, "medbay_collector_otlp_requests_total", code=str(status)) == 1
    reasons = {400: "malformed", 413: "too_large", 415: "unsupported_media_type"}
    if status in reasons:
        assert (
            counter(registry, "medbay_collector_otlp_rejected_bodies_total", reason=reasons[status])
            == 1
        )
    assert counter(registry, "medbay_collector_otlp_spans_total") == 1


async def _aiter(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_gzip_bomb_stops_at_the_limit(registry: CollectorRegistry) -> None:
    """256 MiB once decompressed, 256 KB on the wire: decompression stops past the
    8 MiB limit, and memory never holds anything near the whole."""
    receiver = TraceReceiver(OtlpReceiver(port=0), registry)
    await receiver.start()
    bomb = gzip_bomb(256 * 2**20)
    assert len(bomb) < receiver.config.max_body_bytes
    tracemalloc.start()
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.post(
                url(receiver), content=bomb, headers={"Content-Type": PROTOBUF, **GZIP}
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await receiver.stop()
    assert answer.status_code == 413
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB at the peak"


async def test_client_gone_mid_body(
    receiver: TraceReceiver, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that promises a body and leaves: nothing to answer, nothing broken."""
    assert receiver.port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
    writer.write(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"resourceSpans": ['
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(3000):  # until the receiver sees the connection go (30 s at most)
        if counter(registry, "medbay_collector_otlp_requests_total", code="400"):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the receiver did not see the client go")
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            url(receiver), content=otlp_json(3, 0), headers={"Content-Type": JSON}
        )
    assert answer.status_code == 200
    assert counter(registry, "medbay_collector_otlp_rejected_bodies_total", reason="malformed") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_taken_port_fails_start_naming_the_setting(registry: CollectorRegistry) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        receiver = TraceReceiver(OtlpReceiver(port=port), registry)
        with pytest.raises(ReceiverError) as caught:
            await receiver.start()
    text = str(caught.value)
    assert f"127.0.0.1:{port}" in text and "otlp.port" in text
    assert "address already in use" in text.lower()
    await receiver.stop()  # nothing to stop: no error either
