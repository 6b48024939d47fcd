"""The gateway service: the REST and WebSocket API over Medbay's streams.

Wiring only. ``ServiceRuntime`` sets up logs, tracing, the Prometheus registry,
the broker and the health checks, but its own small HTTP server is not started:
uvicorn serves the API, ``/metrics`` and ``/healthz`` together on the gateway's
port (``settings.port_for("gateway")``, 8470 by default), in this process's
event loop, next to the feeds that read the streams.

Start-up: listen at once (``/healthz`` says 503 and why until ready), connect to
NATS, wait for the streams the gateway reads (it owns none), read their history
into the views, then follow them live.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import signal
import socket
import sys
from collections.abc import Iterator

import httpx
import uvicorn
from nats.errors import Error as NatsError

from medbay.common.bus import jetstream, publish_event, wait_for_streams
from medbay.common.events import Event
from medbay.common.runtime import (
    NotConnected,
    ServiceRuntime,
    bounded,
    connection_problem,
    exit_if_stuck,
    probe_connection,
    watch_connection,
)
from medbay.common.settings import (
    BusSettings,
    ConfigError,
    config_from_command_line,
    load_bus_settings,
)
from medbay.common.streams import StreamSpec
from medbay.gateway.api import build_app
from medbay.gateway.config import GatewayConfig, load_config
from medbay.gateway.service import READS, GatewayService

log = logging.getLogger("medbay.gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` handles SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HideTokens(logging.Filter):
    """uvicorn logs each WebSocket's path and query, which may hold a token: not here."""

    TOKEN = re.compile(r"(token=)[^&\s\"]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = self.TOKEN.sub(r"\1***", message), ()
        return True


def listen(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP said explicitly: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it every keep-alive response waits ~40 ms for a delayed ACK
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def settle(service: GatewayService) -> None:
    """Once the history is read: keep the cycle collector off the objects it made.

    They hold no reference cycles (reference counting frees them when they go), and
    scanning a million of them in a full collection stalls requests for ~0.3 s.
    """
    await asyncio.gather(*(feed.caught_up.wait() for feed in service.feeds))
    gc.collect()
    gc.freeze()
    log.info(
        "ready: %d incidents, metrics of %d hosts", len(service.incidents), len(service.metrics)
    )


async def serve(config: GatewayConfig, settings: BusSettings) -> int:
    try:
        sock = listen(settings.http_host, settings.port_for("gateway"))
    except OSError as exc:
        address = f"{settings.http_host}:{settings.port_for('gateway')}"
        print(f"medbay gateway: cannot listen on {address}: {exc.strerror}", file=sys.stderr)
        return 1
    rt = ServiceRuntime("gateway", settings)
    logging.getLogger("uvicorn.error").addFilter(HideTokens())
    service = GatewayService(config, registry=rt.registry, max_event_bytes=settings.max_event_bytes)
    rt.checks["history"] = service.starting
    app = build_app(
        service, registry=rt.registry, own_health=rt.health, static_dir=config.static_dir
    )
    server = _Server(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            ws_max_size=64 * 1024,
            ws_ping_interval=20,
            ws_ping_timeout=20,
            timeout_graceful_shutdown=3,
        )
    )
    port = sock.getsockname()[1]
    own_url = f"http://{settings.http_host}:{port}/healthz"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    web = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    log.info("gateway listening on http://%s:%d (docs at /docs)", settings.http_host, port)
    http = httpx.AsyncClient()

    async def publish(event: Event, stream: StreamSpec) -> bool:
        return await publish_event(
            rt.broker, event, stream=stream, timeout=settings.publish_timeout
        )

    not_connected: list[BaseException] = []

    async def start_up() -> None:
        try:
            await probe_connection(settings)
            await rt.broker.connect()
        except NotConnected as exc:
            not_connected.append(exc.error)
            return
        except (NatsError, OSError, TimeoutError) as exc:
            not_connected.append(exc)
            return
        await wait_for_streams(rt.broker, READS)  # may take long: a stop must not wait for it
        service.attach(
            rt.broker.config.connection_state.connection,
            jetstream(rt.broker),
            publish,
            http=http,
            own_url=own_url,
            own_health=rt.health,
        )

    lost = False
    stopping = asyncio.create_task(stop.wait(), name="stop")
    starting = asyncio.create_task(start_up(), name="start-up")
    helpers = [stopping, starting]
    running: list[asyncio.Task[None]] = [web]
    """Serving and the feeds: if one ends, the gateway stops."""
    try:
        await asyncio.wait([stopping, starting, web], return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failure to start ends here
            if not_connected:
                raise connection_problem("gateway", settings, not_connected[0])
            running += [asyncio.create_task(t(), name=t.__name__) for t in service.tasks()]
            connection = asyncio.create_task(watch_connection("gateway", rt.broker))
            running.append(connection)
            helpers.append(asyncio.create_task(settle(service), name="settle"))
            rt.ready = True  # the "history" check holds /healthz at 503 until caught up
            done, _ = await asyncio.wait([stopping, *running], return_when=asyncio.FIRST_COMPLETED)
            lost = connection in done
            for task in done:
                if task is not stopping and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        rt.ready = False
        log.info("gateway stopping")
        deadline = exit_if_stuck("gateway")
        try:
            server.should_exit = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(4):
                    await asyncio.shield(web)
            for task in [*helpers, *running]:
                task.cancel()
            await bounded(asyncio.gather(*helpers, *running, return_exceptions=True), "stopping")
            await bounded(http.aclose(), "closing the HTTP client")
            await bounded(rt.broker.stop(), "closing the NATS connection")
            rt.tracer_provider.shutdown()
        finally:  # over, or cut short (cancelled): either way not stuck
            deadline.cancel()
        log.info("gateway stopped")
    return 1 if lost else 0


def main(argv: list[str] | None = None) -> None:
    """Tokens may also come from ``$MEDBAY_GATEWAY_TOKENS`` as ``name:role:token,...``."""
    config = config_from_command_line(
        "gateway", argv, load_config, otherwise="no tokens: refused unless anonymous"
    )
    try:
        settings = load_bus_settings()
    except ConfigError as exc:
        print(f"medbay gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.exit(asyncio.run(serve(config, settings)))


if __name__ == "__main__":
    main()
