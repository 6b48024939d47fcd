"""Redis and PostgreSQL targets against real private servers (root conftest fixtures)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis

from medbay.executor.targets import PostgresTarget, RedisTarget


async def test_clear_cache_unlinks_only_matching_keys(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.mset({f"cache:{i}": i for i in range(1234)})
        await client.mset({f"session:{i}": i for i in range(5)})
        target = RedisTarget(kind="redis", url=redis_url, pattern="cache:*", batch_size=100)

        dry = await target.perform("clear_cache", {}, dry_run=True)
        assert dry.ok, dry.output
        assert dry.output.startswith("would UNLINK 1234 keys on redis://127.0.0.1:")
        assert "matching 'cache:*' (e.g. cache:" in dry.output
        assert await client.dbsize() == 1239

        outcome = await target.perform("clear_cache", {}, dry_run=False)
        assert outcome.ok, outcome.output
        assert outcome.output.startswith("unlinked 1234 keys on redis://127.0.0.1:")
        assert sorted(await client.keys("*")) == [f"session:{i}".encode() for i in range(5)]
    finally:
        await client.aclose()


async def test_unreachable_redis_is_a_failed_step() -> None:
    target = RedisTarget(kind="redis", url="redis://:hunter2@127.0.0.1:1/0")
    outcome = await target.perform("clear_cache", {}, dry_run=False)
    assert not outcome.ok
    assert outcome.output.startswith("failed running clear_cache: ConnectionError")
    assert "hunter2" not in outcome.output


async def backend_pid(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def active(admin: psycopg.AsyncConnection[Any], pid: int) -> float | None:
    """How long backend ``pid`` has run its current query, None if it runs none."""
    cur = await admin.execute(
        "SELECT EXTRACT(EPOCH FROM clock_timestamp() - query_start)::float8"
        " FROM pg_stat_activity WHERE pid = %s AND state = 'active'",
        (pid,),
    )
    row = await cur.fetchone()
    return None if row is None else float(row[0])


async def test_optimize_query_cancels_only_long_queries(postgres_url: str) -> None:
    connect = psycopg.AsyncConnection.connect
    async with (
        await connect(postgres_url, autocommit=True) as admin,
        await connect(postgres_url, autocommit=True) as slow,
        await connect(postgres_url, autocommit=True) as quick,
    ):
        await admin.execute("CREATE TABLE orders (id int)")
        await admin.execute("INSERT INTO orders SELECT generate_series(1, 100)")
        slow_pid, quick_pid = await backend_pid(slow), await backend_pid(quick)
        slow_query = asyncio.create_task(slow.execute("SELECT pg_sleep(60)"))
        deadline = time.monotonic() + 30
        while (await active(admin, slow_pid) or 0) < 2.5:
            assert time.monotonic() < deadline, "the slow query did not start"
            await asyncio.sleep(0.1)
        quick_query = asyncio.create_task(quick.execute("SELECT pg_sleep(30)"))
        while await active(admin, quick_pid) is None:
            assert time.monotonic() < deadline, "the quick query did not start"
            await asyncio.sleep(0.02)
        target = PostgresTarget(
            kind="postgres", dsn=postgres_url, max_query_seconds=2, analyze_tables=["orders"]
        )

        dry = await target.perform("optimize_query", {}, dry_run=True)
        assert dry.ok, dry.output
        assert dry.output.startswith("would cancel 1 query running longer than 2 s:")
        assert f"PID {slow_pid} (postgres, " in dry.output
        assert "SELECT pg_sleep(60)" in dry.output
        assert str(quick_pid) not in dry.output
        assert dry.output.endswith("would ANALYZE orders")
        assert await active(admin, slow_pid) is not None  # dry run cancelled nothing

        outcome = await target.perform("optimize_query", {}, dry_run=False)
        assert outcome.ok, outcome.output
        assert f"  cancelled: PID {slow_pid} (postgres, " in outcome.output
        assert outcome.output.endswith("analyzed orders")
        with pytest.raises(psycopg.errors.QueryCanceled):
            await slow_query
        assert await active(admin, quick_pid) is not None  # the short query runs on

        cur = await admin.execute(
            "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'orders'"
        )
        assert await cur.fetchone() == (True,)
        await admin.execute("SELECT pg_cancel_backend(%s)", (quick_pid,))
        with pytest.raises(psycopg.errors.QueryCanceled):
            await quick_query


async def test_optimize_query_on_a_quiet_database(postgres_url: str) -> None:
    target = PostgresTarget(kind="postgres", dsn=postgres_url, analyze_tables=["public.nope"])
    dry = await target.perform("optimize_query", {}, dry_run=True)
    assert not dry.ok
    assert dry.output == (
        "would cancel 0 queries running longer than 60 s\n"
        "would ANALYZE public.nope\n"
        "cannot ANALYZE public.nope: no such table"
    )
    whole = PostgresTarget(kind="postgres", dsn=postgres_url)
    outcome = await whole.perform("optimize_query", {}, dry_run=False)
    assert outcome.ok, outcome.output
    assert outcome.output == ("0 queries running longer than 60 s\nanalyzed the whole database")
