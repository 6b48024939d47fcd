from __future__ import annotations

import socket
from pathlib import Path

from medbay.collector.collector import Collector
from medbay.collector.config import CollectorConfig


async def test_collect_once_keeps_batches_under_the_size_limit(web, tcp_listener) -> None:
    web.routes["/metrics"] = (
        200,
        "text/plain",
        "".join(f'big_series{{n="{i}"}} {i}\n' for i in range(3000)).encode(),
    )
    config = CollectorConfig.model_validate(
        {
            "services": [{"name": "listener", "check": "tcp", "port": tcp_listener}],
            "scrape": [{"name": "big", "url": web.url + "/metrics"}],
        }
    )
    collector = Collector(config, max_batch_bytes=50_000)
    try:
        batch = await collector.collect_once()
    finally:
        await collector.aclose()

    assert batch.host == socket.gethostname()
    assert len(batch.model_dump_json()) <= 50_000
    names = batch.samples.names
    # host metrics and checks come first, so only scraped samples are dropped
    assert {"memory_percent", "disk_percent", "service_up", "scrape_up"} <= set(names)
    assert 0 < names.count("big_series") < 3000
    assert collector.last_dropped == 3000 - names.count("big_series")


async def test_a_batch_says_why_each_judged_check_failed(
    web, tcp_listener, closed_port, tmp_path: Path
) -> None:
    web.routes["/health"] = (503, "text/plain", b"starting")
    (tmp_path / "app.log").write_bytes(b"x" * 2048)
    config = CollectorConfig.model_validate(
        {
            "top_processes": 2,
            "services": [
                {"name": "listener", "check": "tcp", "port": tcp_listener},
                {"name": "api", "check": "http", "url": web.url + "/health"},
                {"name": "db", "check": "tcp", "port": closed_port, "startup_grace_seconds": 0},
            ],
            "directories": [{"name": "logs", "path": str(tmp_path), "budget_bytes": 4096}],
        }
    )
    collector = Collector(config)
    try:
        batch = await collector.collect_once()
    finally:
        await collector.aclose()

    samples = list(batch.samples)
    up = {s["labels"]["service"]: s["value"] for s in samples if s["name"] == "service_up"}
    # api is still within its 60 s start-up grace: not judged, nothing about it
    assert up == {"listener": 1, "db": 0}
    assert not any(s.get("labels", {}).get("service") == "api" for s in samples)
    assert batch.check_errors == {"db": f"connection refused to 127.0.0.1:{closed_port}"}
    budget = [s for s in samples if s["name"] == "directory_budget_percent"]
    assert budget == [
        {
            "name": "directory_budget_percent",
            "value": 50,
            "unit": "%",
            "labels": {"directory": "logs"},
        }
    ]
