from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from medbay.collector.config import ScrapeTarget
from medbay.collector.scrape import sanitize_name, scrape, scrape_all

Dicts = Callable[..., list[dict[str, Any]]]

PAGE = b"""\
# HELP http_requests_total Requests handled.
# TYPE http_requests_total counter
http_requests_total{method="get",code="200"} 1027
http_requests_total{method="post",code="500",scrape_job="theirs"} 3
# TYPE temperature_celsius gauge
temperature_celsius 21.5
# TYPE request_seconds histogram
request_seconds_bucket{le="0.1"} 5
request_seconds_bucket{le="+Inf"} 7
request_seconds_sum 1.5
request_seconds_count 7
not_a_number NaN
{"dotted.name", zone="a"} 4
"""
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def target(url: str, **fields: Any) -> ScrapeTarget:
    return ScrapeTarget.model_validate({"name": "app", "url": url, **fields})


def series(samples: list[dict[str, Any]]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s["name"], tuple(sorted(s["labels"].items()))): s["value"] for s in samples}


async def test_scrape_page(web, as_dicts: Dicts) -> None:
    web.routes["/metrics"] = (200, TEXT_FORMAT, PAGE)
    async with httpx.AsyncClient() as http:
        samples = as_dicts(await scrape(target(web.url + "/metrics"), http))
    job = ("scrape_job", "app")
    assert series(samples) == {
        ("scrape_up", (job,)): 1,
        ("http_requests_total", (("code", "200"), ("method", "get"), job)): 1027,
        (
            "http_requests_total",
            (("code", "500"), ("exported_scrape_job", "theirs"), ("method", "post"), job),
        ): 3,
        ("temperature_celsius", (job,)): 21.5,
        ("request_seconds_bucket", (("le", "0.1"), job)): 5,
        ("request_seconds_bucket", (("le", "+Inf"), job)): 7,
        ("request_seconds_sum", (job,)): 1.5,
        ("request_seconds_count", (job,)): 7,
        ("dotted_name", (job, ("zone", "a"))): 4,
    }


async def test_sample_cap(web, as_dicts: Dicts) -> None:
    web.routes["/metrics"] = (200, TEXT_FORMAT, PAGE)
    async with httpx.AsyncClient() as http:
        samples = as_dicts(await scrape(target(web.url + "/metrics", max_samples=2), http))
    assert [s["name"] for s in samples] == ["scrape_up", *["http_requests_total"] * 2]


async def test_failed_scrapes_are_down(web, closed_port, as_dicts: Dicts) -> None:
    web.routes["/html"] = (200, "text/html", b"<html>hello</html>\n")
    targets = [
        target(web.url + "/html"),
        target(web.url + "/missing").model_copy(update={"name": "missing"}),
        target(f"http://127.0.0.1:{closed_port}/metrics").model_copy(update={"name": "closed"}),
    ]
    async with httpx.AsyncClient() as http:
        samples = as_dicts(await scrape_all(targets, http))
    assert [(s["name"], s["labels"], s["value"]) for s in samples] == [
        ("scrape_up", {"scrape_job": "app"}, 0),
        ("scrape_up", {"scrape_job": "missing"}, 0),
        ("scrape_up", {"scrape_job": "closed"}, 0),
    ]


def test_sanitize_name() -> None:
    assert sanitize_name("ok_name:total") == "ok_name:total"
    assert sanitize_name("dotted.name-x") == "dotted_name_x"
    assert sanitize_name("9lives") == "_9lives"
    assert sanitize_name("") == "_"
