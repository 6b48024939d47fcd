"""A small application traced with the official OpenTelemetry SDK, for end-to-end tests.

Two services in one process, as a real deployment would have them: ``shop``, an
HTTP server (one SERVER span per request, the caller's trace context extracted),
and ``shopper``, a client calling it ``--rate`` times a second (one CLIENT span
per call, the context injected). Both export with the SDK's own OTLP/HTTP
exporter, configured by the standard ``OTEL_*`` environment variables only.

``GET /control/<mode>`` (untraced) switches how the shop answers: ``normal``,
``errors`` (every call answers 500) or ``slow`` (a fifth of the calls take
``SLOW_SECONDS``).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

SLOW_SECONDS = 2.5
MODES = ("normal", "errors", "slow")


def provider(service: str) -> TracerProvider:
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": service}))
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return tracer_provider


class Shop(BaseHTTPRequestHandler):
    mode = "normal"
    tracer = provider("shop").get_tracer("trace_app")

    def do_GET(self) -> None:
        if self.path.startswith("/control/"):
            mode = self.path.removeprefix("/control/")
            if mode not in MODES:
                self._reply(400)
                return
            Shop.mode = mode
            self._reply(200)
            return
        route = "/api/checkout" if self.path.startswith("/api/checkout") else "/api/other"
        with self.tracer.start_as_current_span(
            f"GET {route}",
            context=extract(dict(self.headers)),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET", "http.route": route},
        ) as span:
            status = 500 if Shop.mode == "errors" else 200
            if Shop.mode == "slow" and random.random() < 0.2:
                time.sleep(SLOW_SECONDS)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        self._reply(status)

    def _reply(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def shopper(port: int, rate: float) -> None:
    tracer = provider("shopper").get_tracer("trace_app")
    client = httpx.Client(trust_env=False, timeout=10)

    def call() -> None:
        with tracer.start_as_current_span(
            "GET /api/checkout",
            kind=SpanKind.CLIENT,
            attributes={"peer.service": "shop", "http.request.method": "GET"},
        ) as span:
            headers: dict[str, str] = {}
            inject(headers)
            try:
                response = client.get(f"http://127.0.0.1:{port}/api/checkout", headers=headers)
            except httpx.HTTPError:
                span.set_status(Status(StatusCode.ERROR))
                return
            span.set_attribute("http.response.status_code", response.status_code)

    with ThreadPoolExecutor(64) as pool:
        tick = time.monotonic()
        while True:
            pool.submit(call)
            tick += 1 / rate
            time.sleep(max(0.0, tick - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=30.0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Shop)
    threading.Thread(target=shopper, args=(args.port, args.rate), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
