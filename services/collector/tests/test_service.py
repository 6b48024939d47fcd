"""The collector as a process, against a real nats-server: batches on METRICS,
/healthz and /metrics, surviving a NATS outage, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import pytest
import yaml
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from medbay.common.events import MetricBatch
from medbay.common.streams import DAY, published_subject, stored_pattern

TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


async def wait_for_stream(js: JetStreamContext, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.stream_info("METRICS")
            return
        except nats.js.errors.NotFoundError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def fetch(js: JetStreamContext, count: int, timeout: float = 10) -> list[Msg]:
    sub = await js.pull_subscribe("medbay.metrics.>", stream="METRICS")
    msgs: list[Msg] = []
    deadline = time.monotonic() + timeout
    while len(msgs) < count and time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.TimeoutError):
            msgs += await sub.fetch(count - len(msgs), timeout=1)
    await sub.unsubscribe()
    return msgs


def http_port(log: Path, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := re.search(r"http://127\.0\.0\.1:(\d+)/healthz", log.read_text()):
            return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(f"no HTTP port in the log:\n{log.read_text()}")


async def test_collector_service(nats_server, tcp_listener, closed_port, web, tmp_path) -> None:
    web.routes["/metrics"] = (200, "text/plain", b"app_jobs_waiting 3\n")
    config = tmp_path / "collector.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "host": "e2e-host",
                "interval_seconds": 0.5,
                "top_processes": 2,
                "services": [
                    {"name": "listener", "check": "tcp", "port": tcp_listener},
                    {
                        "name": "nothing",
                        "check": "tcp",
                        "port": closed_port,
                        "startup_grace_seconds": 0,
                    },
                    {"name": "starting", "check": "tcp", "port": closed_port},
                ],
                "scrape": [{"name": "app", "url": web.url + "/metrics"}],
            }
        )
    )
    env = os.environ | {
        "MEDBAY_NATS_URL": nats_server.url,
        "MEDBAY_HTTP_PORT": "0",
        "MEDBAY_PUBLISH_TIMEOUT": "1",
        "MEDBAY_LOG_FORMAT": "text",
    }
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "medbay.collector.main", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await wait_for_stream(js)
        info = await js.stream_info("METRICS")
        assert info.config.max_age == DAY  # declared by its owner, the collector

        msgs = await fetch(js, 3)
        assert len(msgs) == 3, log.read_text()
        batches = [MetricBatch.model_validate_json(m.data) for m in msgs]
        for msg, batch in zip(msgs, batches, strict=True):
            assert published_subject(msg.subject) == "medbay.metrics.e2e-host"
            assert msg.headers is not None
            assert msg.headers["Nats-Msg-Id"] == batch.event_id
            assert TRACEPARENT.fullmatch(msg.headers["traceparent"])
            assert batch.host == "e2e-host"
        # every scrape is the root of its own trace
        assert len({m.headers["traceparent"].split("-")[1] for m in msgs if m.headers}) == 3
        gaps = [
            (b.collected_at - a.collected_at).total_seconds()
            for a, b in itertools.pairwise(batches)
        ]
        # on its interval (0.5 s) on average: a busy machine may delay one scrape, and the
        # next then comes sooner
        assert 0.3 < sum(gaps) / len(gaps) < 1.0, gaps

        # written as version 2: the samples as columns
        columns = json.loads(msgs[-1].data)["samples"]
        assert json.loads(msgs[-1].data)["schema_version"] == 2
        assert set(columns) == {"names", "values", "units", "label_index", "label_sets"}
        samples = list(batches[-1].samples)
        up = {s["labels"]["service"]: s["value"] for s in samples if s["name"] == "service_up"}
        assert up == {"listener": 1, "nothing": 0}  # "starting" is within its start-up grace
        for batch in batches:
            assert batch.check_errors == {
                "nothing": f"connection refused to 127.0.0.1:{closed_port}"
            }
        names = {s["name"] for s in samples}
        assert {"cpu_percent", "memory_percent", "disk_percent", "scrape_up"} <= names
        assert any(
            s["name"] == "app_jobs_waiting" and s["labels"] == {"scrape_job": "app"}
            for s in samples
        )

        port = http_port(log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/healthz")).status_code == 200

            # NATS goes away: the collector logs, counts and carries on.
            await nc.close()
            nats_server.stop()
            await asyncio.sleep(2.5)
            assert proc.returncode is None
            metrics = (await http.get("/metrics")).text
            failed = re.search(
                r'medbay_collector_scrape_failures_total\{stage="publish"\} (\S+)', metrics
            )
            assert failed and float(failed.group(1)) >= 1, metrics
            assert (await http.get("/healthz")).status_code == 503

        before = time.time()
        nats_server.start()
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            latest = await js.get_last_msg("METRICS", stored_pattern("medbay.metrics.e2e-host"))
            batch = MetricBatch.model_validate_json(latest.data or b"")
            if batch.collected_at.timestamp() > before:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"no batch after NATS came back:\n{log.read_text()}")
        await nc.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        try:
            status = await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            raise
    assert status == 0, log.read_text()
    assert time.monotonic() - stopped < 5
    text = log.read_text()
    assert "Traceback" not in text
    # a failing check is logged when it changes, not at every scrape
    assert text.count("nothing (tcp check) is down: connection refused to") == 1, text
    assert text.count("starting (tcp check) not judged yet: connection refused to") == 1, text
