"""What every Medbay service process does around its own logic.

Logs and tracing, the broker, the HTTP endpoints ``/metrics`` (Prometheus) and
``/healthz`` (JSON; 200 when healthy, 503 otherwise), owning and waiting for
streams, and a clean stop on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from medbay.common.bus import declare_streams, make_broker, wait_for_streams
from medbay.common.settings import BusSettings
from medbay.common.streams import StreamSpec, owned_by
from medbay.common.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

Hook = Callable[[], Coroutine[Any, Any, None]]
HealthCheck = Callable[[], str | None]
"""Returns None when fine, or a short description of what is wrong."""


class ServiceRuntime:
    def __init__(self, name: str, settings: BusSettings | None = None) -> None:
        self.name = name
        self.settings = settings or BusSettings()
        setup_logging(name, self.settings.log_level, self.settings.log_format)
        self.tracer_provider = setup_tracing(name)
        self.registry = CollectorRegistry()
        self.broker = make_broker(
            name,
            self.settings.nats_url,
            registry=self.registry,
            tracer_provider=self.tracer_provider,
        )
        self.checks: dict[str, HealthCheck] = {"nats": self._nats_check}
        self.started_at = time.time()
        self.ready = False
        self.http_port: int | None = None
        self._stop = asyncio.Event()

    def _nats_check(self) -> str | None:
        conn = self.broker.config.connection_state
        try:
            connected = conn.connection.is_connected
        except Exception:
            connected = False
        return None if connected else "not connected to NATS"

    def health(self) -> tuple[bool, dict[str, object]]:
        problems = {name: p for name, check in self.checks.items() if (p := check()) is not None}
        if not self.ready:
            problems["startup"] = "starting"
        body: dict[str, object] = {
            "service": self.name,
            "status": "ok" if not problems else "unhealthy",
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "problems": problems,
        }
        return not problems, body

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else ""
            if path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path in ("/healthz", "/health"):
                ok, info = self.health()
                status, ctype, body = (
                    (200 if ok else 503),
                    "application/json",
                    json.dumps(info).encode(),
                )
            else:
                status, ctype, body = 404, "text/plain", b"not found: try /metrics or /healthz\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self._stop.set()

    async def run(
        self,
        *,
        needs: Sequence[StreamSpec] = (),
        on_start: Hook | None = None,
        tasks: Sequence[Hook] = (),
        on_stop: Hook | None = None,
    ) -> None:
        """Run until SIGINT/SIGTERM (or ``stop()``).

        Order: HTTP endpoints, NATS, own streams, wait for ``needs``, ``on_start``,
        subscribers, ``tasks``. Stopping runs ``on_stop`` before the broker closes.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        server = await asyncio.start_server(
            self._serve_http, self.settings.http_host, self.settings.port_for(self.name)
        )
        self.http_port = server.sockets[0].getsockname()[1]
        log.info(
            "%s starting; http://%s:%s/healthz",
            self.name,
            self.settings.http_host,
            self.http_port,
        )
        running: list[asyncio.Task[None]] = []
        try:
            await self.broker.connect()
            await declare_streams(self.broker, owned_by(self.name))
            await wait_for_streams(self.broker, needs)
            if on_start is not None:
                await on_start()
            await self.broker.start()
            running = [asyncio.create_task(t(), name=t.__name__) for t in tasks]
            self.ready = True
            log.info("%s ready", self.name)
            stop_wait = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stop_wait, *running], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_wait and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            stop_wait.cancel()
        finally:
            self.ready = False
            log.info("%s stopping", self.name)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            if on_stop is not None:
                try:
                    await on_stop()
                except Exception:
                    log.exception("error while stopping")
            await self.broker.stop()
            server.close()
            self.tracer_provider.shutdown()
            log.info("%s stopped", self.name)
