"""Detector memory per tracked series, and the collector's CPU at its interval.

``medbay bench footprint [--series 10000,100000] [--collector-seconds 60]`` runs
a private nats-server (JetStream, temp dir, free port) and:

1. the real detector as a process. Its resident memory (VmRSS) is read once it
   is ready and idle (the baseline: everything but series state), then after it
   has taken in N series: hosts of 50 series each (the realistic mix of
   ``bench/pipeline.py``, anomaly-scored ones included), 3 scrapes per host so
   every series holds state. Memory per series = (RSS - baseline) / N, read at
   each N in one process. Target: under 2 KB per series.
2. the real collector as a process with its default config (host metrics and
   the top processes) at its default 5 s interval; its CPU time (user + system)
   over ``--collector-seconds`` after a warm-up, as a share of one core, and
   per scrape. Target: under 2 % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import numpy as np

from medbay.cli.bench import load
from medbay.common.access import DETECTOR_PARTITIONS
from medbay.common.events import new_event_id
from medbay.common.streams import METRICS, metrics_subject

harness = load("harness")
pipeline = load("pipeline")
SERIES_PER_HOST = 50
SCRAPES = 3


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise harness.BenchError(f"no VmRSS for pid {pid}")


def service_env(url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEDBAY_"))}
    env.update(
        MEDBAY_NATS_URL=url,
        MEDBAY_HTTP_PORT=str(port),
        MEDBAY_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def wait_healthy(port: int, proc: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise harness.BenchError(f"service exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise harness.BenchError("service not healthy in time")


async def settle(js: Any) -> None:
    """Until the detector has acked everything published, in every METRICS partition."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        infos = [await js.consumer_info(METRICS.name, d.name) for d in DETECTOR_PARTITIONS]
        if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        await asyncio.sleep(0.2)
    raise harness.BenchError("the detector did not catch up in 300 s")


async def detector_memory(url: str, root: Path, sizes: list[int]) -> dict[str, Any]:
    port = harness.free_port()
    argv = [sys.executable, "-m", "medbay.detector.main"]
    proc = harness.spawn(argv, root / "detector.log", service_env(url, port))
    try:
        wait_healthy(port, proc)
        nc = await nats.connect(url)
        js = nc.jetstream()
        await asyncio.sleep(2)  # let start-up garbage settle
        baseline = rss_bytes(proc.pid)
        hosts_needed = max(sizes) // SERIES_PER_HOST
        fleet = pipeline.Fleet(hosts_needed, SERIES_PER_HOST)
        start = datetime.now(UTC) - timedelta(minutes=10)
        rows: list[dict[str, Any]] = []
        fed = 0
        for size in sorted(sizes):
            hosts = size // SERIES_PER_HOST
            for scrape in range(SCRAPES):
                at = start + timedelta(seconds=5 * scrape)
                index = np.arange(fed, hosts)
                values = fleet.values(index)
                acks = [
                    js.publish(
                        metrics_subject(fleet.hosts[h]),
                        fleet.payload(new_event_id(), fleet.hosts[h], at, list(row)),
                    )
                    for h, row in zip(index, values, strict=True)
                ]
                for chunk in range(0, len(acks), 500):
                    await asyncio.gather(*acks[chunk : chunk + 500])
            fed = hosts
            await settle(js)
            await asyncio.sleep(1)
            rss = rss_bytes(proc.pid)
            rows.append(
                {
                    "series": size,
                    "rss_mib": rss / 2**20,
                    "bytes_per_series": (rss - baseline) / size,
                }
            )
        await nc.close()
        return {"baseline_rss_mib": baseline / 2**20, "rows": rows}
    finally:
        harness.stop(proc)


async def collector_cpu(url: str, root: Path, seconds: float) -> dict[str, Any]:
    port = harness.free_port()
    proc = harness.spawn(
        [sys.executable, "-m", "medbay.collector.main"],
        root / "collector.log",
        service_env(url, port),
    )
    try:
        wait_healthy(port, proc)
        await asyncio.sleep(12)  # two scrapes: rates need a previous reading
        before, t0 = harness.cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        used, elapsed = harness.cpu_seconds(proc.pid) - before, time.monotonic() - t0
        return {
            "seconds": elapsed,
            "cpu_seconds": used,
            "percent_of_one_core": 100 * used / elapsed,
            "cpu_ms_per_scrape": 1000 * used / (elapsed / 5.0),
        }
    finally:
        harness.stop(proc)


def report(r: dict[str, Any]) -> str:
    mem = r["detector"]
    lines = [
        f"Detector memory (idle baseline {mem['baseline_rss_mib']:.0f} MiB RSS; "
        "target under 2 KB per series)",
        f"  {'series':>8} {'RSS MiB':>9} {'bytes per series':>17}",
    ]
    for row in mem["rows"]:
        lines.append(
            f"  {row['series']:>8,} {row['rss_mib']:>9.0f} {row['bytes_per_series']:>17,.0f}"
        )
    cpu = r["collector"]
    lines.append(
        f"Collector CPU at a 5 s interval over {cpu['seconds']:.0f} s: "
        f"{cpu['percent_of_one_core']:.2f} % of one core "
        f"({cpu['cpu_ms_per_scrape']:.0f} ms per scrape; target under 2 %)"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        sizes = [int(s) for s in args.series.split(",")]
        if any(s < SERIES_PER_HOST for s in sizes):
            raise ValueError
    except ValueError:
        print(f"medbay bench footprint: --series wants sizes >= {SERIES_PER_HOST}", file=sys.stderr)
        return 1
    server = None
    with tempfile.TemporaryDirectory(prefix="medbay-bench-") as tmp:
        root = Path(tmp)
        try:
            server, url = harness.start_server(root)

            async def declare() -> None:
                nc = await nats.connect(url)
                await nc.jetstream().add_stream(config=METRICS.declaration())
                await nc.close()

            asyncio.run(declare())
            results = {
                "machine": harness.machine(),
                "detector": asyncio.run(detector_memory(url, root, sizes)),
                "collector": asyncio.run(collector_cpu(url, root, args.collector_seconds)),
            }
        except harness.BenchError as exc:
            print(f"medbay bench footprint: {exc}", file=sys.stderr)
            return 1
        finally:
            harness.stop(server)
    print(report(results))
    harness.RESULTS.mkdir(exist_ok=True)
    out = harness.RESULTS / f"footprint-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"  results: {out}")
    return 0
