"""The services' health server (``medbay.common.health_http``, behind every
``ServiceRuntime``'s ``/healthz`` and ``/metrics``) against clients that send too
much or too slowly: an answer or a close, soon, and never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from medbay.common import runtime
from medbay.common.health_http import Answer, serve_one
from medbay.common.runtime import ServiceRuntime


def ok(path: str) -> Answer:
    return 200, "text/plain", f"you asked for {path}".encode()


@asynccontextmanager
async def listening(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@asynccontextmanager
async def health_server(
    timeout: float = 5.0, answer: Callable[[str], Answer] = ok
) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_one(reader, writer, answer, timeout)

    async with listening(handle) as port:
        yield port


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``, then read until the server closes; b"" if it reset the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        received = b""
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionError:
            pass
        return received


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


async def test_a_request_gets_its_answer():
    async with health_server() as port:
        response = await asyncio.to_thread(
            exchange, port, b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in response and response.endswith(b"you asked for /healthz")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + (b"X-Some: " + b"b" * 1000 + b"\r\n") * 17 + b"\r\n", b"431"),
        (b"hello there\r\n\r\n", b"400"),
    ],
    ids=["request line over 8 KiB", "101 headers", "a 20 KB header", "17 KB of headers", "junk"],
)
async def test_a_bad_request_is_answered_with_its_status(caplog, request_bytes, status):
    caplog.set_level(logging.DEBUG)
    async with health_server() as port:
        response = await asyncio.to_thread(exchange, port, request_bytes)
    assert response.startswith(b"HTTP/1.1 " + status), response[:100]
    no_tracebacks(caplog)


async def test_a_64_kib_request_line_is_refused_without_a_traceback(caplog, monkeypatch):
    """Through a real ServiceRuntime: asyncio's reader refuses lines over 64 KiB by raising."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(runtime, "setup_logging", lambda *args: None)
    monkeypatch.setattr(runtime, "setup_tracing", lambda *args: None)
    rt = ServiceRuntime("test")
    async with listening(rt._serve_http) as port:
        request = b"GET /" + b"a" * (65 * 1024) + b" HTTP/1.1\r\n\r\n"
        started = time.monotonic()
        response = await asyncio.to_thread(exchange, port, request)
        assert time.monotonic() - started < 2
        # 414, or a reset: the server closed with the rest of the line unread
        assert response == b"" or response.startswith(b"HTTP/1.1 414"), response[:100]

        health = await asyncio.to_thread(exchange, port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert health.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        body = json.loads(health.split(b"\r\n\r\n", 1)[1])
        assert body["service"] == "test" and body["problems"]["startup"] == "starting"
        metrics = await asyncio.to_thread(exchange, port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert metrics.startswith(b"HTTP/1.1 200 OK\r\n")
    await asyncio.sleep(0.1)  # anything the server's tasks logged has been logged
    no_tracebacks(caplog)


async def test_a_slow_loris_is_cut_off_after_the_time_limit(caplog):
    caplog.set_level(logging.DEBUG)
    async with health_server(timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\n")

        async def trickle() -> None:  # one byte of a header every 50 ms, for ever
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.05)

        sending = asyncio.create_task(trickle())
        try:
            response = await asyncio.wait_for(reader.read(), 3)
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            writer.close()
        elapsed = time.monotonic() - started
    assert response.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert 0.4 < elapsed < 2
    no_tracebacks(caplog)


async def test_a_client_that_never_reads_its_answer_is_dropped_after_the_time_limit():
    finished = asyncio.Event()

    def big(path: str) -> Answer:
        return 200, "text/plain", b"x" * (64 * 1024 * 1024)  # more than socket buffers hold

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_one(reader, writer, big, 0.5)
        finished.set()

    async with listening(handle) as port:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        try:
            await asyncio.wait_for(finished.wait(), 3)
        finally:
            sock.close()
