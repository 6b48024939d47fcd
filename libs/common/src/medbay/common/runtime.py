"""What every Medbay service process does around its own logic.

Logs and tracing, the broker, the HTTP endpoints ``/metrics`` (Prometheus) and
``/healthz`` (JSON; 200 when healthy, 503 otherwise), owning and waiting for
streams, and a clean stop on SIGINT/SIGTERM.

Exits: 2 when the settings or NATS credentials are unusable (restarting will not
help: the message says what to fix); 1 when the NATS connection is closed for
good (nats-py gives up on some server errors), so that a supervisor restarts
the service rather than leave it running and unhealthy. On SIGTERM every
service stops within ``STOP_GRACE_SECONDS``, connected to NATS or not: each
stopping step is bounded, and should one ignore its bound, the process says where
it was stuck and exits 1 once ``STOP_DEADLINE_SECONDS`` have passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import nats
from faststream.nats import NatsBroker
from nats.errors import Error as NatsError
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from medbay.common.bus import current_task_cancelling as current_task_cancelling
from medbay.common.bus import declare_streams, make_broker, wait_for_streams
from medbay.common.events import set_max_clock_skew
from medbay.common.health_http import Answer, serve_one
from medbay.common.settings import BusSettings, ConfigError, load_bus_settings
from medbay.common.streams import StreamSpec, owned_by
from medbay.common.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

Hook = Callable[[], Coroutine[Any, Any, None]]
HealthCheck = Callable[[], str | None]
"""Returns None when fine, or a short description of what is wrong."""

STOP_GRACE_SECONDS = 10.0
"""SIGTERM to exit, at most: within compose's default 10 s and Kubernetes' 30 s."""
_STOP_STEP_SECONDS = 3.0
STOP_DEADLINE_SECONDS = 25.0
"""A stop still under way this long after it began ends the process (exit 1): below
Kubernetes' default grace of 30 s, so the log says why rather than a SIGKILL."""


def exit_if_stuck(service: str, seconds: float = STOP_DEADLINE_SECONDS) -> threading.Timer:
    """Called as a stop begins: if it has not ended ``seconds`` later (the caller cancels
    the returned timer when it has), print every thread's and task's stack (where it is
    stuck) and exit 1."""
    loop = asyncio.get_running_loop()

    def expire() -> None:
        print(
            f"medbay {service}: still stopping after {seconds:g} s; exiting. Where it was:",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        with contextlib.suppress(Exception):  # another thread's loop: best effort
            for task in list(asyncio.all_tasks(loop)):
                task.print_stack(file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer


def _fatal(service: str, text: str, code: int) -> SystemExit:
    log.error(text)
    print(f"medbay {service}: {text}", file=sys.stderr, flush=True)
    return SystemExit(code)


def connection_problem(service: str, settings: BusSettings, exc: BaseException) -> SystemExit:
    """The exit for a failed first connection, with what to do about it."""
    url = settings.safe_nats_url()
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLError) or "certificate" in text.lower():
        return _fatal(
            service,
            f"TLS with NATS at {url} failed ({text}). Set MEDBAY_NATS_CA_FILE to the CA "
            "that signed the server's certificate (and MEDBAY_NATS_CERT_FILE and "
            "MEDBAY_NATS_KEY_FILE if the server asks for a client certificate).",
            2,
        )
    if "authorization" in text.lower() or "authentication" in text.lower():
        who = f"as user {settings.nats_user!r}" if settings.nats_user else "without credentials"
        return _fatal(
            service,
            f"NATS at {url} refused the connection {who} ({text}). Set MEDBAY_NATS_USER="
            f"{service} and MEDBAY_NATS_PASSWORD_FILE (or MEDBAY_NATS_PASSWORD) to this "
            "service's credentials: `medbay auth init` makes them, `medbay up` uses them.",
            2,
        )
    return _fatal(service, f"cannot connect to NATS at {url}: {text}", 1)


def _unusable_settings(exc: BaseException) -> bool:
    """Errors that retrying will not cure: credentials or TLS."""
    text = str(exc).lower()
    return isinstance(exc, ssl.SSLError) or any(
        word in text for word in ("authorization", "authentication", "certificate")
    )


async def probe_connection(settings: BusSettings) -> None:
    """Try one connection first: credentials or TLS that cannot work end start-up with a
    clear error (the broker itself would retry them for ever); NATS merely not up yet
    is left to the broker's retries."""

    async def quiet(_: Exception) -> None:
        pass

    try:
        nc = await nats.connect(
            settings.servers,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            error_cb=quiet,
            **settings.connect_options(),
        )
    except Exception as exc:
        if _unusable_settings(exc):
            raise NotConnected(exc) from None
        log.warning("NATS at %s is not reachable yet (%r); retrying", settings.safe_nats_url(), exc)
        return
    await nc.close()


def make_service_broker(
    name: str, settings: BusSettings, registry: CollectorRegistry, tracer_provider: Any
) -> NatsBroker:
    """The service's broker; exits 2 naming the problem if the credentials are unusable."""
    try:
        options = settings.connect_options()
    except ConfigError as exc:
        raise _fatal(name, str(exc), 2) from None
    return make_broker(
        name,
        settings.nats_url,
        registry=registry,
        tracer_provider=tracer_provider,
        options=options,
    )


class NotConnected(Exception):
    """Start-up could not connect to NATS; ``error`` says why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def watch_connection(service: str, broker: NatsBroker) -> None:
    """Return once the NATS connection is closed for good (not while it reconnects)."""
    while True:
        await asyncio.sleep(0.5)
        try:
            closed = broker.config.connection_state.connection.is_closed
        except Exception:
            continue
        if closed:
            log.error("%s: the NATS connection is closed and will not reconnect", service)
            return


async def bounded(step: Awaitable[object], what: str) -> None:
    """Run a stopping step for at most a few seconds; its failure is logged, not raised."""
    try:
        async with asyncio.timeout(_STOP_STEP_SECONDS):
            await step
    except TimeoutError:
        log.warning("%s took over %g s; going on", what, _STOP_STEP_SECONDS)
    except Exception:
        log.exception("error while %s", what)


class ServiceRuntime:
    def __init__(self, name: str, settings: BusSettings | None = None) -> None:
        self.name = name
        if settings is None:
            try:
                settings = load_bus_settings()
            except ConfigError as exc:
                raise _fatal(name, str(exc), 2) from None
        self.settings = settings
        setup_logging(name, self.settings.log_level, self.settings.log_format)
        set_max_clock_skew(self.settings.max_clock_skew_seconds)
        self.tracer_provider = setup_tracing(name)
        self.registry = CollectorRegistry()
        self.broker = make_service_broker(name, self.settings, self.registry, self.tracer_provider)
        self.checks: dict[str, HealthCheck] = {"nats": self._nats_check}
        self.info: dict[str, object] = {}
        """Facts a service adds to its ``/healthz`` body under ``info`` (JSON values)."""
        self.started_at = time.time()
        self.ready = False
        self.http_port: int | None = None
        self._stop = asyncio.Event()
        self._started = False

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
            "info": dict(self.info),
        }
        return not problems, body

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_one(reader, writer, self._http_answer)

    def _http_answer(self, path: str) -> Answer:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/healthz", "/health"):
            ok, info = self.health()
            return (200 if ok else 503), "application/json", json.dumps(info).encode()
        return 404, "text/plain", b"not found: try /metrics or /healthz\n"

    def stop(self) -> None:
        self._stop.set()

    async def _start(self, needs: Sequence[StreamSpec], on_start: Hook | None) -> None:
        await probe_connection(self.settings)
        try:
            await self.broker.connect()
        except (NatsError, OSError, TimeoutError) as exc:
            raise NotConnected(exc) from None
        await declare_streams(
            self.broker, owned_by(self.name), replicas=self.settings.nats_replicas
        )
        await wait_for_streams(self.broker, needs)
        if on_start is not None:
            await on_start()
        await self.broker.start()
        self._started = True

    async def _stop_steps(
        self,
        stop_wait: asyncio.Task[Any],
        starting: asyncio.Task[Any],
        running: list[asyncio.Task[Any]],
        on_stop: Hook | None,
    ) -> None:
        """Each stopping step, bounded."""
        for task in [stop_wait, starting, *running]:
            task.cancel()
        await bounded(asyncio.gather(starting, return_exceptions=True), "abandoning start-up")
        await bounded(
            asyncio.gather(*running, return_exceptions=True), "stopping the service's tasks"
        )
        if on_stop is not None and self._started:
            await bounded(on_stop(), "running the service's stop hook")
        await bounded(self.broker.stop(), "closing the NATS connection")

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
        lost = False
        stop_wait = asyncio.create_task(self._stop.wait())
        starting = asyncio.create_task(self._start(needs, on_start))
        try:
            # a stop must not wait for start-up: NATS may be away for long
            await asyncio.wait([stop_wait, starting], return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                return
            try:
                starting.result()
            except NotConnected as failed:
                raise connection_problem(self.name, self.settings, failed.error) from None
            except ConfigError as problem:  # e.g. more replicas than the cluster can keep
                raise _fatal(self.name, str(problem), 2) from None
            running = [asyncio.create_task(t(), name=t.__name__) for t in tasks]
            self.ready = True
            log.info("%s ready", self.name)
            connection = asyncio.create_task(watch_connection(self.name, self.broker))
            running.append(connection)
            done, _ = await asyncio.wait([stop_wait, *running], return_when=asyncio.FIRST_COMPLETED)
            lost = connection in done
            for task in done:
                if task not in (stop_wait, connection) and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.ready = False
            log.info("%s stopping", self.name)
            deadline = exit_if_stuck(self.name)
            try:
                await self._stop_steps(stop_wait, starting, running, on_stop)
                server.close()
                self.tracer_provider.shutdown()
            finally:  # over, or cut short (cancelled): either way not stuck
                deadline.cancel()
            log.info("%s stopped", self.name)
        if lost:
            raise SystemExit(1)
