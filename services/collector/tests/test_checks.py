"""Each kind of check against a real thing that is up, and one that is down, and why."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import redis.asyncio as aioredis
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from medbay.collector.checks import CheckResult, failure_reason, run_check, run_checks
from medbay.collector.collector import fresh_connection_client
from medbay.collector.config import CollectorConfig, ScrapeTarget, ServiceCheck
from medbay.collector.scrape import scrape

Dicts = Callable[..., list[dict[str, Any]]]


def check(**fields: Any) -> ServiceCheck:
    return CollectorConfig.model_validate({"services": [fields]}).services[0]


def by_name(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in samples}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with fresh_connection_client() as client:
        yield client


async def test_tcp(http, tcp_listener, closed_port, as_dicts: Dicts) -> None:
    up = await run_check(check(name="t", check="tcp", port=tcp_listener), http)
    assert up.failure is None
    [latency] = as_dicts(up.samples)
    assert latency["name"] == "service_latency_ms"
    assert latency["labels"] == {"service": "t", "check": "tcp"}
    assert 0 < latency["value"] < 1000

    down = await run_check(check(name="t", check="tcp", port=closed_port), http)
    assert down.failure == f"connection refused to 127.0.0.1:{closed_port}"
    assert down.samples == []


async def test_http(http, web, tcp_listener, closed_port, as_dicts: Dicts) -> None:
    web.routes["/ok"] = (200, "text/plain", b"ok")
    web.routes["/broken"] = (503, "text/plain", b"oops")

    ok = await run_check(check(name="w", check="http", url=web.url + "/ok"), http)
    assert ok.failure is None
    samples = by_name(as_dicts(ok.samples))
    assert samples["http_status"] == {
        "name": "http_status",
        "value": 200,
        "unit": "",
        "labels": {"service": "w"},
    }
    assert samples["service_latency_ms"]["labels"] == {"service": "w", "check": "http"}

    # It answered, so latency and status are reported, but not what was expected.
    broken = await run_check(check(name="w", check="http", url=web.url + "/broken"), http)
    assert broken.failure == "HTTP 503, expected 200"
    assert by_name(as_dicts(broken.samples))["http_status"]["value"] == 503

    expected = check(name="w", check="http", url=web.url + "/broken", expect_status=503)
    assert (await run_check(expected, http)).failure is None

    # A server that accepts and never answers: down after the timeout, no exception.
    silent = check(
        name="w", check="http", url=f"http://127.0.0.1:{tcp_listener}/", timeout_seconds=0.3
    )
    start = time.monotonic()
    hung = await run_check(silent, http)
    assert time.monotonic() - start < 10
    assert (hung.failure, hung.samples) == ("no answer within 0.3 s", [])

    refused = check(name="w", check="http", url=f"http://localhost:{closed_port}/health")
    assert (await run_check(refused, http)).failure == (
        f"connection refused to localhost:{closed_port}"
    )


async def test_redis(http, redis_url, closed_port, as_dicts: Dicts, caplog) -> None:
    cache = check(name="r", check="redis", url=redis_url)
    up = await run_check(cache, http)
    assert up.failure is None
    samples = by_name(as_dicts(up.samples))
    assert samples["redis_ping_latency_ms"]["labels"] == {"service": "r"}
    assert 0 < samples["redis_ping_latency_ms"]["value"] <= samples["service_latency_ms"]["value"]
    used = samples["redis_used_memory_bytes"]
    assert used["labels"] == {"service": "r"} and used["unit"] == "bytes"
    assert used["value"] > 100_000
    assert "redis_memory_percent" not in samples  # no maxmemory: no limit to compare with

    async with aioredis.Redis.from_url(redis_url) as admin:
        await admin.config_set("maxmemory", 64 * 1024 * 1024)
        await admin.set("filler", b"x" * 8 * 1024 * 1024)
        limited = by_name(as_dicts((await run_check(cache, http)).samples))
        info = await admin.info("memory")
    percent = limited["redis_memory_percent"]
    assert percent["labels"] == {"service": "r"} and percent["unit"] == "%"
    assert limited["redis_used_memory_bytes"]["value"] > 8 * 1024 * 1024
    # the check's own reading, against what Redis says a moment later
    assert percent["value"] == pytest.approx(
        100 * limited["redis_used_memory_bytes"]["value"] / (64 * 1024 * 1024)
    )
    assert percent["value"] == pytest.approx(100 * info["used_memory"] / info["maxmemory"], rel=0.1)

    # a user that may PING but not INFO: up all the same, without memory figures
    async with aioredis.Redis.from_url(redis_url) as admin:
        await admin.acl_setuser(
            "pinger", enabled=True, passwords=["+pw"], commands=["+ping", "+client|setname"]
        )
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    pinger = check(name="p", check="redis", url=f"redis://pinger:pw@127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING, logger="medbay.collector.checks"):
        for _ in range(2):
            restricted = await run_check(pinger, http)
            assert restricted.failure is None
            assert [s["name"] for s in as_dicts(restricted.samples)] == [
                "service_latency_ms",
                "redis_ping_latency_ms",
            ]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("redis check p: no memory figures, INFO refused: ")

    dead = check(name="r", check="redis", url=f"redis://:hunter2@127.0.0.1:{closed_port}/0")
    down = await run_check(dead, http)
    assert (down.failure, down.samples) == (f"connection refused to 127.0.0.1:{closed_port}", [])


async def test_postgres(http, postgres_url, closed_port, as_dicts: Dicts) -> None:
    pg = check(name="db", check="postgres", dsn=postgres_url)
    idle = await run_check(pg, http)
    assert idle.failure is None
    samples = by_name(as_dicts(idle.samples))
    assert samples["postgres_query_latency_ms"]["value"] > 0
    assert samples["postgres_longest_query_seconds"]["value"] == 0  # the check's own is excluded

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as sleeper:
        slow = asyncio.create_task(sleeper.execute("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.5)
        busy = by_name(as_dicts((await run_check(pg, http)).samples))
        await sleeper.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await slow
    assert 0.3 < busy["postgres_longest_query_seconds"]["value"] < 5
    assert busy["postgres_longest_query_seconds"]["unit"] == "s"

    dead = check(
        name="db", check="postgres", dsn=f"postgresql://postgres:hunter2@127.0.0.1:{closed_port}/x"
    )
    down = await run_check(dead, http)
    assert down.failure is not None and down.samples == []
    assert down.failure.startswith("OperationalError: connection failed:")
    assert f'"127.0.0.1", port {closed_port} failed: Connection refused' in down.failure
    assert "hunter2" not in down.failure and "\n" not in down.failure


async def kernel_shows(pid: int, status: str, timeout: float = 30.0) -> None:
    """Wait until the kernel reports ``status`` for ``pid`` (signals are delivered
    when the process is next scheduled)."""
    deadline = time.monotonic() + timeout
    while psutil.Process(pid).status() != status:
        assert time.monotonic() < deadline, f"pid {pid} never showed {status}"
        await asyncio.sleep(0.01)


async def test_process(http) -> None:
    argv0 = f"medbay-test-{uuid.uuid4().hex[:8]}"
    sleep = shutil.which("sleep")
    assert sleep is not None
    worker = check(name="worker", check="process", process=argv0)
    proc = await asyncio.create_subprocess_exec(argv0, "30", executable=sleep)
    try:
        assert (await run_check(worker, http)).failure is None
        # stopped (SIGSTOP): alive, but doing nothing
        os.kill(proc.pid, signal.SIGSTOP)
        await kernel_shows(proc.pid, psutil.STATUS_STOPPED)  # a busy kernel takes a moment
        stopped = await run_check(worker, http)
        assert stopped.failure == f"process {argv0} (pid {proc.pid}) is stopped"
        os.kill(proc.pid, signal.SIGCONT)
        await kernel_shows(proc.pid, psutil.STATUS_SLEEPING)
        assert (await run_check(worker, http)).failure is None
    finally:
        proc.kill()
        await proc.wait()
    gone = await run_check(worker, http)
    assert (gone.failure, gone.samples) == (f"no process named {argv0}", [])
    # `process` defaults to the service name
    default = await run_check(check(name=argv0, check="process"), http)
    assert default.failure == f"no process named {argv0}"


def test_failure_reasons_are_short_single_lines_without_secrets() -> None:
    cache = check(name="cache", check="redis", url="redis://127.0.0.1:6379/0")
    leaky = RuntimeError("cannot use redis://admin:hunter2@cache:6379/0\n  password=hunter2 here")
    assert failure_reason(leaky, cache) == (
        "RuntimeError: cannot use redis://admin:***@cache:6379/0 password=*** here"
    )
    assert failure_reason(ConnectionResetError(), cache) == "ConnectionResetError"
    long = failure_reason(ValueError("x" * 1000), cache)
    assert len(long) == 300 and long.endswith("...")
    refused = ConnectionRefusedError(111, "Connect call failed")
    wrapped = OSError("All connection attempts failed")
    wrapped.__cause__ = refused
    assert failure_reason(wrapped, cache) == "connection refused to 127.0.0.1:6379"
    unix = check(name="cache", check="redis", url="unix:///run/redis/redis.sock")
    assert failure_reason(refused, unix) == "connection refused to /run/redis/redis.sock"
    assert failure_reason(TimeoutError(), unix) == "no answer within 2 s"


async def test_checks_run_concurrently(http, tcp_listener, closed_port) -> None:
    silent = [
        {
            "name": f"s{i}",
            "check": "http",
            "url": f"http://127.0.0.1:{tcp_listener}/",
            "timeout_seconds": 2,
        }
        for i in range(4)
    ]
    config = CollectorConfig.model_validate(
        {"services": [*silent, {"name": "closed", "check": "tcp", "port": closed_port}]}
    )
    start = time.monotonic()
    results: list[CheckResult] = await run_checks(config.services, http)
    assert time.monotonic() - start < 7  # well under 4 x 2 s
    assert [r.check.name for r in results] == ["s0", "s1", "s2", "s3", "closed"]
    assert [r.failure for r in results] == [
        *["no answer within 2 s"] * 4,
        f"connection refused to 127.0.0.1:{closed_port}",
    ]


# --- checks and keep-alive -------------------------------------------------------

KEEP_ALIVE_SECONDS = 1
BUSY_SECONDS = 1.0


class BusyAfterClosingIdle(H11Protocol):
    """uvicorn's HTTP/1.1 protocol on a server busy at the moment it drops an idle
    connection: the close takes effect a second later, and a request that
    arrives meanwhile is lost with the connection. This is the race between a
    client reusing a kept-alive connection and the server's keep-alive timeout,
    widened from microseconds to a second so that it happens every time."""

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        time.sleep(BUSY_SECONDS)  # blocks the server's event loop, as other work would


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b"up 1\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def uvicorn_url() -> Iterator[str]:
    """A real uvicorn server (its h11 protocol, a 1 s keep-alive) in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            ok_app,
            http=BusyAfterClosingIdle,
            loop="asyncio",
            lifespan="off",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)
    sock.close()


async def on_schedule(times: int, call: Callable[[], Awaitable[bool]]) -> list[bool]:
    """``call()`` every keep-alive time and a half, as the collector's scrapes go."""
    loop = asyncio.get_running_loop()
    tick = loop.time()
    results = []
    for _ in range(times):
        results.append(await call())
        tick += KEEP_ALIVE_SECONDS + 0.5
        await asyncio.sleep(tick - loop.time())
    return results


async def test_checks_and_scrapes_do_not_depend_on_idle_connections(uvicorn_url, http) -> None:
    """Every 1.5 s against a server that drops connections idle for 1 s: each request
    lands after the server's keep-alive ran out, while it is busy closing. Sent on
    a reused connection, every other one would fail; all must succeed."""
    # a busy machine answers slowly; a request on a connection being closed fails at once
    web = check(name="web", check="http", url=uvicorn_url + "/healthz", timeout_seconds=30)
    target = ScrapeTarget.model_validate(
        {"name": "web", "url": uvicorn_url + "/metrics", "timeout_seconds": 30}
    )

    async def check_up() -> bool:
        return (await run_check(web, http)).failure is None

    async def scrape_up() -> bool:
        return (await scrape(target, http))[0]["value"] == 1

    assert await on_schedule(3, check_up) == [True] * 3
    assert await on_schedule(3, scrape_up) == [True] * 3
