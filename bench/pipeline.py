"""Detector throughput and publish-to-issue latency, against plain nats-py.

``medbay bench pipeline --hosts H --metrics M`` runs everything against one
private nats-server (JetStream, temp dir, free port on 127.0.0.1), so the
figures compare like with like on the same machine in the same minute:

1. publish a backlog of ``--messages`` MetricBatch messages (one per host
   scrape, M samples each, round-robin over H hosts) to METRICS, written in
   ``--schema-version`` 2 (samples as columns, as the collector writes them) or
   1 (a list of samples, as the previous release did);
2. raw baselines: a plain nats-py durable pull consumer fetches and acks them all
   (the baseline the detector's ratio is taken against); then the same with
   ``PullFeed``, the way the detector takes its batches (to see what of the
   detector's gain is the consuming and what the evaluating);
3. detector throughput: the real detector (a subprocess) drains the same backlog
   through a pre-created ``detector`` consumer; its consumer info is polled
   every 50 ms and the rate is taken from its first ack to its last;
4. latency: with the detector idle, scrapes are published on a clock at
   ``--latency-rate`` samples/s; in every 10 scrapes of each host (staggered
   over hosts) ``service_up{service="bench"}`` is 0 for as many scrapes in a
   row as the default service_down rule needs (``for_samples``), so the
   detector opens an issue, and the next scrapes resolve it. Each issue event
   is matched to the scrape that caused it (host and ``last_seen ==
   collected_at``); latency is its arrival time minus the time just before
   that scrape was published.

The figures are printed and written to ``bench/results/pipeline-<timestamp>.json``.
``--detector-command`` (hidden) replaces the detector's command line, e.g. to run
it under ``python -m cProfile -o FILE -m medbay.detector.main``.

No dataclasses here: ``medbay.cli.bench`` executes this file without putting it
in ``sys.modules``, and ``dataclass`` needs that under ``from __future__ import
annotations``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import nats
import numpy as np
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import Field, TypeAdapter

from medbay.cli.bench import load
from medbay.common.access import DETECTOR_PARTITIONS
from medbay.common.bus import ConsumerSpec, PullFeed
from medbay.common.events import IssueChange, MetricBatch, SampleColumns
from medbay.common.streams import DEADLETTER, METRICS, metrics_subject
from medbay.detector.config import DetectorConfig, ThresholdRule

harness = load("harness")

RAW_CONSUMER = "bench-raw"
FEED_CONSUMER = "bench-feed"
FETCH = 256
PUBLISH_WINDOW = 500
POLL_SECONDS = 0.05
CROSSING_EVERY = 10  # every 10th latency scrape of a host has service_up = 0
STRAGGLER_SECONDS = 5.0
MAX_PAYLOAD = 512 * 1024  # the detector's default max_event_bytes
ISSUE: TypeAdapter[IssueChange] = TypeAdapter(Annotated[IssueChange, Field(discriminator="type")])

# --- the detector ---------------------------------------------------------------


def detector_argv(command: str | None) -> list[str]:
    return shlex.split(command) if command else [sys.executable, "-m", "medbay.detector.main"]


def start_detector(url: str, root: Path, command: str | None) -> subprocess.Popen[bytes]:
    """The real detector, logging warnings and errors to ``root/detector.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEDBAY_"))}
    env.update(
        MEDBAY_NATS_URL=url,
        MEDBAY_HTTP_PORT="0",
        MEDBAY_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return harness.spawn(detector_argv(command), root / "detector.log", env)


# --- synthetic hosts ---------------------------------------------------------------


class Series(NamedTuple):
    """One series of a host: its name, labels, unit and how its values are drawn."""

    name: str
    labels: dict[str, str]
    unit: str
    mean: float
    sd: float
    low: float
    high: float  # kept below every threshold


BENCH_SERIES = Series("service_up", {"service": "bench"}, "", 1, 0, 0, 1)
CORE = (
    BENCH_SERIES,
    Series("cpu_percent", {}, "percent", 35, 8, 0, 70),
    Series("memory_percent", {}, "percent", 55, 4, 0, 80),
    Series("load1", {}, "", 1.2, 0.3, 0, 8),
    Series("disk_percent", {"mount": "/"}, "percent", 42, 0.3, 0, 85),
    Series("service_up", {"service": "api"}, "", 1, 0, 1, 1),
    Series("service_latency_ms", {"service": "api"}, "ms", 20, 3, 1, 500),
    Series("net_errors", {"interface": "eth0"}, "", 2, 1, 0, 50),
    Series("postgres_query_latency_ms", {"service": "postgres"}, "ms", 4, 1, 0.1, 500),
)
FAMILIES = (  # (name, label, unit, mean, sd, low, high)
    ("disk_percent", "mount", "percent", 50, 0.3, 0, 85),
    ("service_up", "service", "", 1, 0, 1, 1),
    ("service_latency_ms", "service", "ms", 30, 5, 1, 500),
    ("net_errors", "interface", "", 1, 1, 0, 50),
    ("http_requests_per_second", "route", "", 120, 15, 0, 1e6),
    ("queue_depth", "queue", "", 10, 3, 0, 1e6),
    ("temperature_celsius", "sensor", "celsius", 48, 2, 0, 120),
    ("process_rss_mb", "process", "MiB", 300, 10, 0, 1e6),
)


def host_series(m: int) -> list[Series]:
    """M distinct series: ``service_up{service="bench"}`` first, then a realistic mix."""
    series = list(CORE[:m])
    for k in range(len(series), m):
        name, label, unit, mean, sd, low, high = FAMILIES[k % len(FAMILIES)]
        series.append(Series(name, {label: f"{label}{k}"}, unit, mean, sd, low, high))
    return series


class Fleet:
    """H hosts sharing one series layout, each with its own normal levels."""

    def __init__(self, hosts: int, m: int, version: int = 2, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.hosts = [f"bench-host-{i:04d}" for i in range(hosts)]
        self.series = host_series(m)
        self.version = version
        label_sets: list[dict[str, str]] = []
        for s in self.series:
            if s.labels not in label_sets:
                label_sets.append(s.labels)
        self.columns = {
            "names": [s.name for s in self.series],
            "units": [s.unit for s in self.series],
            "label_index": [label_sets.index(s.labels) for s in self.series],
            "label_sets": label_sets,
        }
        base = np.array([s.mean for s in self.series])
        spread = np.where([s.sd > 0 for s in self.series], 0.1, 0.0)
        self.means = base * (1 + self.rng.uniform(-1, 1, (hosts, m)) * spread)

    def values(self, host_index: np.ndarray) -> np.ndarray:
        """One row of values per scrape of ``host_index[i]``, below all thresholds."""
        sd = np.array([s.sd for s in self.series])
        low = np.array([s.low for s in self.series])
        high = np.array([s.high for s in self.series])
        noise = self.rng.standard_normal((len(host_index), len(self.series)))
        values: np.ndarray = np.round(np.clip(self.means[host_index] + noise * sd, low, high), 3)
        return values

    def payload(self, event_id: str, host: str, at: datetime, row: list[float]) -> bytes:
        batch = MetricBatch(
            event_id=event_id,
            schema_version=self.version,
            host=host,
            collected_at=at,
            samples=SampleColumns(values=row, **self.columns),
        )
        return batch.model_dump_json().encode()


class Scrape(NamedTuple):
    """One message, serialised once, with what is needed to match its issue events."""

    event_id: str
    host: str
    subject: str
    collected_at: datetime
    payload: bytes
    bench_up: float = 1.0


def backlog_scrapes(fleet: Fleet, n: int, start: datetime) -> list[Scrape]:
    """N scrapes round-robin over the hosts, 10 s apart per host, ending before ``start``."""
    h = len(fleet.hosts)
    index = np.arange(n) % h
    values = fleet.values(index).tolist()
    rounds = (n + h - 1) // h
    scrapes = []
    for i, row in enumerate(values):
        host = fleet.hosts[index[i]]
        at = start - timedelta(seconds=10 * (rounds - i // h))
        event_id = f"bench-backlog-{i:08d}"
        payload = fleet.payload(event_id, host, at, row)
        scrapes.append(Scrape(event_id, host, metrics_subject(host), at, payload))
    return scrapes


def latency_scrapes(fleet: Fleet, n: int, msg_rate: float, start: datetime) -> list[Scrape]:
    """N scrapes on schedule; in every 10 scrapes of a host the bench service is down
    for as many scrapes in a row as the default rule needs to open an issue."""
    h = len(fleet.hosts)
    index = np.arange(n) % h
    values = fleet.values(index)
    # staggered by host, so crossings are spread evenly instead of all hosts at once
    phase = (np.arange(n) // h + index) % CROSSING_EVERY
    down = phase >= CROSSING_EVERY - service_down_rule().for_samples
    values[:, 0] = np.where(down, 0.0, 1.0)  # column 0 is service_up{service="bench"}
    scrapes = []
    for i, row in enumerate(values.tolist()):
        host = fleet.hosts[index[i]]
        at = start + timedelta(microseconds=round(i * 1e6 / msg_rate))
        event_id = f"bench-latency-{i:08d}"
        payload = fleet.payload(event_id, host, at, row)
        subject = metrics_subject(host)
        scrapes.append(Scrape(event_id, host, subject, at, payload, row[0]))
    return scrapes


def service_down_rule() -> ThresholdRule:
    return next(r for r in DetectorConfig().thresholds if r.metric == "service_up")


def expected_crossings(scrapes: list[Scrape]) -> dict[tuple[str, int], None]:
    """(event type, scrape index) of every issue the bench series must open or resolve:
    the default rule opens after ``for_samples`` downs in a row, resolves after
    ``clear_samples`` ups in a row."""
    rule = service_down_rule()
    is_open: dict[str, bool] = {}
    streak: dict[str, int] = {}
    expected: dict[tuple[str, int], None] = {}
    for i, s in enumerate(scrapes):
        opened = is_open.get(s.host, False)  # the backlog left every host up
        wants_open = s.bench_up < 0.5
        streak[s.host] = streak.get(s.host, 0) + 1 if wants_open != opened else 0
        needed = rule.for_samples if wants_open else rule.clear_samples
        if wants_open != opened and streak[s.host] >= needed:
            expected[("issue.opened" if wants_open else "issue.resolved", i)] = None
            is_open[s.host] = wants_open
            streak[s.host] = 0
    return expected


# --- NATS steps -----------------------------------------------------------------------


class Inbox:
    """Issue events seen on core NATS, with their arrival times."""

    def __init__(self) -> None:
        self.events: list[tuple[float, bytes]] = []

    async def on_msg(self, msg: Msg) -> None:
        self.events.append((time.perf_counter(), msg.data))


async def publish_backlog(js: JetStreamContext, scrapes: list[Scrape]) -> dict[str, Any]:
    """Publish with publish_async in windows of ~500, each window gathered."""
    started = time.perf_counter()
    duplicates = 0
    for first in range(0, len(scrapes), PUBLISH_WINDOW):
        window = scrapes[first : first + PUBLISH_WINDOW]
        futures = [
            await js.publish_async(s.subject, s.payload, headers={"Nats-Msg-Id": s.event_id})
            for s in window
        ]
        async with asyncio.timeout(60):
            acks = await asyncio.gather(*futures)
        duplicates += sum(bool(a.duplicate) for a in acks)
    seconds = time.perf_counter() - started
    if duplicates:
        raise harness.BenchError(
            f"{duplicates} backlog messages were deduplicated: the ids collide"
        )
    stored = (await js.stream_info(METRICS.name)).state.messages
    if stored != len(scrapes):
        raise harness.BenchError(f"METRICS holds {stored} messages, expected {len(scrapes)}")
    return {"messages": len(scrapes), "seconds": seconds, "msgs_per_s": len(scrapes) / seconds}


def consumer_config(durable: str) -> ConsumerConfig:
    """A baseline's durable: every stored message, nothing held back for acks."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=1_000_000,
    )


async def drain(
    take: Callable[[], Awaitable[list[Msg]]], what: str, n: int, m: int, timeout: float
) -> dict[str, Any]:
    """Take sets and ack each message until all N are in; the rate and CPU per message."""
    got = 0
    cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + timeout
    while got < n and time.perf_counter() < deadline:
        try:
            msgs = await take()
        except TimeoutError:  # nats-py's timeout subclasses it
            continue
        for msg in msgs:
            await msg.ack()
        got += len(msgs)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    if got < n:
        raise harness.BenchError(f"{what} got {got} of {n} messages in {timeout:.0f} s")
    return {
        "messages": got,
        "seconds": seconds,
        "msgs_per_s": got / seconds,
        "samples_per_s": got * m / seconds,
        "cpu_us_per_msg": cpu / got * 1e6,
    }


async def raw_consume(js: JetStreamContext, n: int, m: int, timeout: float) -> dict[str, Any]:
    """Plain nats-py: a durable pull consumer, fetch(256) and ack each, until all N are in."""
    sub = await js.pull_subscribe(
        METRICS.subjects[0],
        durable=RAW_CONSUMER,
        stream=METRICS.name,
        config=consumer_config(RAW_CONSUMER),
    )
    try:
        return await drain(lambda: sub.fetch(FETCH, timeout=1), "raw consumer", n, m, timeout)
    finally:
        await sub.unsubscribe()
        await js.delete_consumer(METRICS.name, RAW_CONSUMER)


async def feed_consume(nc: Client, n: int, m: int, timeout: float) -> dict[str, Any]:
    """``PullFeed`` (as the detector consumes), sets of 256, ack each, until all N are in."""
    js = nc.jetstream()
    await js.add_consumer(METRICS.name, consumer_config(FEED_CONSUMER))
    feed = PullFeed(nc, METRICS.name, FEED_CONSUMER, batch=FETCH, wait=1.0)
    await feed.start()
    try:
        return await drain(lambda: feed.take(timeout=1), "PullFeed consumer", n, m, timeout)
    finally:
        await feed.stop()
        await js.delete_consumer(METRICS.name, FEED_CONSUMER)


async def create_detector_consumer(js: JetStreamContext) -> None:
    """The detector's durables (one per METRICS partition), created first with deliver ALL
    so they drain the backlog."""
    for durable in DETECTOR_PARTITIONS:
        spec = ConsumerSpec(durable.name, durable.filter_subject, METRICS)
        await js.add_consumer(
            METRICS.name,
            ConsumerConfig(
                name=durable.name,
                durable_name=durable.name,
                filter_subject=spec.subject,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                max_deliver=spec.max_deliver,
                ack_wait=spec.ack_wait,
                max_ack_pending=spec.max_ack_pending,
            ),
        )


def check_alive(proc: subprocess.Popen[bytes], root: Path) -> None:
    if proc.poll() is not None:
        raise harness.BenchError(f"detector exited with {proc.returncode}:\n{log_tail(root)}")


def log_tail(root: Path, lines: int = 20) -> str:
    path = root / "detector.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


async def detector_drain(
    js: JetStreamContext, proc: subprocess.Popen[bytes], root: Path, n: int, m: int, timeout: float
) -> dict[str, Any]:
    """Poll the detector's consumers until they have acked the whole backlog; time first to
    last ack."""
    launched = time.perf_counter()
    deadline = launched + timeout
    t_first = t_end = None
    acked_first = acked = 0
    cpu_first = cpu = 0.0
    while time.perf_counter() < deadline:
        check_alive(proc, root)
        infos = [await js.consumer_info(METRICS.name, d.name) for d in DETECTOR_PARTITIONS]
        now = time.perf_counter()
        acked = sum(i.ack_floor.consumer_seq if i.ack_floor else 0 for i in infos)
        waiting = sum((i.num_pending or 0) + (i.num_ack_pending or 0) for i in infos)
        if t_first is None and acked > 0:
            t_first, acked_first, cpu_first = now, acked, harness.cpu_seconds(proc.pid)
        if acked >= n and not waiting:
            t_end, cpu = now, harness.cpu_seconds(proc.pid) - cpu_first
            break
        await asyncio.sleep(POLL_SECONDS)
    if t_first is None or t_end is None:
        raise harness.BenchError(f"detector acked {acked} of {n} messages in {timeout:.0f} s")
    seconds = t_end - t_first
    counted = n - acked_first
    return {
        "messages": n,
        "startup_seconds": t_first - launched,
        "first_ack": acked_first,
        "counted_messages": counted,
        "seconds": seconds,
        "msgs_per_s": counted / seconds if seconds > 0 else float("nan"),
        "samples_per_s": counted * m / seconds if seconds > 0 else float("nan"),
        "wall_seconds": t_end - launched,
        "cpu_us_per_msg": cpu / counted * 1e6,
        "cpu_share_of_one_core": cpu / seconds if seconds > 0 else float("nan"),
    }


async def drain_checks(js: JetStreamContext, inbox: Inbox) -> dict[str, Any]:
    """Issue events seen while draining (only anomalies expected) and dead letters."""
    counts = classify(inbox.events)
    return {
        "issue_events": dict(counts),
        "unexpected_issue_events": sum(c for k, c in counts.items() if " threshold " in k),
        "dead_letters": await dead_letters(js),
    }


def classify(events: list[tuple[float, bytes]]) -> Counter[str]:
    """Count issue events by type and detector (anomaly events from sigma3 are expected)."""
    counts: Counter[str] = Counter()
    for _, data in events:
        event = ISSUE.validate_json(data)
        counts[f"{event.type} {event.detector} {event.metric}"] += 1
    return counts


async def dead_letters(js: JetStreamContext) -> int:
    try:
        return int((await js.stream_info(DEADLETTER.name)).state.messages)
    except NotFoundError:
        return 0


async def publish_paced(
    js: JetStreamContext, scrapes: list[Scrape], msg_rate: float
) -> tuple[list[float], dict[str, Any]]:
    """Send each scrape at its scheduled time; returns the time just before each publish."""
    sent = [0.0] * len(scrapes)
    inflight: list[asyncio.Future[Any]] = []
    t0 = time.perf_counter() + 0.1
    lag = 0.0
    for i, s in enumerate(scrapes):
        due = t0 + i / msg_rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sent[i] = time.perf_counter()
        lag = max(lag, sent[i] - due)
        future = await js.publish_async(s.subject, s.payload, headers={"Nats-Msg-Id": s.event_id})
        inflight.append(future)
        if len(inflight) >= 64:  # small windows, without holding the schedule
            inflight = [f for f in inflight if not f.done()]
            if len(inflight) >= 1000:
                async with asyncio.timeout(10):
                    await inflight.pop(0)
    async with asyncio.timeout(30):
        await asyncio.gather(*inflight)
    span = sent[-1] - sent[0]
    return sent, {
        "messages": len(scrapes),
        "target_msgs_per_s": msg_rate,
        "achieved_msgs_per_s": (len(scrapes) - 1) / span if span > 0 else float("nan"),
        "max_schedule_lag_ms": lag * 1000,
    }


def threshold_events(inbox: Inbox, start: int) -> int:
    """How many threshold issue events arrived after index ``start`` (a cheap byte test)."""
    return sum(b'"detector":"threshold"' in data for _, data in inbox.events[start:])


async def wait_for_events(
    inbox: Inbox, start: int, want: int, proc: subprocess.Popen[bytes]
) -> None:
    """Wait (at most a few seconds) for ``want`` threshold events, then 1 s more for repeats."""
    deadline = time.perf_counter() + STRAGGLER_SECONDS
    while time.perf_counter() < deadline and threshold_events(inbox, start) < want:
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(min(1.0, max(0.0, deadline - time.perf_counter())))


def match_events(
    events: list[tuple[float, bytes]], scrapes: list[Scrape], sent: list[float]
) -> dict[str, Any]:
    """Match each issue event to its scrape; latency = arrival - just before that publish."""
    by_key = {(s.host, s.collected_at): i for i, s in enumerate(scrapes)}
    expected = expected_crossings(scrapes)
    seen: Counter[tuple[str, int]] = Counter()
    crossing_ms: list[float] = []
    per_second: dict[int, list[float]] = {}
    anomaly_ms: list[float] = []
    unmatched: list[str] = []
    unexpected: list[str] = []
    for received, data in events:
        event = ISSUE.validate_json(data)
        index = by_key.get((event.host, event.last_seen))
        what = f"{event.type} {event.detector} {event.host} {event.metric}{event.labels or ''}"
        if index is None:
            unmatched.append(what)
            continue
        latency = (received - sent[index]) * 1000
        if event.detector != "threshold":
            anomaly_ms.append(latency)
        elif event.metric == BENCH_SERIES.name and event.labels == BENCH_SERIES.labels:
            key = (event.type, index)
            seen[key] += 1
            if key in expected and seen[key] == 1:
                crossing_ms.append(latency)
                per_second.setdefault(int(sent[index] - sent[0]), []).append(latency)
            else:
                unexpected.append(f"{what} (scrape {index})")
        else:
            unexpected.append(what)
    missing = [
        f"{kind} for scrape {i} ({scrapes[i].host})" for kind, i in expected if not seen[(kind, i)]
    ]
    return {
        "expected_events": len(expected),
        "crossing_events": len(crossing_ms),
        "missing": len(missing),
        "missing_examples": missing[:10],
        "unexpected": len(unexpected),
        "unexpected_examples": unexpected[:10],
        "unmatched": len(unmatched),
        "unmatched_examples": unmatched[:10],
        "anomaly_events": len(anomaly_ms),
        "latency_ms": harness.stats(crossing_ms),
        "anomaly_latency_ms": harness.stats(anomaly_ms),
        "max_latency_ms_by_second": [round(max(v), 1) for _, v in sorted(per_second.items())],
    }


async def latency_run(
    js: JetStreamContext,
    inbox: Inbox,
    proc: subprocess.Popen[bytes],
    fleet: Fleet,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """Paced scrapes with real crossings; match the issue events they cause."""
    m = len(fleet.series)
    msg_rate = rate / m
    count = max(2, round(msg_rate * seconds))
    scrapes = latency_scrapes(fleet, count, msg_rate, datetime.now(UTC))
    start = len(inbox.events)
    sent, publish = await publish_paced(js, scrapes, msg_rate)
    await wait_for_events(inbox, start, len(expected_crossings(scrapes)), proc)
    result = match_events(inbox.events[start:], scrapes, sent)
    publish["target_samples_per_s"] = rate
    publish["achieved_samples_per_s"] = publish["achieved_msgs_per_s"] * m
    return {"publish": publish, **result}


# --- the run ----------------------------------------------------------------------------


class Run:
    """What one benchmark run needs, and the children it must stop."""

    def __init__(self, args: argparse.Namespace, root: Path, url: str) -> None:
        self.args = args
        self.root = root
        self.url = url
        self.detector: subprocess.Popen[bytes] | None = None


async def run(bench: Run) -> dict[str, Any]:
    """Steps 1 to 5; the caller stops whatever is still running."""
    args = bench.args
    n, m = args.messages, args.metrics
    fleet = Fleet(args.hosts, m, args.schema_version)
    started = time.perf_counter()
    scrapes = backlog_scrapes(fleet, n, datetime.now(UTC))
    biggest = max(len(s.payload) for s in scrapes)
    if biggest > MAX_PAYLOAD:
        raise harness.BenchError(
            f"a scrape is {biggest} bytes; the detector takes at most {MAX_PAYLOAD}"
        )
    prepare = time.perf_counter() - started
    nc: Client = await nats.connect(bench.url, name="medbay-bench", allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(config=METRICS.declaration())
        published = await publish_backlog(js, scrapes)
        del scrapes
        raw = await raw_consume(js, n, m, timeout=30 + n / 1000)
        feed = await feed_consume(nc, n, m, timeout=30 + n / 1000)
        inbox = Inbox()
        await nc.subscribe("medbay.issues.>", cb=inbox.on_msg)
        await nc.flush()
        await create_detector_consumer(js)
        bench.detector = proc = start_detector(bench.url, bench.root, args.detector_command)
        drained = await detector_drain(js, proc, bench.root, n, m, timeout=60 + n * m / 10_000)
        await asyncio.sleep(0.5)  # events published just before the last ack
        drained.update(await drain_checks(js, inbox))
        # the baseline again, now the detector idles: the mean of the two is what the
        # detector is measured against, so a machine that slows or speeds up while the
        # benchmark runs (a shared one) moves both sides alike
        raw_after = await raw_consume(js, n, m, timeout=30 + n / 1000)
        raw["after_samples_per_s"] = raw_after["samples_per_s"]
        raw["after_cpu_us_per_msg"] = raw_after["cpu_us_per_msg"]
        raw["baseline_samples_per_s"] = (raw["samples_per_s"] + raw_after["samples_per_s"]) / 2
        drained["ratio_to_raw"] = drained["samples_per_s"] / raw["baseline_samples_per_s"]
        drained["ratio_to_feed"] = drained["samples_per_s"] / feed["samples_per_s"]
        check_alive(proc, bench.root)
        latency = await latency_run(js, inbox, proc, fleet, args.latency_rate, args.latency_seconds)
        latency["dead_letters"] = await dead_letters(js) - drained["dead_letters"]
        stop_started = time.perf_counter()
        code = await asyncio.to_thread(harness.stop, proc)
        detector_stop = {
            "exit_code": code,
            "seconds": time.perf_counter() - stop_started,
            "killed": code == -signal.SIGKILL,
        }
    finally:
        await nc.close()
    return {
        "benchmark": "pipeline",
        "params": {
            "hosts": args.hosts,
            "metrics": m,
            "messages": n,
            "schema_version": args.schema_version,
            "latency_rate": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "detector_command": detector_argv(args.detector_command),
        },
        "prepare_seconds": prepare,
        "payload_bytes": {"max": biggest},
        "publish": published,
        "raw": raw,
        "feed": feed,
        "detector": drained,
        "latency": latency,
        "detector_stop": detector_stop,
        "detector_log_tail": log_tail(bench.root, 10),
    }


# --- report ------------------------------------------------------------------------------


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def stop_text(stopped: dict[str, Any]) -> str:
    if stopped["killed"]:
        return f"no exit {stopped['seconds']:.0f} s after SIGTERM: SIGKILLed"
    return f"exit {stopped['exit_code']} {stopped['seconds']:.2f} s after SIGTERM"


def report(r: dict[str, Any]) -> str:
    """The figures as a readable table."""
    p, raw, feed, det = r["params"], r["raw"], r["feed"], r["detector"]
    lat = r["latency"]
    pub, ls, mc = lat["publish"], lat["latency_ms"], r["machine"]
    anomaly = sum(c for k, c in det["issue_events"].items() if " threshold " not in k)
    rows: list[tuple[str, str]] = [
        (
            "setup",
            f"{p['hosts']} hosts x {p['metrics']} samples/scrape, {p['messages']:,} msgs, "
            f"MetricBatch version {p['schema_version']}",
        ),
        ("message size", f"{r['payload_bytes']['max']:,} bytes max"),
        ("backlog publish", f"{fmt(r['publish']['msgs_per_s'])} msgs/s"),
        (
            "raw nats-py consume",
            f"{fmt(raw['msgs_per_s'])} msgs/s  {fmt(raw['samples_per_s'])} samples/s; "
            f"after the detector {fmt(raw['after_samples_per_s'])} samples/s",
        ),
        (
            "raw PullFeed consume",
            f"{fmt(feed['msgs_per_s'])} msgs/s  {fmt(feed['samples_per_s'])} samples/s",
        ),
        (
            "detector drain",
            f"{fmt(det['msgs_per_s'])} msgs/s  {fmt(det['samples_per_s'])} samples/s",
        ),
        (
            "detector / raw",
            f"{det['ratio_to_raw']:.2f} (of the mean of both raw runs; goal >= 0.5)",
        ),
        ("detector / PullFeed", f"{det['ratio_to_feed']:.2f}"),
        (
            "CPU per message",
            f"raw consumer {raw['cpu_us_per_msg']:.0f} us, PullFeed {feed['cpu_us_per_msg']:.0f} "
            f"us, detector {det['cpu_us_per_msg']:.0f} us "
            f"(detector busy {det['cpu_share_of_one_core']:.0%} of a core while draining)",
        ),
        (
            "detector startup",
            f"{det['startup_seconds']:.2f} s to first ack; drain {det['seconds']:.2f} s",
        ),
        (
            "drain issue events",
            f"{anomaly} anomaly, {det['unexpected_issue_events']} unexpected; "
            f"{det['dead_letters']} dead letters",
        ),
        (
            "latency run",
            f"target {fmt(pub['target_samples_per_s'])} samples/s = "
            f"{fmt(pub['target_msgs_per_s'], 1)} msgs/s; "
            f"achieved {fmt(pub['achieved_msgs_per_s'], 1)} msgs/s "
            f"(max lag {pub['max_schedule_lag_ms']:.1f} ms)",
        ),
        (
            "crossing events",
            f"{lat['crossing_events']}/{lat['expected_events']} matched, "
            f"{lat['missing']} missing, {lat['unexpected']} unexpected, "
            f"{lat['unmatched']} unmatched",
        ),
    ]
    if ls["count"]:
        rows.append(
            (
                "latency ms",
                f"p50 {ls['p50']:.1f}  p90 {ls['p90']:.1f}  p99 {ls['p99']:.1f}  "
                f"max {ls['max']:.1f}  (n={ls['count']})",
            )
        )
    if lat["anomaly_latency_ms"]["count"]:
        al = lat["anomaly_latency_ms"]
        rows.append(
            ("anomaly events", f"{al['count']}, p50 {al['p50']:.1f} ms, max {al['max']:.1f} ms")
        )
    rows += [
        ("detector stop", stop_text(r["detector_stop"])),
        ("code", r["git"]["commit"][:12] + (" (modified)" if r["git"]["dirty"] else "")),
        (
            "machine",
            f"{mc['nproc']} CPUs ({mc['cpu']}), Python {mc['python']}, {mc['nats_server']}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["medbay bench pipeline", *(f"  {k:<{width}}  {v}" for k, v in rows)]
    for label in ("missing_examples", "unexpected_examples", "unmatched_examples"):
        lines += [f"  {label}: {x}" for x in lat[label]]
    return "\n".join(lines)


def save(results: dict[str, Any]) -> Path:
    harness.RESULTS.mkdir(exist_ok=True)
    path = harness.RESULTS / f"pipeline-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def check_args(args: argparse.Namespace) -> None:
    if args.hosts < 1 or not 1 <= args.metrics <= 20_000 or args.messages < args.hosts:
        raise harness.BenchError(
            "need --hosts >= 1, 1 <= --metrics <= 20000 and --messages >= --hosts"
        )
    if args.latency_rate <= 0 or args.latency_seconds <= 0:
        raise harness.BenchError("--latency-rate and --latency-seconds must be positive")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON; children are always stopped."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    server: subprocess.Popen[bytes] | None = None
    bench: Run | None = None
    try:
        check_args(args)
        info = harness.machine()
        with tempfile.TemporaryDirectory(prefix="medbay-bench-") as tmp:
            try:
                server, url = harness.start_server(Path(tmp))
                bench = Run(args, Path(tmp), url)
                results = asyncio.run(run(bench))
            finally:
                harness.stop(bench.detector if bench else None)
                harness.stop(server)
    except harness.BenchError as exc:
        print(f"medbay bench pipeline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("medbay bench pipeline: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    results = {
        "timestamp": datetime.now(UTC).isoformat(),
        "git": harness.git_state(),
        "machine": info,
        **results,
    }
    print(report(results))
    print(f"  results: {save(results)}")
    return 0
