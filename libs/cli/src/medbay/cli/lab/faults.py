"""The faults the lab injects, each a real thing done to a real part of the sandbox.

A fault says what it breaks, which executor targets may rightly be acted on
while it lasts (anything else acted on is a needless action), and what should
become of it: ``auto_resolved`` (fixed and the fix verified, with nobody asked)
or ``escalated`` (no safe fix exists, so a person must be told). ``repair``
undoes whatever is left once its episode is over, so the next fault starts from
a healthy sandbox: it is the lab tidying up, and never counts as a fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import psutil

from medbay.cli.lab.sandbox import (
    EDGE_HOST,
    FLAKY,
    LAB_HOST,
    LOGS,
    POSTGRES,
    REDIS,
    REDIS_MAXMEMORY,
    SCRATCH,
    WEB,
    WORKER,
    MiB,
    Sandbox,
    wait_port,
)

Expected = Literal["auto_resolved", "escalated"]
Step = Callable[[Sandbox], Awaitable[None]]


@dataclass(frozen=True)
class Fault:
    kind: str
    description: str
    expected: Expected
    targets: tuple[str, ...]
    """The executor targets that may be acted on while it lasts."""
    host: str
    inject: Step
    repair: Step


def _post(sandbox: Sandbox, target: str, path: str, timeout: float = 60.0) -> None:
    request = urllib.request.Request(sandbox.url(target) + path.lstrip("/"), method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()


def _signal(sandbox: Sandbox, target: str, sig: signal.Signals) -> None:
    pid = sandbox.target_pid(target)
    if pid is None:
        raise RuntimeError(f"{target} is not running, so it cannot be broken")
    os.kill(pid, sig)


def _healthy(sandbox: Sandbox, target: str) -> bool:
    try:
        with urllib.request.urlopen(sandbox.url(target), timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


async def _restore_service(sandbox: Sandbox, target: str) -> None:
    """Make ``target`` one healthy process again, whatever the fault left."""
    pid = sandbox.target_pid(target)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    if pid is not None and await asyncio.to_thread(_healthy, sandbox, target):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.memory_info().rss < 100 * MiB and proc.cpu_percent(0.5) < 50:
                return
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(10)
    sandbox.start_target(target)
    await asyncio.to_thread(wait_port, sandbox.ports[target], 30)


# --- the faults ----------------------------------------------------------------------------


async def kill_web(sandbox: Sandbox) -> None:
    _signal(sandbox, WEB, signal.SIGKILL)


async def hang_web(sandbox: Sandbox) -> None:
    _signal(sandbox, WEB, signal.SIGSTOP)


async def restore_web(sandbox: Sandbox) -> None:
    await _restore_service(sandbox, WEB)


async def leak_worker(sandbox: Sandbox) -> None:
    await asyncio.to_thread(_post, sandbox, WORKER, "/fault/leak?mb=400")


async def spin_worker(sandbox: Sandbox) -> None:
    await asyncio.to_thread(_post, sandbox, WORKER, "/fault/spin")


async def restore_worker(sandbox: Sandbox) -> None:
    await _restore_service(sandbox, WORKER)


async def flood_logs(sandbox: Sandbox) -> None:
    await asyncio.to_thread(_post, sandbox, WEB, "/fault/flood?mb=32")


async def tidy_logs(sandbox: Sandbox) -> None:
    for path in sandbox.logs_dir.iterdir():
        if path.name == "app.log":
            os.truncate(path, 0)
        else:
            path.unlink(missing_ok=True)


def _fill_scratch(sandbox: Sandbox) -> None:
    stale = time.time() - 30 * 86_400  # a build cache nobody cleaned for a month
    block = os.urandom(MiB)
    for i in range(32):
        path = sandbox.scratch_dir / f"cache-{time.monotonic_ns()}-{i}.tmp"
        path.write_bytes(block)
        os.utime(path, (stale, stale))


async def fill_scratch(sandbox: Sandbox) -> None:
    await asyncio.to_thread(_fill_scratch, sandbox)


async def tidy_scratch(sandbox: Sandbox) -> None:
    for path in sandbox.scratch_dir.iterdir():
        path.unlink(missing_ok=True)


class SlowQuery:
    """A query that runs far longer than it should, on its own connection."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None

    async def inject(self, sandbox: Sandbox) -> None:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(sandbox.postgres_dsn, autocommit=True)

        async def run() -> None:
            try:
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("SELECT pg_sleep(600) /* a report gone wrong */")
            finally:
                await conn.close()

        self.task = asyncio.create_task(run())

    async def repair(self, sandbox: Sandbox) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


async def grow_redis(sandbox: Sandbox) -> None:
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    client = aioredis.Redis.from_url(sandbox.redis_url)
    value = os.urandom(256 * 1024)
    try:
        for i in range(REDIS_MAXMEMORY // len(value) + 16):
            try:
                await client.set(f"session:{time.monotonic_ns()}:{i}", value)
            except ResponseError:  # OOM: noeviction refuses writes once full
                break
    finally:
        await client.aclose()


async def flush_redis(sandbox: Sandbox) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(sandbox.redis_url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def crash_loop(sandbox: Sandbox) -> None:
    sandbox.crash_flag.touch()
    _signal(sandbox, FLAKY, signal.SIGKILL)


async def end_crash_loop(sandbox: Sandbox) -> None:
    sandbox.crash_flag.unlink(missing_ok=True)
    await _restore_service(sandbox, FLAKY)


async def silence_edge(sandbox: Sandbox) -> None:
    proc = sandbox.procs["collector-edge"]
    proc.kill()
    await asyncio.to_thread(proc.wait, 10)


async def restore_edge(sandbox: Sandbox) -> None:
    if sandbox.procs["collector-edge"].poll() is not None:
        sandbox.start_collector("collector-edge")


SLOW_QUERY = SlowQuery()

FAULTS: tuple[Fault, ...] = (
    Fault(
        "service_killed",
        f"{WEB} killed with SIGKILL",
        "auto_resolved",
        (WEB,),
        LAB_HOST,
        kill_web,
        restore_web,
    ),
    Fault(
        "service_hung",
        f"{WEB} stopped with SIGSTOP: alive, not answering",
        "auto_resolved",
        (WEB,),
        LAB_HOST,
        hang_web,
        restore_web,
    ),
    Fault(
        "memory_hog",
        f"{WORKER} takes 400 MiB more memory and keeps it",
        "auto_resolved",
        (WORKER,),
        LAB_HOST,
        leak_worker,
        restore_worker,
    ),
    Fault(
        "cpu_spinner",
        f"{WORKER} spins on every core (4 threads a core)",
        "auto_resolved",
        (WORKER,),
        LAB_HOST,
        spin_worker,
        restore_worker,
    ),
    Fault(
        "log_flood",
        f"{WEB} writes 32 MiB of log lines at once (budget 24 MiB)",
        "auto_resolved",
        (LOGS,),
        LAB_HOST,
        flood_logs,
        tidy_logs,
    ),
    Fault(
        "disk_filling",
        "32 MiB of month-old cache files pile up in the scratch directory (budget 24 MiB)",
        "auto_resolved",
        (SCRATCH,),
        LAB_HOST,
        fill_scratch,
        tidy_scratch,
    ),
    Fault(
        "slow_query",
        "a PostgreSQL query sleeps for 10 minutes",
        "auto_resolved",
        (POSTGRES,),
        LAB_HOST,
        SLOW_QUERY.inject,
        SLOW_QUERY.repair,
    ),
    Fault(
        "redis_memory",
        "Redis fills up to its 32 MiB limit with session keys",
        "auto_resolved",
        (REDIS,),
        LAB_HOST,
        grow_redis,
        flush_redis,
    ),
    Fault(
        "crash_loop",
        f"{FLAKY} dies 5 s after every start",
        "escalated",
        (FLAKY,),
        LAB_HOST,
        crash_loop,
        end_crash_loop,
    ),
    Fault(
        "host_silent",
        f"the collector of {EDGE_HOST} dies: its metrics stop (no safe fix)",
        "escalated",
        (),
        EDGE_HOST,
        silence_edge,
        restore_edge,
    ),
)
FAULTS_BY_KIND = {fault.kind: fault for fault in FAULTS}
