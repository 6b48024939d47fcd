"""Each kind of check against a real thing that is up, and one that is down."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest

from medbay.collector.checks import run_check, run_checks
from medbay.collector.config import CollectorConfig, ServiceCheck

Dicts = Callable[..., list[dict[str, Any]]]


def check(**fields: Any) -> ServiceCheck:
    return CollectorConfig.model_validate({"services": [fields]}).services[0]


def by_name(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in samples}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def test_tcp(http, tcp_listener, closed_port, as_dicts: Dicts) -> None:
    up = by_name(as_dicts(await run_check(check(name="t", check="tcp", port=tcp_listener), http)))
    assert up["service_up"]["value"] == 1
    assert up["service_up"]["labels"] == {"service": "t", "check": "tcp"}
    assert 0 < up["service_latency_ms"]["value"] < 1000

    down = as_dicts(await run_check(check(name="t", check="tcp", port=closed_port), http))
    assert [(s["name"], s["value"]) for s in down] == [("service_up", 0)]


async def test_http(http, web, tcp_listener, as_dicts: Dicts) -> None:
    web.routes["/ok"] = (200, "text/plain", b"ok")
    web.routes["/broken"] = (500, "text/plain", b"oops")

    ok = by_name(
        as_dicts(await run_check(check(name="w", check="http", url=web.url + "/ok"), http))
    )
    assert ok["service_up"]["value"] == 1
    assert ok["http_status"] == {
        "name": "http_status",
        "value": 200,
        "unit": "",
        "labels": {"service": "w"},
    }
    assert ok["service_latency_ms"]["labels"] == {"service": "w", "check": "http"}

    # It answered, so latency and status are reported, but not what was expected.
    broken = by_name(
        as_dicts(await run_check(check(name="w", check="http", url=web.url + "/broken"), http))
    )
    assert broken["service_up"]["value"] == 0
    assert broken["http_status"]["value"] == 500
    assert "service_latency_ms" in broken

    expected = check(name="w", check="http", url=web.url + "/broken", expect_status=500)
    assert by_name(as_dicts(await run_check(expected, http)))["service_up"]["value"] == 1

    # A server that accepts and never answers: down after the timeout, no exception.
    silent = check(
        name="w", check="http", url=f"http://127.0.0.1:{tcp_listener}/", timeout_seconds=0.3
    )
    start = time.monotonic()
    down = as_dicts(await run_check(silent, http))
    assert time.monotonic() - start < 2
    assert [(s["name"], s["value"]) for s in down] == [("service_up", 0)]


async def test_redis(http, redis_url, closed_port, as_dicts: Dicts) -> None:
    up = by_name(as_dicts(await run_check(check(name="r", check="redis", url=redis_url), http)))
    assert up["service_up"]["value"] == 1
    assert up["redis_ping_latency_ms"]["labels"] == {"service": "r"}
    assert 0 < up["redis_ping_latency_ms"]["value"] <= up["service_latency_ms"]["value"]

    dead = check(name="r", check="redis", url=f"redis://127.0.0.1:{closed_port}/0")
    assert [s["value"] for s in as_dicts(await run_check(dead, http))] == [0]


async def test_postgres(http, postgres_url, closed_port, as_dicts: Dicts) -> None:
    pg = check(name="db", check="postgres", dsn=postgres_url)
    idle = by_name(as_dicts(await run_check(pg, http)))
    assert idle["service_up"]["value"] == 1
    assert idle["postgres_query_latency_ms"]["value"] > 0
    assert idle["postgres_longest_query_seconds"]["value"] == 0  # the check's own is excluded

    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as sleeper:
        slow = asyncio.create_task(sleeper.execute("SELECT pg_sleep(5)"))
        await asyncio.sleep(0.5)
        busy = by_name(as_dicts(await run_check(pg, http)))
        await sleeper.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await slow
    assert busy["service_up"]["value"] == 1
    assert 0.3 < busy["postgres_longest_query_seconds"]["value"] < 5
    assert busy["postgres_longest_query_seconds"]["unit"] == "s"

    dead = check(name="db", check="postgres", dsn=f"postgresql://127.0.0.1:{closed_port}/x")
    assert [s["value"] for s in as_dicts(await run_check(dead, http))] == [0]


async def test_process(http, as_dicts: Dicts) -> None:
    argv0 = f"medbay-test-{uuid.uuid4().hex[:8]}"
    sleep = shutil.which("sleep")
    assert sleep is not None
    proc = await asyncio.create_subprocess_exec(argv0, "30", executable=sleep)
    try:
        alive = await run_check(check(name="worker", check="process", process=argv0), http)
        assert by_name(as_dicts(alive))["service_up"] == {
            "name": "service_up",
            "value": 1,
            "unit": "",
            "labels": {"service": "worker", "check": "process"},
        }
    finally:
        proc.kill()
        await proc.wait()
    gone = await run_check(check(name="worker", check="process", process=argv0), http)
    assert by_name(as_dicts(gone))["service_up"]["value"] == 0
    # `process` defaults to the service name
    default = await run_check(check(name=argv0, check="process"), http)
    assert by_name(as_dicts(default))["service_up"]["value"] == 0


async def test_checks_run_concurrently(http, tcp_listener, closed_port, as_dicts: Dicts) -> None:
    silent = [
        {
            "name": f"s{i}",
            "check": "http",
            "url": f"http://127.0.0.1:{tcp_listener}/",
            "timeout_seconds": 0.5,
        }
        for i in range(4)
    ]
    config = CollectorConfig.model_validate(
        {"services": [*silent, {"name": "closed", "check": "tcp", "port": closed_port}]}
    )
    start = time.monotonic()
    samples = as_dicts(await run_checks(config.services, http))
    assert time.monotonic() - start < 1.5  # not 4 x 0.5 s
    assert [s["labels"]["service"] for s in samples] == ["s0", "s1", "s2", "s3", "closed"]
    assert all(s["value"] == 0 for s in samples)
