"""Scraping Prometheus text endpoints into samples labelled ``scrape_job``."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Sequence

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from medbay.collector.config import ScrapeTarget
from medbay.collector.samples import SAMPLE, sample
from medbay.common.events import MetricSample

log = logging.getLogger(__name__)

ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")


def sanitize_name(name: str) -> str:
    """Make ``name`` match the metric name pattern ``^[a-zA-Z_:][a-zA-Z0-9_:]*$``."""
    name = _INVALID_NAME_CHARS.sub("_", name)
    return f"_{name}" if not name or name[0].isdigit() else name


def parse_exposition(text: str, job: str, max_samples: int) -> list[MetricSample]:
    """Samples of a text exposition page, at most ``max_samples``."""
    samples: list[MetricSample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not math.isfinite(s.value):
                continue
            labels = dict(s.labels)
            if "scrape_job" in labels:  # as Prometheus does with a clashing target label
                labels["exported_scrape_job"] = labels.pop("scrape_job")
            labels["scrape_job"] = job
            try:
                samples.append(
                    SAMPLE.validate_python(
                        {"name": sanitize_name(s.name), "value": s.value, "labels": labels}
                    )
                )
            except ValidationError:  # too many labels, or a name too long
                continue
            if len(samples) >= max_samples:
                log.warning("scrape %s: keeping only the first %d samples", job, max_samples)
                return samples
    return samples


async def scrape(target: ScrapeTarget, http: httpx.AsyncClient) -> list[MetricSample]:
    """The target's samples and ``scrape_up{scrape_job}``; never raises."""
    try:
        async with asyncio.timeout(target.timeout_seconds):
            response = await http.get(
                str(target.url), headers={"Accept": ACCEPT}, timeout=target.timeout_seconds
            )
            response.raise_for_status()
        samples = await asyncio.to_thread(
            parse_exposition, response.text, target.name, target.max_samples
        )
    except Exception as exc:  # unreachable, an error status, or not the text format
        log.debug("scrape %s failed: %r", target.name, exc)
        return [sample("scrape_up", 0.0, scrape_job=target.name)]
    return [sample("scrape_up", 1.0, scrape_job=target.name), *samples]


async def scrape_all(
    targets: Sequence[ScrapeTarget], http: httpx.AsyncClient
) -> list[MetricSample]:
    results = await asyncio.gather(*(scrape(t, http) for t in targets))
    return [s for samples in results for s in samples]
