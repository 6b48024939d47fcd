"""Fixtures of the collector tests: local servers, and samples as plain dicts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import TypeAdapter

from medbay.common.events import MetricSample

_SAMPLES = TypeAdapter(list[MetricSample])

Route = tuple[int, str, bytes]
"""Status, content type, body."""


class WebServer:
    """Serves ``routes`` (path -> Route) on 127.0.0.1, from a thread."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = routes.get(self.path, (404, "text/plain", b"no\n"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )


@pytest.fixture
def web() -> Iterator[WebServer]:
    server = WebServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    """A port that accepts connections and never says anything; yields the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def as_dicts() -> Callable[[list[MetricSample]], list[dict[str, Any]]]:
    """Samples as plain dicts (whether MetricSample is a model or a typed dict)."""

    def convert(samples: list[MetricSample]) -> list[dict[str, Any]]:
        dumped: list[dict[str, Any]] = _SAMPLES.dump_python(_SAMPLES.validate_python(samples))
        return dumped

    return convert
