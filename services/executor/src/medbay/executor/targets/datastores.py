"""Data stores: clear a Redis cache, relieve a PostgreSQL database."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import psycopg
import redis.asyncio as aioredis
from psycopg import sql
from pydantic import Field
from redis.exceptions import RedisError

from medbay.common.events import ActionName
from medbay.executor.targets.base import StepOutcome, Target, plural, safe_url

SAMPLE_KEYS = 5
"""Key names quoted in a clear_cache output."""

TableName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$", max_length=127),
]


class RedisTarget(Target):
    """clear_cache: SCAN the keys matching ``pattern`` and UNLINK them in batches."""

    kind: Literal["redis"]
    url: str = Field(pattern=r"^(rediss?|unix)://", description="e.g. redis://host:6379/0")
    pattern: str = Field(default="*", min_length=1, description="SCAN MATCH pattern.")
    batch_size: int = Field(default=500, ge=1, le=10_000, description="Keys per SCAN and UNLINK.")

    supports: ClassVar[frozenset[ActionName]] = frozenset({"clear_cache"})
    system_errors: ClassVar[tuple[type[Exception], ...]] = (OSError, RedisError)

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        where = f"{safe_url(self.url)} matching {self.pattern!r}"
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=30)
        try:
            if dry_run:
                count = 0
                sample: list[str] = []
                async for key in client.scan_iter(match=self.pattern, count=self.batch_size):
                    count += 1
                    if len(sample) < SAMPLE_KEYS:
                        sample.append(key.decode(errors="replace"))
                example = f" (e.g. {', '.join(sample)})" if sample else ""
                return StepOutcome(True, f"would UNLINK {plural(count, 'key')} on {where}{example}")
            deleted = 0
            batch: list[bytes] = []
            async for key in client.scan_iter(match=self.pattern, count=self.batch_size):
                batch.append(key)
                if len(batch) >= self.batch_size:
                    deleted += await client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await client.unlink(*batch)
            return StepOutcome(True, f"unlinked {plural(deleted, 'key')} on {where}")
        finally:
            await client.aclose()


LONG_QUERIES = """
SELECT pid, usename, EXTRACT(EPOCH FROM clock_timestamp() - query_start)::float8, query
FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND backend_type = 'client backend'
  AND pid <> pg_backend_pid() AND query_start < clock_timestamp() - make_interval(secs => %s)
ORDER BY query_start
"""

CANCEL_IF_STILL_LONG = """
SELECT pg_cancel_backend(pid) FROM pg_stat_activity
WHERE pid = %s AND state = 'active' AND query_start < clock_timestamp() - make_interval(secs => %s)
"""
"""Cancels a backend only if it is still running a long query (not its next, short one)."""


class PostgresTarget(Target):
    """optimize_query: cancel queries running longer than the limit, then ANALYZE.

    Only queries of client backends in the same database are cancelled, never the
    executor's own. ``analyze_tables`` limits ANALYZE to those tables.
    """

    kind: Literal["postgres"]
    dsn: str = Field(min_length=1, description="libpq connection string or postgresql:// URL.")
    max_query_seconds: float = Field(default=60.0, gt=0, le=86_400)
    analyze_tables: list[TableName] = Field(
        default_factory=list, description="Tables (table or schema.table); empty: the database."
    )

    supports: ClassVar[frozenset[ActionName]] = frozenset({"optimize_query"})
    system_errors: ClassVar[tuple[type[Exception], ...]] = (OSError, psycopg.Error)

    def _identifier(self, table: str) -> sql.Identifier:
        return sql.Identifier(*table.split("."))

    async def run(self, action: ActionName, params: dict[str, Any], dry_run: bool) -> StepOutcome:
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=10, application_name="medbay-executor"
        )
        async with conn:
            cur = await conn.execute(LONG_QUERIES, (self.max_query_seconds,))
            long = [
                (pid, f"PID {pid} ({user}, {seconds:.1f} s): {' '.join(str(query).split())[:200]}")
                for pid, user, seconds, query in await cur.fetchall()
            ]
            queries = plural(len(long), "query", "queries")
            head = f"{queries} running longer than {self.max_query_seconds:g} s"
            if dry_run:
                lines = [f"would cancel {head}" + (":" if long else "")]
                lines += [f"  {text}" for _, text in long]
                missing = await self._missing_tables(conn)
                tables = ", ".join(self.analyze_tables) or "the whole database"
                lines.append(f"would ANALYZE {tables}")
                lines += [f"cannot ANALYZE {table}: no such table" for table in missing]
                return StepOutcome(not missing, "\n".join(lines))
            lines = [head + (":" if long else "")]
            cancelled = await self._cancel(conn, long, lines)
            analyzed = await self._analyze(conn, lines)
            return StepOutcome(cancelled and analyzed, "\n".join(lines))

    async def _cancel(
        self, conn: psycopg.AsyncConnection[Any], long: list[tuple[int, str]], lines: list[str]
    ) -> bool:
        ok = True
        for pid, text in long:
            try:
                cur = await conn.execute(CANCEL_IF_STILL_LONG, (pid, self.max_query_seconds))
                row = await cur.fetchone()
            except psycopg.errors.InsufficientPrivilege as exc:
                ok = False
                lines.append(f"  not permitted to cancel {text}: {exc}")
                continue
            done = "cancelled" if row and row[0] else "had already finished"
            lines.append(f"  {done}: {text}")
        return ok

    async def _missing_tables(self, conn: psycopg.AsyncConnection[Any]) -> list[str]:
        missing = []
        for table in self.analyze_tables:
            name = self._identifier(table).as_string(conn)
            cur = await conn.execute("SELECT to_regclass(%s)", (name,))
            row = await cur.fetchone()
            if row is None or row[0] is None:
                missing.append(table)
        return missing

    async def _analyze(self, conn: psycopg.AsyncConnection[Any], lines: list[str]) -> bool:
        if not self.analyze_tables:
            await conn.execute("ANALYZE")
            lines.append("analyzed the whole database")
            return True
        ok = True
        for table in self.analyze_tables:
            try:
                await conn.execute(sql.SQL("ANALYZE {}").format(self._identifier(table)))
            except psycopg.errors.UndefinedTable:
                ok = False
                lines.append(f"cannot ANALYZE {table}: no such table")
            else:
                lines.append(f"analyzed {table}")
        return ok
