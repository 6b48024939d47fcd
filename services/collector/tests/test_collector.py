from __future__ import annotations

import socket

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
    names = [s["name"] for s in batch.model_dump()["samples"]]
    # host metrics and checks come first, so only scraped samples are dropped
    assert {"memory_percent", "disk_percent", "service_up", "scrape_up"} <= set(names)
    assert 0 < names.count("big_series") < 3000
    assert collector.last_dropped == 3000 - names.count("big_series")
