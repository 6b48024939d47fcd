"""``/ws`` against the gateway process: live events soon after their publish,
filters, and a slow client dropped while a fast one keeps receiving."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from datetime import UTC, datetime
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from medbay.common.events import MetricBatch

TOKEN = "operator-token-0123456789"


async def next_event(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["kind"] == "event":
            return message


async def test_a_client_receives_a_live_event_soon_after_its_publish(gateway, bus, events):
    url = f"{gateway.ws_url}?token={TOKEN}&types=issue.*,plan.created&hosts=web-1"
    async with websockets.connect(url) as ws:
        hello = json.loads(await ws.recv())
        assert hello["kind"] == "hello" and hello["user"] == "olivia"
        assert hello["types"] == ["plan.created", "issue.*"] and hello["hosts"] == ["web-1"]

        elsewhere = events.issue(host="web-2")
        issue = events.issue(host="web-1")
        started = time.perf_counter()
        await bus.publish(elsewhere, events.approval(events.plan(issue)), issue)
        message = await next_event(ws)
        latency_ms = (time.perf_counter() - started) * 1000
        print(f"publish to WebSocket receipt: {latency_ms:.1f} ms")
        # "live" means within half a second (typically ~10 ms; measured in bench/gateway.py)
        assert latency_ms < 500
        assert message["type"] == "issue.opened" and message["stream"] == "ISSUES"
        assert message["host"] == "web-1" and message["event"]["event_id"] == issue.event_id

        await ws.send(json.dumps({"subscribe": {"types": ["action.*"], "hosts": []}}))
        assert json.loads(await ws.recv()) == {
            "kind": "subscribed",
            "types": ["action.*"],
            "hosts": [],
        }
        plan = events.plan(elsewhere)
        await bus.publish(plan, events.result(plan))
        message = await next_event(ws)
        assert message["type"] == "action.result" and message["host"] == "web-2"

        await ws.send(json.dumps({"subscribe": {"types": ["nonsense"]}}))
        reply = json.loads(await ws.recv())
        assert reply["kind"] == "error" and "nonsense" in reply["detail"]


def big_batch() -> MetricBatch:
    samples = [{"name": "load", "value": float(i), "labels": {"n": str(i)}} for i in range(2000)]
    return MetricBatch(host="web-1", collected_at=datetime.now(UTC), samples=samples)


def stalled_client(port: int, path: str) -> socket.socket:
    """A WebSocket client that, after its handshake, reads nothing until asked.

    Written by hand: client libraries keep reading into memory whatever their
    application does. Its small receive buffer keeps the kernel from taking in
    tens of MB on its behalf.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_to_close(sock: socket.socket) -> tuple[int, int, str]:
    """Read frames up to the close frame: (frames before it, close code, reason)."""
    sock.settimeout(20)
    stream = sock.makefile("rb")
    frames = 0
    while True:
        first, second = stream.read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", stream.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", stream.read(8))[0]
        payload = stream.read(length)
        if first & 0x0F == 0x8:
            return frames, struct.unpack("!H", payload[:2])[0], payload[2:].decode()
        frames += 1


async def test_a_slow_client_is_dropped_and_a_fast_one_gets_everything(start_gateway, bus):
    gateway = start_gateway("websocket: {queue_size: 8, send_timeout_seconds: 30}\n")
    path = f"/ws?token={TOKEN}&types=metric.batch"
    batches = 120  # about 12 MB: more than the socket buffers between the two ends hold
    slow = stalled_client(gateway.process.port, path)
    async with websockets.connect(f"ws://127.0.0.1:{gateway.process.port}{path}") as fast:
        assert json.loads(await fast.recv())["kind"] == "hello"

        async def read_all() -> int:
            for _ in range(batches):
                await next_event(fast, timeout=10)
            return batches

        reading = asyncio.create_task(read_all())
        for _ in range(batches):
            await bus.publish(big_batch())
        assert await reading == batches  # the slow one never held the fast one back

    frames, code, reason = await asyncio.to_thread(read_to_close, slow)
    slow.close()
    assert code == 4408 and reason == "too slow: 8 events waiting"
    assert frames < batches  # the hello and what fitted in the buffers
    metrics = await gateway.get("/metrics")
    assert "medbay_gateway_ws_dropped_total 1.0" in metrics.text
