"""demo-web: a tiny shop that `medbay up` watches, and that misbehaves now and then.

Two parts in one process, both traced with the OpenTelemetry SDK when
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``) names
where to send spans (``medbay up`` points it at the collector's OTLP receiver):

- the service ``demo-web`` serves ``/`` (what the collector's check asks),
  ``/api/products`` and ``/api/checkout``;
- the service ``demo-shopper`` calls it about ``--rate`` times a second (a third
  products, two thirds checkout), passing the trace context on, so every call is a
  client span and the server's span is its child: the edge demo-shopper ->
  demo-web on the dependency map.

It follows a schedule that repeats every ``--period`` seconds (``PHASES``): up,
an outage (nothing listens: a ``service_down`` issue), an error burst (checkout
answers 500: an ``error_rate`` issue), a slow period (checkout takes
``SLOW_SECONDS``: a ``latency`` issue), and up again. A first look at Medbay
sees each open and resolve within the first two minutes. ``medbay up --no-demo``
leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

Phase = Literal["up", "down", "errors", "slow"]

PHASES: tuple[tuple[Phase, float], ...] = (
    ("up", 15),
    ("down", 15),
    ("up", 15),
    ("errors", 15),
    ("up", 15),
    ("slow", 15),
)
"""The first part of each period, in order: (what, seconds); the rest of it is up."""
SLOW_SECONDS = 2.5
"""How long checkout takes in a slow period: over the default p95 rule (2000 ms)."""
ROUTES = ("/api/products", "/api/checkout", "/api/checkout")
"""What the shopper calls, picked evenly: a third products, two thirds checkout."""


def phase_at(elapsed: float, period: float) -> Phase:
    """What demo-web does ``elapsed`` seconds after it started."""
    t = elapsed % period
    for phase, seconds in PHASES:
        if t < seconds:
            return phase
        t -= seconds
    return "up"


def phase_changes(period: float) -> Iterator[tuple[float, Phase]]:
    """(seconds after the start, phase) of every change, for ever."""
    start = 0.0
    while True:
        offset = 0.0
        for phase, seconds in PHASES:
            yield start + offset, phase
            offset += seconds
        if offset < period:
            yield start + offset, "up"
        start += period


def traces_endpoint() -> str | None:
    """Where the SDK's exporter sends spans, as the environment says; None: nowhere."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


async def wait_for_receiver(endpoint: str, timeout: float = 60.0) -> bool:
    """Whether ``endpoint``'s host and port accept connections within ``timeout`` s
    (``medbay up`` starts the collector, whose receiver it is, beside demo-web)."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        writer.close()
        return True
    return False


@dataclass
class Tracing:
    """The two services' tracer providers, or none when tracing is not configured."""

    server: TracerProvider | None = None
    shopper: TracerProvider | None = None

    @classmethod
    async def from_environment(cls) -> Tracing:
        endpoint = traces_endpoint()
        if endpoint is None:
            print("no OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: serving without traces", flush=True)
            return cls()
        print(f"sending spans to {endpoint}", flush=True)
        if not await wait_for_receiver(endpoint):
            print(f"nothing answers at {endpoint} yet; its spans wait and retry", flush=True)
        return cls(server=_provider("demo-web"), shopper=_provider("demo-shopper"))

    def shutdown(self) -> None:
        for provider in (self.server, self.shopper):
            if provider is not None:
                provider.shutdown()


def _provider(service: str) -> TracerProvider:
    """A provider exporting over OTLP/HTTP as the environment says, within a second."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=1000))
    return provider


class Shop:
    """The HTTP side: answers by the current phase, one server span per request."""

    def __init__(self, tracing: Tracing) -> None:
        provider = tracing.server or trace.NoOpTracerProvider()
        self.tracer = provider.get_tracer("medbay.demo_web")
        self.phase: Phase = "up"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if len(request_line) < 2:
                return
            method, path = request_line[0], request_line[1]
            route = path.split("?", 1)[0]
            with self.tracer.start_as_current_span(
                f"{method} {route}",
                context=extract(headers),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": route, "url.path": path},
            ) as span:
                status = await self._answer(route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[status]
            body = b"ok\n" if status == 200 else f"{reason}\n".encode()
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def _answer(self, route: str) -> int:
        if route == "/api/checkout":
            if self.phase == "errors":
                return 500
            if self.phase == "slow":
                await asyncio.sleep(SLOW_SECONDS * random.uniform(0.9, 1.1))
            else:
                await asyncio.sleep(random.uniform(0.005, 0.03))
            return 200
        return 200 if route in ("/", "/api/products") else 404


async def shop_forever(shop: Shop, port: int, period: float) -> None:
    """Follow the schedule: listen while up, errors or slow; close the port while down."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    server: asyncio.Server | None = None
    try:
        for at, phase in phase_changes(period):
            await asyncio.sleep(max(0.0, started + at - loop.time()))
            shop.phase = phase
            if phase == "down" and server is not None:
                server.close()
                await server.wait_closed()
                server = None
                print("down (on purpose)", flush=True)
            elif phase != "down" and server is None:
                server = await asyncio.start_server(shop.handle, "127.0.0.1", port)
                print(f"serving on http://127.0.0.1:{port}/", flush=True)
            if phase in ("errors", "slow"):
                print(f"{phase} on /api/checkout (on purpose)", flush=True)
    finally:
        if server is not None:
            server.close()


async def shopper_forever(tracing: Tracing, port: int, rate: float) -> None:
    """demo-shopper: call the shop ``rate`` times a second, one client span each."""
    provider = tracing.shopper or trace.NoOpTracerProvider()
    tracer = provider.get_tracer("medbay.demo_web")
    pending: set[asyncio.Task[None]] = set()

    async def call(client: httpx.AsyncClient, route: str) -> None:
        with tracer.start_as_current_span(
            f"GET {route}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "peer.service": "demo-web",
                "server.address": "127.0.0.1",
                "server.port": port,
            },
        ) as span:
            headers: dict[str, str] = {}
            inject(headers)
            try:
                response = await client.get(f"http://127.0.0.1:{port}{route}", headers=headers)
            except httpx.HTTPError as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                return
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))

    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        loop = asyncio.get_running_loop()
        tick = loop.time()
        for n in itertools.count():
            task = asyncio.create_task(call(client, ROUTES[n % len(ROUTES)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tick += 1 / rate
            await asyncio.sleep(max(0.0, tick - loop.time()))


async def serve(port: int, period: float, rate: float) -> None:
    tracing = await Tracing.from_environment()
    shop = Shop(tracing)
    try:
        await asyncio.gather(shop_forever(shop, port, period), shopper_forever(tracing, port, rate))
    finally:
        tracing.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(prog="demo-web")
    parser.add_argument("--port", type=int, default=9480)
    parser.add_argument(
        "--period",
        type=float,
        default=180.0,
        help="seconds after which the schedule starts again (at least the scheduled "
        f"{sum(s for _, s in PHASES):.0f} s)",
    )
    parser.add_argument(
        "--rate", type=float, default=24.0, help="calls a second the shopper makes (> 0)"
    )
    args = parser.parse_args()
    if args.period < sum(s for _, s in PHASES):
        parser.error(f"--period must be at least {sum(s for _, s in PHASES):.0f} s")
    if not args.rate > 0:
        parser.error("--rate must be above 0")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.period, args.rate))


if __name__ == "__main__":
    main()
