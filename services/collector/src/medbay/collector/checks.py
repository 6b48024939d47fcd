"""Service checks: is each configured service up, how fast does it answer, and if
it is down, why.

``run_check`` runs one check and never raises: an error or a timeout means down,
with a short reason a person can act on ("connection refused to 127.0.0.1:6379",
"no answer within 2 s", "HTTP 503, expected 200"). ``CheckJudge`` turns the
results of each scrape into ``service_up{service,check}`` samples and reasons,
keeping what it needs across scrapes: the start-up grace and the last state.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from medbay.collector.config import (
    CollectorConfig,
    HttpCheck,
    PostgresCheck,
    ProcessCheck,
    RedisCheck,
    ServiceCheck,
    TcpCheck,
)
from medbay.collector.samples import BYTES, MS, PERCENT, SECONDS, sample
from medbay.common.events import MetricSample
from medbay.common.redact import redact_text

log = logging.getLogger(__name__)

Probe = tuple[str | None, list[MetricSample]]
"""Why the service is down (None: it is up), and what the check measured."""

MAX_REASON_CHARS = 300

TIMEOUTS = (
    TimeoutError,
    httpx.TimeoutException,
    redis.exceptions.TimeoutError,
    psycopg.errors.ConnectionTimeout,
)

LONGEST_QUERY_SQL = """
SELECT COALESCE(EXTRACT(EPOCH FROM max(clock_timestamp() - query_start)), 0)::float8
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""

_redis_without_memory_info: set[str] = set()
"""Redis checks whose server refused INFO memory, so that this is logged once each."""


@dataclass(frozen=True)
class CheckResult:
    """One run of one check."""

    check: ServiceCheck
    failure: str | None
    """Why the service is down; None when it is up."""
    samples: list[MetricSample] = field(default_factory=list)
    """What it measured besides up or down: latencies, status, memory."""


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _named(proc: psutil.Process, name: str) -> bool:
    if proc.name() == name:
        return True
    argv = proc.cmdline()
    return bool(argv) and os.path.basename(argv[0]) == name


def _find_process(name: str) -> str | None:
    """None when a process called ``name`` is running; otherwise why not.

    A process stopped by a signal (SIGSTOP, SIGTSTP) is alive but does no work,
    so only stopped ones count as down; one stopped by a debugger does not.
    """
    stopped: int | None = None
    # Not psutil.process_iter: its shared cache would disturb the host metrics'
    # per-process CPU readings, which run at the same time in another thread.
    for pid in psutil.pids():
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                status = proc.status()
                if status == psutil.STATUS_ZOMBIE or not _named(proc, name):
                    continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if status != psutil.STATUS_STOPPED:
            return None
        stopped = pid
    if stopped is not None:
        return f"process {name} (pid {stopped}) is stopped"
    return f"no process named {name}"


async def probe_process(check: ProcessCheck, _: httpx.AsyncClient) -> Probe:
    return await asyncio.to_thread(_find_process, check.process or check.name), []


async def probe_tcp(check: TcpCheck, _: httpx.AsyncClient) -> Probe:
    start = time.perf_counter()
    _reader, writer = await asyncio.open_connection(check.host, check.port)
    latency = _ms_since(start)
    writer.close()
    await writer.wait_closed()
    labels = {"service": check.name, "check": check.check}
    return None, [sample("service_latency_ms", latency, MS, **labels)]


async def probe_http(check: HttpCheck, http: httpx.AsyncClient) -> Probe:
    start = time.perf_counter()
    response = await http.get(str(check.url), timeout=check.timeout_seconds)
    latency = _ms_since(start)
    labels = {"service": check.name, "check": check.check}
    status = response.status_code
    failure = (
        None if status == check.expect_status else f"HTTP {status}, expected {check.expect_status}"
    )
    return failure, [
        sample("service_latency_ms", latency, MS, **labels),
        sample("http_status", status, service=check.name),
    ]


async def _redis_memory(client: aioredis.Redis, check: RedisCheck) -> list[MetricSample]:
    """``redis_used_memory_bytes`` and, when maxmemory is set, ``redis_memory_percent``."""
    try:
        memory = await client.info("memory")
    except redis.exceptions.ResponseError as exc:  # a user without +info: still up
        if check.name not in _redis_without_memory_info:
            _redis_without_memory_info.add(check.name)
            log.warning("redis check %s: no memory figures, INFO refused: %s", check.name, exc)
        return []
    used = float(memory["used_memory"])
    samples = [sample("redis_used_memory_bytes", used, BYTES, service=check.name)]
    limit = float(memory.get("maxmemory", 0))
    if limit > 0:
        samples.append(
            sample("redis_memory_percent", 100.0 * used / limit, PERCENT, service=check.name)
        )
    return samples


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
        latency = _ms_since(start)
        memory = await _redis_memory(client, check)
    finally:
        await client.aclose()
    labels = {"service": check.name, "check": check.check}
    return None, [
        sample("service_latency_ms", latency, MS, **labels),
        sample("redis_ping_latency_ms", ping, MS, service=check.name),
        *memory,
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
    return None, [
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


def _address(check: ServiceCheck) -> str | None:
    """host:port (or socket path) the check connects to, for saying what refused."""
    match check:
        case TcpCheck():
            return f"{check.host}:{check.port}"
        case HttpCheck():
            return f"{check.url.host}:{check.url.port}"
        case RedisCheck():
            url = urlsplit(check.url)
            return url.path if url.scheme == "unix" else f"{url.hostname}:{url.port or 6379}"
    return None


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it came from is a refused connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or (
            isinstance(current, OSError) and current.errno == errno.ECONNREFUSED
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def failure_reason(exc: BaseException, check: ServiceCheck) -> str:
    """A short, single-line reason without secrets: what a person reads first."""
    if isinstance(exc, TIMEOUTS):
        return f"no answer within {check.timeout_seconds:g} s"
    if _refused(exc):
        address = _address(check)
        return f"connection refused to {address}" if address else "connection refused"
    message = " ".join(str(exc).split())
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    reason = redact_text(reason)
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return reason


async def run_check(check: ServiceCheck, http: httpx.AsyncClient) -> CheckResult:
    """Run one check within its timeout; never raises."""
    try:
        async with asyncio.timeout(check.timeout_seconds):
            failure, samples = await PROBES[check.check](check, http)
    except Exception as exc:  # whatever went wrong, the service is down
        return CheckResult(check, failure_reason(exc, check))
    return CheckResult(check, failure, samples)


async def run_checks(checks: Sequence[ServiceCheck], http: httpx.AsyncClient) -> list[CheckResult]:
    """All checks at once, each bounded by its own timeout."""
    return list(await asyncio.gather(*(run_check(c, http) for c in checks)))


@dataclass
class JudgedChecks:
    """What one scrape reports of its checks."""

    samples: list[MetricSample] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """Why each failing check failed, by service name (``MetricBatch.check_errors``)."""


class CheckJudge:
    """Decides what each check's result says, remembering each check across scrapes.

    Start-up grace: until a check has succeeded once, a failure within its
    ``startup_grace_seconds`` of ``started_at`` reports nothing (no
    ``service_up``, no reason): the service may still be starting, as may the
    collector next to it. After its first success, or once the grace is over,
    every failure counts.

    Logs state changes only: down (with the reason) at WARNING, up again at INFO.
    """

    def __init__(self, config: CollectorConfig, started_at: float) -> None:
        self.started_at = started_at
        self.grace = {check.name: config.startup_grace(check) for check in config.services}
        self._succeeded: set[str] = set()
        self._up: dict[str, bool] = {}
        self._waiting: set[str] = set()

    def judge(self, results: Sequence[CheckResult], now: float) -> JudgedChecks:
        """``now`` is on the clock of ``started_at`` (monotonic seconds)."""
        judged = JudgedChecks()
        for result in results:
            check = result.check
            up = result.failure is None
            if up:
                self._succeeded.add(check.name)
            elif self._in_grace(check.name, now):
                if check.name not in self._waiting:
                    self._waiting.add(check.name)
                    log.info(
                        "%s (%s check) not judged yet: %s; it has %g s from the start to come up",
                        check.name,
                        check.check,
                        result.failure,
                        self.grace[check.name],
                    )
                continue
            self._log_change(check, result.failure)
            labels = {"service": check.name, "check": check.check}
            judged.samples += [sample("service_up", 1.0 if up else 0.0, **labels), *result.samples]
            if result.failure is not None:
                judged.errors[check.name] = result.failure
        return judged

    def _in_grace(self, name: str, now: float) -> bool:
        return name not in self._succeeded and now - self.started_at < self.grace[name]

    def _log_change(self, check: ServiceCheck, failure: str | None) -> None:
        was_up = self._up.get(check.name)
        self._up[check.name] = failure is None
        if failure is not None and was_up is not False:
            log.warning("%s (%s check) is down: %s", check.name, check.check, failure)
        elif failure is None and was_up is False:
            log.info("%s (%s check) is up again", check.name, check.check)
