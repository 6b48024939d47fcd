"""What the gateway refuses before any route sees a request (``medbay.gateway.guards``):
an unknown ``Host``, a foreign page's WebSocket, ``/api`` without a token and a body
over the limit, all answered before a byte of the body is read."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

import httpx
import psutil
import pytest
import websockets
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.types import Message, Scope
from websockets.exceptions import InvalidStatus

from medbay.gateway.api import build_app
from medbay.gateway.config import GatewayConfig, TokenConfig
from medbay.gateway.service import GatewayService

OPERATOR_TOKEN = "operator-token-0123456789"
THIRTY_MB = 30 * 1024 * 1024


def streamed_post(
    port: int, path: str, size: int, *, chunked: bool, token: str | None = None
) -> tuple[bytes, float, int]:
    """POST ``size`` bytes, written by a thread while the answer is awaited, as a client
    uploading a file would: (status line, seconds to it, bytes written before the
    server closed the connection)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"{auth}{framing}\r\n\r\n".encode()
    )
    chunk = b"x" * 65536
    frame = b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk
    written = 0
    stop = threading.Event()

    def write() -> None:
        nonlocal written
        try:
            while written < size and not stop.is_set():
                sock.sendall(frame)
                written += len(chunk)
        except OSError:
            pass  # the server closed the connection: what it wanted to say is said

    writer = threading.Thread(target=write)
    started = time.monotonic()
    writer.start()
    answer = b""
    try:
        while b"\r\n" not in answer and (data := sock.recv(4096)):
            answer += data
    finally:
        elapsed = time.monotonic() - started
        stop.set()
        with contextlib.suppress(OSError):  # unblocks the writer, if the server has not
            sock.shutdown(socket.SHUT_RDWR)
        writer.join(10)
        sock.close()
    return answer.split(b"\r\n")[0], elapsed, written


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def test_a_30_mb_upload_is_refused_quickly_and_unread(gateway):
    port, pid = gateway.process.port, gateway.process.proc.pid
    before = rss(pid)
    cases = [
        ("/api/actions", False, None, b"401"),  # no token
        ("/api/replay", True, None, b"401"),
        ("/api/actions", False, OPERATOR_TOKEN, b"413"),  # too large, by its Content-Length
        ("/api/actions", True, OPERATOR_TOKEN, b"413"),  # streamed: cut off past the limit
    ]
    for path, chunked, token, status in cases:
        line, seconds, written = await asyncio.to_thread(
            streamed_post, port, path, THIRTY_MB, chunked=chunked, token=token
        )
        case = (path, "chunked" if chunked else "length", token)
        assert line.startswith(b"HTTP/1.1 " + status), (case, line)
        assert seconds < 1.0, (case, seconds)
        assert written < THIRTY_MB / 2, (case, written)  # the server stopped taking it
    grown = rss(pid) - before
    print(f"gateway RSS grew by {grown / 1e6:.1f} MB over four 30 MB uploads")
    assert grown < 5 * 1024 * 1024
    assert (await gateway.get("/api/me")).status_code == 200  # and it serves on


async def test_a_body_over_the_configured_limit_is_413(start_gateway):
    gateway = start_gateway("max_body_bytes: 4096\n")
    body = {"host": "web-1", "action": "clear_cache", "target": "redis", "reason": ""}
    over = await gateway.post("/api/actions", {**body, "reason": "r" * 5000})
    assert over.status_code == 413 and over.json() == {"detail": "request body over 4096 bytes"}
    under = await gateway.post("/api/actions", {**body, "reason": "r" * 3000})
    assert under.status_code != 413  # read and judged by the route

    line, _, _ = await asyncio.to_thread(
        streamed_post,
        gateway.process.port,
        "/api/actions",
        10_000,
        chunked=True,
        token=OPERATOR_TOKEN,
    )
    assert line.startswith(b"HTTP/1.1 413")


def handshake(port: int, host: str) -> bytes:
    """A WebSocket handshake by hand (client libraries set ``Host`` themselves)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws?token={OPERATOR_TOKEN} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return sock.recv(4096)


async def test_only_known_hosts_are_served_but_probes_are(gateway):
    port = gateway.process.port
    for host in (f"localhost:{port}", "localhost", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert (await gateway.get("/api/me", {**gateway.viewer, "Host": host})).status_code == 200
    for host in ("medbay.attacker.example", f"medbay.attacker.example:{port}", "10.0.0.1"):
        refused = await gateway.get("/api/me", {**gateway.viewer, "Host": host})
        assert refused.status_code == 400 and refused.text == "Invalid host header", host
        assert (await gateway.get("/", {"Host": host})).status_code == 400
    for probe in ("/healthz", "/metrics"):
        assert (await gateway.get(probe, {"Host": "10.0.0.1:8470"})).status_code == 200

    refused = await asyncio.to_thread(handshake, port, "medbay.attacker.example")
    assert refused.startswith(b"HTTP/1.1 400") and refused.endswith(b"Invalid host header")
    accepted = await asyncio.to_thread(handshake, port, f"localhost:{port}")
    assert accepted.startswith(b"HTTP/1.1 101")


async def hello(url: str, **kwargs: Any) -> dict[str, Any]:
    async with websockets.connect(url, **kwargs) as ws:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        return message


async def test_only_the_gateways_own_pages_and_allowed_origins_open_the_socket(start_gateway):
    gateway = start_gateway("allowed_origins: [https://ops.example.com]\n")
    url = f"{gateway.ws_url}?token={OPERATOR_TOKEN}"
    for origin in ("http://attacker.example", f"http://127.0.0.1:{gateway.process.port + 1}"):
        with pytest.raises(InvalidStatus) as refused:
            await hello(url, origin=origin)
        assert refused.value.response.status_code == 403
        assert b"may not open this socket (see allowed_origins)" in refused.value.response.body
    own = f"http://127.0.0.1:{gateway.process.port}"
    for allowed in (own, "https://ops.example.com", "HTTPS://OPS.EXAMPLE.COM", None):
        assert (await hello(url, origin=allowed))["kind"] == "hello", allowed


# --- in the process: nothing of the body is read -------------------------------------------


def app(**config: Any) -> FastAPI:
    token = TokenConfig(name="olivia", token=SecretStr(OPERATOR_TOKEN), role="operator")
    registry = CollectorRegistry()
    service = GatewayService(
        GatewayConfig(tokens=[token], **config), registry=registry, max_event_bytes=1024
    )
    health: tuple[bool, dict[str, object]] = (
        True,
        {"service": "gateway", "status": "ok", "problems": {}},
    )
    return build_app(service, registry=registry, own_health=lambda: health)


async def call(
    asgi: FastAPI, method: str, path: str, headers: dict[str, str], chunks: int = 0
) -> tuple[int, dict[str, str], int]:
    """(status, headers, body chunks read) of a request offering ``chunks`` of 16 KiB."""
    read = 0

    async def receive() -> Message:
        nonlocal read
        if read == chunks:
            await asyncio.sleep(3600)  # the client sends nothing more
        read += 1
        return {"type": "http.request", "body": b"x" * 16384, "more_body": read < chunks}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 8470),
    }
    await asyncio.wait_for(asgi(scope, receive, send), 5)
    start = sent[0]
    assert start["type"] == "http.response.start"
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, read


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("POST", {"Content-Length": "100000"}, 401),
        ("POST", {"Transfer-Encoding": "chunked"}, 401),
        ("POST", {"Authorization": "Bearer wrong-token-0123456789"}, 401),
        ("POST", {"Authorization": "Basic b2xpdmlhOnNlY3JldA=="}, 401),
        ("GET", {}, 401),
        ("POST", {"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Length": "65537"}, 413),
    ],
)
async def test_refusals_read_nothing(method, headers, status):
    found, answer_headers, read = await call(
        app(), method, "/api/actions", {"Host": "localhost", **headers}, chunks=10
    )
    assert (found, read) == (status, 0)
    if status == 401:
        assert answer_headers["www-authenticate"] == "Bearer"
    if "content-length" in {k.lower() for k in headers} or "Transfer-Encoding" in headers:
        assert answer_headers["connection"] == "close"  # the body is not drained


async def test_a_streamed_body_is_cut_off_once_past_the_limit():
    headers = {"Host": "localhost", "Authorization": f"Bearer {OPERATOR_TOKEN}"}
    status, headers, read = await call(
        app(max_body_bytes=65536), "POST", "/api/actions", headers, chunks=100
    )
    assert (status, headers["connection"], read) == (413, "close", 5)  # 5 x 16 KiB > 64 KiB


async def test_the_anonymous_viewer_reads_but_changes_nothing_without_a_token():
    anonymous = app(allow_anonymous_viewer=True)
    status, _, _ = await call(anonymous, "GET", "/api/me", {"Host": "localhost"})
    assert status == 503  # past the gate: the route says the gateway is starting
    headers = {"Host": "localhost", "Transfer-Encoding": "chunked"}
    status, answer_headers, read = await call(anonymous, "POST", "/api/actions", headers, 10)
    assert (status, read, answer_headers["www-authenticate"]) == (401, 0, "Bearer")


@pytest.mark.parametrize(
    ("host", "status"),
    [("ops.example.com", 200), ("a.b.example.com:443", 200), ("example.com", 400), ("x.com", 400)],
)
async def test_host_patterns(host, status):
    patterned = app(allowed_hosts=["*.example.com"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=patterned), base_url=f"http://{host}"
    ) as http:
        assert (await http.get("/openapi.json")).status_code == status
