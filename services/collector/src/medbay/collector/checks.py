"""Service checks: is each configured service up, and how fast does it answer.

Every check yields ``service_up{service,check}`` (1 or 0) and never raises: an
error or a timeout means down.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import psutil
import psycopg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from medbay.collector.config import (
    HttpCheck,
    PostgresCheck,
    ProcessCheck,
    RedisCheck,
    ServiceCheck,
    TcpCheck,
)
from medbay.collector.samples import MS, SECONDS, sample
from medbay.common.events import MetricSample

log = logging.getLogger(__name__)

Probe = tuple[bool, list[MetricSample]]

LONGEST_QUERY_SQL = """
SELECT COALESCE(EXTRACT(EPOCH FROM max(clock_timestamp() - query_start)), 0)::float8
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _process_alive(name: str) -> bool:
    # Not psutil.process_iter: its shared cache would disturb the host metrics'
    # per-process CPU readings, which run at the same time in another thread.
    for pid in psutil.pids():
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if proc.name() == name:
                    return True
                argv = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if argv and os.path.basename(argv[0]) == name:
            return True
    return False


async def probe_process(check: ProcessCheck, _: httpx.AsyncClient) -> Probe:
    return await asyncio.to_thread(_process_alive, check.process or check.name), []


async def probe_tcp(check: TcpCheck, _: httpx.AsyncClient) -> Probe:
    start = time.perf_counter()
    _reader, writer = await asyncio.open_connection(check.host, check.port)
    latency = _ms_since(start)
    writer.close()
    await writer.wait_closed()
    labels = {"service": check.name, "check": check.check}
    return True, [sample("service_latency_ms", latency, MS, **labels)]


async def probe_http(check: HttpCheck, http: httpx.AsyncClient) -> Probe:
    start = time.perf_counter()
    response = await http.get(str(check.url), timeout=check.timeout_seconds)
    latency = _ms_since(start)
    labels = {"service": check.name, "check": check.check}
    return response.status_code == check.expect_status, [
        sample("service_latency_ms", latency, MS, **labels),
        sample("http_status", response.status_code, service=check.name),
    ]


async def probe_redis(check: RedisCheck, _: httpx.AsyncClient) -> Probe:
    start = time.perf_counter()
    client = aioredis.Redis.from_url(
        check.url,
        socket_timeout=check.timeout_seconds,
        socket_connect_timeout=check.timeout_seconds,
        retry=Retry(NoBackoff(), 0),  # one attempt: the check runs again next scrape
        single_connection_client=True,
        client_name="medbay-collector",
    )
    try:
        await client.initialize()  # connects, so that the ping below is only the ping
        ping_start = time.perf_counter()
        await client.ping()
        ping = _ms_since(ping_start)
    finally:
        await client.aclose()
    labels = {"service": check.name, "check": check.check}
    return True, [
        sample("service_latency_ms", _ms_since(start), MS, **labels),
        sample("redis_ping_latency_ms", ping, MS, service=check.name),
    ]


async def probe_postgres(check: PostgresCheck, _: httpx.AsyncClient) -> Probe:
    start = time.perf_counter()
    conn = await psycopg.AsyncConnection.connect(
        check.dsn,
        autocommit=True,
        connect_timeout=max(1, math.ceil(check.timeout_seconds)),
        application_name="medbay-collector",
    )
    try:
        query_start = time.perf_counter()
        await conn.execute("SELECT 1")
        query = _ms_since(query_start)
        cursor = await conn.execute(LONGEST_QUERY_SQL)
        row = await cursor.fetchone()
    finally:
        await conn.close()
    labels = {"service": check.name, "check": check.check}
    longest = row[0] if row else 0.0
    return True, [
        sample("service_latency_ms", _ms_since(start), MS, **labels),
        sample("postgres_query_latency_ms", query, MS, service=check.name),
        sample("postgres_longest_query_seconds", longest, SECONDS, service=check.name),
    ]


PROBES: dict[str, Callable[[Any, httpx.AsyncClient], Awaitable[Probe]]] = {
    "process": probe_process,
    "tcp": probe_tcp,
    "http": probe_http,
    "redis": probe_redis,
    "postgres": probe_postgres,
}


async def run_check(check: ServiceCheck, http: httpx.AsyncClient) -> list[MetricSample]:
    try:
        async with asyncio.timeout(check.timeout_seconds):
            up, samples = await PROBES[check.check](check, http)
    except Exception as exc:  # whatever went wrong, the service is down
        log.debug("check %s (%s) failed: %r", check.name, check.check, exc)
        up, samples = False, []
    labels = {"service": check.name, "check": check.check}
    return [sample("service_up", 1.0 if up else 0.0, **labels), *samples]


async def run_checks(checks: Sequence[ServiceCheck], http: httpx.AsyncClient) -> list[MetricSample]:
    """All checks at once, each bounded by its own timeout."""
    results = await asyncio.gather(*(run_check(c, http) for c in checks))
    return [s for samples in results for s in samples]
