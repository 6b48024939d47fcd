"""The gateway under a full history: list latency, WebSocket fan-out, memory.

``medbay bench gateway [--incidents 10000] [--clients 200] [--events 200] [--rate 20]
[--requests 200]`` runs a private nats-server (JetStream, temp dir, free port) with
every stream declared, and the real gateway as a process (``max_incidents`` =
``--incidents``, ``history_hours`` 72). In one run:

1. **Empty**: the gateway's RSS once it is ready on empty streams.
2. **History**: ``--incidents`` incidents published to the streams (publish_async in
   windows of 500): each an ``IssueOpened`` (its own fingerprint, one of 500 hosts),
   a ``Plan``; a quarter of the plans need approval and half of those stay pending,
   the others get an ``Approval`` where needed and two ``ActionResult`` (started,
   finished); 60 % of the issues resolve. Event times are spread over the last 48 h.
   The gateway reads them live; RSS once it holds them all.
3. **Restart**: the gateway is restarted and reads that history back from JetStream:
   the time until ``/healthz`` is 200, and RSS.
4. **HTTP**: ``--requests`` sequential GETs per endpoint over one keep-alive
   connection, with a viewer token. ``/healthz`` (no auth, tiny body) is the floor.
5. **WebSocket**: ``--clients`` clients in this process, unfiltered; ``--events``
   ``IssueOpened`` published at ``--rate``/s. Latency is each client's arrival time
   minus the time just before the publish (one clock). Baseline in the same run: a
   bare nats-py core subscriber on the same subject receiving the same events.
6. **Over the retention**: ``--incidents`` more incidents; the gateway keeps
   ``max_incidents`` of them (the least recently active go) and RSS should stay put.

Figures are printed and written to ``bench/results/gateway-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import psutil
import websockets
from nats.js import JetStreamContext

from medbay.cli.bench import load
from medbay.common.bus import event_headers
from medbay.common.events import (
    ActionResult,
    Approval,
    Event,
    IssueOpened,
    IssueResolved,
    Plan,
    PlanStep,
    Risk,
    Severity,
    derived_event_id,
    issue_fingerprint,
)
from medbay.common.streams import ALL_STREAMS, stream_for_subject, subject_for

harness = load("harness")
TOKEN = "bench-viewer-token-0123456789"
WINDOW = 500
KINDS = (("cpu", "cpu_percent"), ("memory", "memory_percent"), ("disk", "disk_percent"))
ENDPOINTS = (
    ("healthz (floor)", "/healthz"),
    ("incidents", "/api/incidents"),
    ("incidents, host filter", "/api/incidents?host=host-007"),
    ("incidents, 1000", "/api/incidents?limit=1000"),
    ("issues, open", "/api/issues?state=open"),
    ("approvals", "/api/approvals"),
    ("results", "/api/results"),
    ("incident detail", "/api/incidents/{fingerprint}"),
)


# --- events ----------------------------------------------------------------------------


def incident(i: int, now: datetime, rng: random.Random) -> tuple[str, list[Event]]:
    """Incident ``i``: its fingerprint and its events, as the services would publish them."""
    at = now - timedelta(seconds=rng.uniform(60, 48 * 3600))
    host = f"host-{i % 500:03d}"
    kind, metric = KINDS[i % len(KINDS)]
    labels = {"n": str(i)}
    fingerprint = issue_fingerprint(host, kind, metric, labels)
    common: dict[str, Any] = {
        "fingerprint": fingerprint,
        "host": host,
        "kind": kind,
        "resource": metric,
        "metric": metric,
        "labels": labels,
        "threshold": 90.0,
        "severity": Severity.CRITICAL,
        "detector": "threshold",
        "first_seen": at - timedelta(seconds=30),
    }
    issue = IssueOpened(timestamp=at, value=95.0, last_seen=at, **common)
    needs_approval = i % 4 == 0
    plan = Plan(
        event_id=derived_event_id("bench-plan", i),
        plan_id=derived_event_id("bench-plan", i),
        timestamp=at + timedelta(seconds=1),
        issue_fingerprint=fingerprint,
        issue_event_id=issue.event_id,
        host=host,
        issue_kind=kind,
        metric=metric,
        labels=labels,
        value=95.0,
        threshold=90.0,
        severity=Severity.CRITICAL,
        steps=[
            PlanStep(action="restart_service", target="app", risk=Risk.LOW, estimated_seconds=30)
        ],
        confidence=0.8,
        risk=Risk.LOW,
        estimated_seconds=30,
        requires_approval=needs_approval,
        model_version="rules-v1",
        features={"value": 95.0, "hour": 3.0},
    )
    events: list[Event] = [issue, plan]
    if needs_approval and i % 8 == 0:
        return fingerprint, events  # still pending
    if needs_approval:
        events.append(
            Approval(
                timestamp=at + timedelta(seconds=2),
                plan_id=plan.plan_id,
                decision="approve",
                decided_by="bench",
                channel="cli",
            )
        )
    for status, offset in (("started", 3), ("finished", 5)):
        finished = status == "finished"
        events.append(
            ActionResult(
                timestamp=at + timedelta(seconds=offset),
                plan_id=plan.plan_id,
                issue_fingerprint=fingerprint,
                issue_kind=kind,
                step_index=0,
                action="restart_service",
                target="app",
                host=host,
                status=status,
                outcome=("success" if i % 5 else "failure") if finished else None,
                output="restarted" if finished else "",
                verified=bool(i % 5) if finished else None,
                dry_run=False,
                started_at=at + timedelta(seconds=3),
                finished_at=at + timedelta(seconds=offset) if finished else None,
            )
        )
    if i % 5 < 3:
        resolved_at = at + timedelta(seconds=60)
        events.append(
            IssueResolved(timestamp=resolved_at, value=40.0, last_seen=resolved_at, **common)
        )
    return fingerprint, events


async def publish_all(js: JetStreamContext, events: list[Event]) -> float:
    """Publish in windows of ``WINDOW`` acks; the seconds it took."""
    started = time.perf_counter()
    for first in range(0, len(events), WINDOW):
        futures = []
        for event in events[first : first + WINDOW]:
            subject = subject_for(event)
            spec = stream_for_subject(subject)
            assert spec is not None
            futures.append(
                await js.publish_async(
                    subject,
                    event.model_dump_json().encode(),
                    headers=event_headers(event),
                    stream=spec.name,
                )
            )
        async with asyncio.timeout(60):
            await asyncio.gather(*futures)
    return time.perf_counter() - started


# --- the gateway process ----------------------------------------------------------------


class Gateway:
    def __init__(self, url: str, root: Path, incidents: int) -> None:
        self.root = root
        self.port = harness.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = root / "gateway.yaml"
        self.config.write_text(
            f"tokens: [{{name: bench, token: {TOKEN}, role: viewer}}]\n"
            f"history_hours: 72\nmax_incidents: {incidents}\n"
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEDBAY_"))}
        self.env.update(
            MEDBAY_NATS_URL=url,
            MEDBAY_HTTP_PORT=str(self.port),
            MEDBAY_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        self.proc: Any = None

    def start(self) -> float:
        """Start it; seconds until /healthz says 200 (the history is read)."""
        started = time.perf_counter()
        argv = [sys.executable, "-m", "medbay.gateway.main", "--config", str(self.config)]
        self.proc = harness.spawn(argv, self.root / "gateway.log", self.env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise harness.BenchError(f"gateway exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise harness.BenchError(f"gateway not ready after 120 s: {self.log_tail()}")

    def stop(self) -> None:
        harness.stop(self.proc)

    def rss_mib(self) -> float:
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def log_tail(self) -> str:
        path = self.root / "gateway.log"
        return path.read_text()[-1500:] if path.exists() else ""

    def gauge(self, text: str, name: str) -> float:
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    async def wait_events(self, total: int, timeout: float = 120) -> tuple[float, float]:
        """Until the gateway has read ``total`` events: (seconds waited, incidents held)."""
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=self.base) as client:
            while True:
                text = (await client.get("/metrics")).text
                read = sum(
                    float(v)
                    for v in re.findall(
                        r'^medbay_gateway_events_total\{phase="\w+",stream="(?:ISSUES|PLANS|'
                        r'APPROVALS|RESULTS)"\} ([0-9.e+]+)$',
                        text,
                        re.MULTILINE,
                    )
                )
                if read >= total:
                    held = self.gauge(text, "medbay_gateway_incidents")
                    return time.perf_counter() - started, held
                if time.perf_counter() - started > timeout:
                    raise harness.BenchError(f"gateway read {read:.0f} of {total} events")
                await asyncio.sleep(0.1)


# --- measurements -------------------------------------------------------------------------


async def http_latency(gateway: Gateway, fingerprints: list[str], n: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rng = random.Random(3)
    async with httpx.AsyncClient(base_url=gateway.base, headers=headers, timeout=30) as client:
        for name, path in ENDPOINTS:
            timings, sizes = [], []
            for _ in range(n):
                url = path.format(fingerprint=rng.choice(fingerprints))
                started = time.perf_counter()
                response = await client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise harness.BenchError(f"{url}: {response.status_code} {response.text}")
                sizes.append(len(response.content))
            results[name] = {**harness.stats(timings), "bytes": sum(sizes) // len(sizes)}
    return results


async def fanout(
    gateway: Gateway, url: str, clients: int, events: int, rate: float
) -> dict[str, Any]:
    """Latency from publish to each WebSocket client, and to a bare NATS subscriber."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sent: dict[str, float] = {}
    bare: list[tuple[float, str]] = []
    arrivals: list[list[tuple[str, float]]] = [[] for _ in range(clients)]

    async def on_bare(msg: Any) -> None:
        bare.append((time.time(), json.loads(msg.data)["event_id"]))

    await nc.subscribe("medbay.issues.opened.>", cb=on_bare)
    ws_url = f"ws://127.0.0.1:{gateway.port}/ws?token={TOKEN}"
    sockets = [await websockets.connect(ws_url, max_queue=None) for _ in range(clients)]
    for ws in sockets:
        await ws.recv()  # hello

    async def read(index: int, ws: Any) -> None:
        while len(arrivals[index]) < events:
            message = await ws.recv()
            at = time.time()
            envelope = json.loads(message)
            if envelope.get("kind") == "event" and envelope["type"] == "issue.opened":
                arrivals[index].append((envelope["event"]["event_id"], at))

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    now = datetime.now(UTC)
    rng = random.Random(11)
    started = time.perf_counter()
    for k in range(events):
        await asyncio.sleep(max(0.0, started + k / rate - time.perf_counter()))
        _, (issue, *_) = incident(10_000_000 + k, now, rng)  # a new incident each time
        sent[issue.event_id] = time.time()
        subject = subject_for(issue)
        await js.publish(
            subject, issue.model_dump_json().encode(), headers=event_headers(issue), stream="ISSUES"
        )
    _, pending = await asyncio.wait(readers, timeout=30)
    for task in pending:
        task.cancel()
    for ws in sockets:
        await ws.close()
    await nc.close()
    latencies = [(at - sent[eid]) * 1000 for got in arrivals for eid, at in got if eid in sent]
    bare_ms = [(at - sent[eid]) * 1000 for at, eid in bare if eid in sent]
    complete = sum(len(got) == events for got in arrivals)
    return {
        "clients": clients,
        "events": events,
        "rate": rate,
        "clients_with_every_event": complete,
        "deliveries": len(latencies),
        "websocket_ms": harness.stats(latencies),
        "bare_nats_ms": harness.stats(bare_ms),
    }


# --- the run -------------------------------------------------------------------------------


async def declare(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for spec in ALL_STREAMS:
        await js.add_stream(config=spec.declaration())
    await nc.close()


async def load_history(url: str, first: int, count: int) -> tuple[list[str], int, float]:
    """Publish incidents ``first..first+count``: fingerprints, events, seconds."""
    now = datetime.now(UTC)
    rng = random.Random(first)
    fingerprints, events = [], []
    for i in range(first, first + count):
        fingerprint, made = incident(i, now, rng)
        fingerprints.append(fingerprint)
        events.extend(made)
    nc = await nats.connect(url)
    seconds = await publish_all(nc.jetstream(), events)
    await nc.close()
    return fingerprints, len(events), seconds


async def measure(url: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    await declare(url)
    gateway = Gateway(url, root, args.incidents)
    memory: dict[str, float] = {}
    try:
        gateway.start()
        memory["empty"] = gateway.rss_mib()
        fingerprints, events, publish_s = await load_history(url, 0, args.incidents)
        read_s, held = await gateway.wait_events(events)
        memory["loaded"] = gateway.rss_mib()
        gateway.stop()
        restart_s = gateway.start()
        _, held_after_restart = await gateway.wait_events(events)
        memory["after restart"] = gateway.rss_mib()
        http = await http_latency(gateway, fingerprints, args.requests)
        ws = await fanout(gateway, url, args.clients, args.events, args.rate)
        _, more, _ = await load_history(url, args.incidents, args.incidents)
        _, held_over = await gateway.wait_events(events + args.events + more)
        memory["over retention"] = gateway.rss_mib()
    finally:
        gateway.stop()
    return {
        "history": {
            "incidents": args.incidents,
            "events": events,
            "publish_seconds": publish_s,
            "live_read_seconds": read_s,
            "held": held,
            "restart_ready_seconds": restart_s,
            "held_after_restart": held_after_restart,
            "held_over_retention": held_over,
            "events_over_retention": more,
        },
        "memory_mib": memory,
        "http_ms": http,
        "fanout": ws,
    }


def report(r: dict[str, Any]) -> str:
    h, m, f = r["history"], r["memory_mib"], r["fanout"]
    lines = [
        f"Gateway, {h['incidents']:,} incidents ({h['events']:,} events), "
        f"{r['machine']['nproc']} cores, load {r['machine']['loadavg_at_start'][0]:.1f}",
        f"  history: published in {h['publish_seconds']:.1f} s, read live in "
        f"{h['live_read_seconds']:.1f} s; restart ready (history read back) in "
        f"{h['restart_ready_seconds']:.1f} s; incidents held {h['held']:.0f} / after restart "
        f"{h['held_after_restart']:.0f}",
        f"  {'GET':<26} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>9}",
    ]
    for name, s in r["http_ms"].items():
        lines.append(
            f"  {name:<26} {s['p50']:>8.2f} {s['p90']:>8.2f} {s['p99']:>8.2f} "
            f"{s['max']:>8.2f} {s['bytes']:>9,}"
        )
    lines.append("  (target: list endpoints p99 under 50 ms)")
    ws, bare = f["websocket_ms"], f["bare_nats_ms"]
    lines += [
        f"  WebSocket fan-out: {f['clients']} clients, {f['events']} events at {f['rate']:g}/s; "
        f"{f['clients_with_every_event']} clients got every event ({f['deliveries']:,} deliveries)",
        f"  {'publish to receipt':<26} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}",
        f"  {'each WebSocket client':<26} {ws['p50']:>8.1f} {ws['p90']:>8.1f} "
        f"{ws['p99']:>8.1f} {ws['max']:>8.1f}",
        f"  {'baseline: bare nats-py':<26} {bare['p50']:>8.1f} {bare['p90']:>8.1f} "
        f"{bare['p99']:>8.1f} {bare['max']:>8.1f}",
        "  (target: p99 under 300 ms)",
        "  RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in m.items()),
        f"  over the retention: {h['events_over_retention']:,} more events, "
        f"incidents held {h['held_over_retention']:.0f} (max_incidents {h['incidents']:,})",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.incidents < 1 or args.clients < 1 or args.events < 1 or args.rate <= 0:
        print("medbay bench gateway: need positive --incidents, --clients, --events, --rate")
        return 1
    if args.requests < 1:
        print("medbay bench gateway: need --requests >= 1")
        return 1
    info = harness.machine()
    server = None
    with tempfile.TemporaryDirectory(prefix="medbay-bench-") as tmp:
        root = Path(tmp)
        try:
            server, url = harness.start_server(root)
            measured = asyncio.run(measure(url, root, args))
        except (harness.BenchError, TimeoutError, OSError) as exc:
            log = root / "gateway.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            print(f"medbay bench gateway: {exc!r}\n{tail}", file=sys.stderr)
            return 1
        finally:
            harness.stop(server)
    results = {"machine": info, "git": harness.git_state(), **measured}
    print(report(results))
    harness.RESULTS.mkdir(exist_ok=True)
    path = harness.RESULTS / f"gateway-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"  written to {path}")
    return 0
