"""Faults on a running, scaled-out Medbay: what is lost, what is done twice, how fast it heals.

``medbay bench faults [--hosts 200] [--metrics 50] [--json FILE] [--soak 1h]`` starts a local
3-node NATS cluster (``medbay.cli.cluster``; every stream and bucket in 3 copies) and
replicas of the services as real processes: ``--detectors`` detectors sharing the METRICS
partitions, two planners and two approvers (one active, one standby) and two executors (in
dry-run) sharing their work. A load generator publishes one MetricBatch per host per
``--interval`` as the collectors would, and a probe host publishes a service outage every
``--probe-seconds`` (down, then up a moment later): each becomes an issue, a plan and a
step, so issues and plans flow all the time.

Then, one at a time, with ``--settle`` seconds between them, the faults: kill -9 one replica
of each service (the active one where there is one); kill -9 one NATS node (the one leading
fewest of METRICS, ISSUES and PLANS, never METRICS when another will do) and restart it;
kill -9 the node that leads METRICS and restart it; stop the node that leads METRICS with
SIGTERM (as a rolling update does) and restart it; restart the whole cluster. Each killed
replica is started again once the fault's window ends, as an orchestrator would.

A node killed with -9 takes the Raft groups it led (streams, buckets, consumers: a node leads
about a third of them) with it, and their followers wait nats-server's election timeout (a
fixed 4-9 s, not configurable) before they elect a new leader: that, not Medbay, bounds
"flowing again" after a crash. A node stopped with SIGTERM hands its leaderships over first.

For each fault it prints (and ``--json`` writes):

- ``lost``: acked events missing afterwards: metric batches JetStream acknowledged to the
  generator but no longer stored, plus issue, plan and result events seen on the wire but
  never stored;
- ``duplicate_issues``: an issue opened again while already open (two ``issue.opened``
  with different ids for one fingerprint, no resolution between);
- ``duplicate_plans``: more than one plan for one issue event;
- ``duplicate_steps``: a plan step started more than once;
- ``flowing_after_s``: from the fault until the first probe published after it has its plan
  (the pipeline flows again; the normal probe-to-plan time is printed as the baseline);
- ``takeover_s``: for a replica, until its work is held by another (detector: every
  partition leased again, none to the dead one; planner/approver: another replica active;
  executors share one work queue, so there is nothing to take over);
- ``lag_end``: the detectors' consumer lag (pending + unacknowledged) at the end of the window,
  and ``lag_recovered_s``: until it fell back below one interval's worth of batches.

``--scaling`` instead measures detector samples evaluated per CPU-second with one replica
and with ``--detectors``, under the same load (each on a fresh cluster, CPU time of the
detector processes, not wall time), ``--rounds`` times alternately, and prints each round's
ratio and their median: whether adding replicas wastes work.

``--soak 1h`` instead runs the load (``--hosts``, default 1,000 with ``--soak``) for that long
and prints each service's RSS after warm-up and at the end, and the lag at the end.

The cluster is not secured here (no users): the benchmark measures fault tolerance, and its
observer reads every consumer and bucket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from medbay.cli.bench import load
from medbay.cli.cluster import LocalCluster
from medbay.common.bus import event_headers
from medbay.common.events import MetricBatch, MetricSample
from medbay.common.kv import keys as kv_keys
from medbay.common.reading import read
from medbay.common.streams import (
    ISSUES,
    METRICS,
    PLANS,
    PREFIX,
    RESULTS,
    metrics_subject,
    token,
)

harness = load("harness")

FAULTS = (
    "detector",
    "planner",
    "approver",
    "executor",
    "nats-follower",
    "metrics-leader",
    "metrics-leader-sigterm",
    "cluster-restart",
)
"""The faults, in the order they run (``--faults`` picks some)."""
PROBE_HOST = "probe-host"
PROBE_SERVICES = 20
PROBE_PLANS = f"{PREFIX}.plans.{token(PROBE_HOST)}"
WIRE_SUBJECTS = ("medbay.issues.>", "medbay.plans.>", "medbay.results.>")


# --- the system under test -------------------------------------------------------------


@dataclass
class Replica:
    service: str
    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: Any = None
    killed: bool = False
    """Killed by a fault: started again when its window ends, not by ``supervise``."""
    crashes: int = 0

    def start(self) -> None:
        argv = [sys.executable, "-m", f"medbay.{self.service}.main"]
        self.proc = harness.spawn(argv, self.log, self.env)
        self.killed = False

    def kill(self) -> None:
        self.killed = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                body: dict[str, Any] = json.loads(r.read())
                return body
        except (OSError, ValueError):
            return None

    def role(self) -> str | None:
        body = self.health()
        info = body.get("info", {}) if body else {}
        role = info.get("role") if isinstance(info, dict) else None
        return str(role) if role else None

    def rss_mib(self) -> float:
        try:
            return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20
        except (psutil.Error, AttributeError):
            return float("nan")


def executor_config(root: Path) -> Path:
    names = [f"probe-{i}" for i in range(PROBE_SERVICES)]
    lines = ["mode: dry-run", "targets:"]
    lines += [f"  {n}: {{kind: process, command: ['true', {n}]}}" for n in names]
    lines += ["safety:", "  allow:", f"    restart_service: [{', '.join(names)}]"]
    path = root / "executor.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_replicas(root: Path, url: str, detectors: int) -> list[Replica]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEDBAY_"))}
    base.update(
        MEDBAY_NATS_URL=url,
        MEDBAY_NATS_REPLICAS="3",
        MEDBAY_LOG_LEVEL="WARNING",
        MEDBAY_EXECUTOR_CONFIG=str(executor_config(root)),
        PYTHONUNBUFFERED="1",
        OTEL_SDK_DISABLED="true",
    )
    counts = {"detector": detectors, "planner": 2, "approver": 2, "executor": 2}
    replicas = []
    for service, count in counts.items():
        for i in range(count):
            name = f"{service}-{chr(ord('a') + i)}"
            port = harness.free_port()
            env = {**base, "MEDBAY_HTTP_PORT": str(port), "MEDBAY_REPLICA_ID": name}
            replicas.append(Replica(service, name, port, env, root / f"{name}.log"))
    return replicas


# --- load and observation --------------------------------------------------------------


@dataclass
class Books:
    """What the generator had acknowledged and what the observer saw on the wire."""

    acked: dict[str, float] = field(default_factory=dict)
    """Metric batch event id -> when JetStream acknowledged it."""
    wire: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Issue/plan/result event id -> (subject, when seen)."""
    replies: dict[str, str] = field(default_factory=dict)
    """Reply subject of a publish seen on the wire -> its event id (to see its PubAck)."""
    wire_acked: set[str] = field(default_factory=set)
    """Wire events whose publisher JetStream acknowledged."""
    probes: list[tuple[float, str]] = field(default_factory=list)
    """(published at, probe service) of each outage."""
    probe_plans: list[float] = field(default_factory=list)
    """When each plan for the probe host was seen."""
    publish_errors: int = 0


def batch_for(host: str, metrics: int, rng: random.Random) -> MetricBatch:
    samples: list[MetricSample] = [
        {"name": f"bench_gauge_{i}", "value": round(50 + rng.gauss(0, 1), 3)}
        for i in range(metrics)
    ]
    return MetricBatch(host=host, collected_at=datetime.now(UTC), samples=samples)


def probe_batch(service: str, up: bool) -> MetricBatch:
    sample: MetricSample = {
        "name": "service_up",
        "value": 1.0 if up else 0.0,
        "labels": {"service": service},
    }
    return MetricBatch(host=PROBE_HOST, collected_at=datetime.now(UTC), samples=[sample])


async def publish(js: JetStreamContext, batch: MetricBatch, books: Books) -> None:
    data = batch.model_dump_json().encode()
    for _ in range(20):  # through a node's loss: the client reconnects, we retry
        try:
            await js.publish(
                metrics_subject(batch.host), data, headers=event_headers(batch), timeout=5
            )
        except Exception:
            books.publish_errors += 1
            await asyncio.sleep(0.5)
            continue
        books.acked[batch.event_id] = time.monotonic()
        return


async def generate(
    js: JetStreamContext, hosts: int, metrics: int, interval: float, books: Books
) -> None:
    rng = random.Random(7)
    names = [f"host-{i:05d}" for i in range(hosts)]
    limit = asyncio.Semaphore(64)

    async def one(host: str) -> None:
        async with limit:
            await publish(js, batch_for(host, metrics, rng), books)

    while True:
        started = time.monotonic()
        await asyncio.gather(*(one(h) for h in names))
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


async def probe(js: JetStreamContext, every: float, books: Books) -> None:
    n = 0
    while True:
        service = f"probe-{n % PROBE_SERVICES}"
        n += 1
        books.probes.append((time.monotonic(), service))
        for _ in range(2):  # two failed checks make an outage
            await publish(js, probe_batch(service, up=False), books)
            await asyncio.sleep(0.25)
        await asyncio.sleep(min(0.5, every / 4))
        await publish(js, probe_batch(service, up=True), books)
        await asyncio.sleep(max(0.0, every - 1.0))


async def quiet(_: Exception) -> None:
    return None


async def supervise(replicas: list[Replica]) -> None:
    """Start again a replica that exited by itself, as compose and k8s do; counted."""
    while True:
        await asyncio.sleep(1.0)
        for replica in replicas:
            if not replica.killed and replica.proc is not None and replica.proc.poll() is not None:
                replica.crashes += 1
                replica.start()


async def observe(nc: Client, books: Books) -> None:
    async def seen(msg: Msg) -> None:
        now = time.monotonic()
        event_id = (msg.headers or {}).get("Nats-Msg-Id")
        if event_id:
            books.wire.setdefault(event_id, (msg.subject, now))
            if msg.reply:
                books.replies[msg.reply] = event_id
        if msg.subject == PROBE_PLANS:
            books.probe_plans.append(now)

    async def reply(msg: Msg) -> None:
        """A PubAck (``{"stream": ..., "seq": ...}``) to a publish seen on the wire."""
        event_id = books.replies.pop(msg.subject, None)
        if event_id is not None and b'"seq"' in msg.data and b'"error"' not in msg.data:
            books.wire_acked.add(event_id)

    for subject in WIRE_SUBJECTS:
        await nc.subscribe(subject, cb=seen)
    await nc.subscribe("_INBOX.>", cb=reply)  # the cluster is not secured: one inbox space


# --- measures ---------------------------------------------------------------------------


async def detector_lag(js: JetStreamContext) -> int:
    lag = 0
    for info in await js.consumers_info(METRICS.name):
        if (info.name or "").startswith("detector"):
            lag += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return lag


async def partitions_held(js: JetStreamContext, dead: str) -> bool | None:
    """Whether every partition lease is held, none by ``dead`` (None: no partition leases)."""
    kv = await js.key_value("medbay_detector_state")
    try:
        keys = await kv_keys(kv, "partition.*")
    except Exception:
        return None
    if not keys:
        return None
    for key in keys:
        with contextlib.suppress(Exception):
            entry = await kv.get(key)
            if dead.encode() in (entry.value or b""):
                return False
    partitions = (await js.stream_info(METRICS.name)).config.subject_transform
    expected = _partition_count(partitions.dest if partitions else "")
    return expected is None or len(keys) >= expected


def _partition_count(dest: str) -> int | None:
    found = re.search(r"partition\((\d+)", dest)
    return int(found.group(1)) if found else None


async def stored_ids(js: JetStreamContext, spec: Any, subject: str = ">") -> dict[str, Any]:
    """Every stored message's Nats-Msg-Id -> (timestamp, decoded body or None)."""
    out: dict[str, Any] = {}
    async for msgs in read(js, spec, subject, batch=1024, idle_seconds=2):
        for msg in msgs:
            event_id = (msg.headers or {}).get("Nats-Msg-Id")
            if event_id:
                body = None if spec is METRICS else json.loads(msg.data)
                out[event_id] = (msg.metadata.timestamp, body)
    return out


@dataclass
class Window:
    name: str
    started: float
    ended: float = 0.0
    takeover_s: float | None = None
    flowing_after_s: float | None = None
    lag_recovered_s: float | None = None
    lag_end: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    """What each loss or repeat was: event ids, subjects, fingerprints."""

    def holds(self, at: float) -> bool:
        return self.started <= at < self.ended


def duplicates(
    issues: dict[str, Any], plans: dict[str, Any], results: dict[str, Any]
) -> list[tuple[str, datetime, str]]:
    """(kind, when, what) of every repeat: an issue opened while open, a second plan for an
    issue event, a step started again."""
    found: list[tuple[str, datetime, str]] = []
    open_now: dict[str, str] = {}
    for event_id, (at, body) in sorted(issues.items(), key=lambda v: v[1][0]):
        fingerprint = body.get("fingerprint")
        if body.get("type") == "issue.opened":
            if fingerprint in open_now:
                what = f"issue {fingerprint} opened as {open_now[fingerprint]}, then {event_id}"
                found.append(("duplicate_issues", at, what))
            open_now[fingerprint] = event_id
        elif body.get("type") == "issue.resolved":
            open_now.pop(fingerprint, None)
    seen_plans: set[str] = set()
    for at, body in sorted(plans.values(), key=lambda v: v[0]):
        if body.get("issue_event_id") in seen_plans:
            found.append(("duplicate_plans", at, f"plans for {body.get('issue_event_id')}"))
        seen_plans.add(body.get("issue_event_id"))
    started: set[tuple[str, int]] = set()
    for at, body in sorted(results.values(), key=lambda v: v[0]):
        if body.get("type") != "action.result" or body.get("status") != "started":
            continue
        step = (body["plan_id"], body["step_index"])
        if step in started:
            found.append(("duplicate_steps", at, f"step {step[1]} of {step[0]}"))
        started.add(step)
    return found


# --- the run ----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.cluster = LocalCluster(root / "cluster", str(harness.NATS_SERVER))
        self.replicas: list[Replica] = []
        self.books = Books()
        self.windows: list[Window] = []
        self.nc: Client | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.wall_at_start = datetime.now(UTC)
        self.mono_at_start = time.monotonic()
        self.outside: Counter[str] = Counter()
        self.outside_details: list[str] = []
        """Losses and repeats outside every fault's window (should be none)."""
        self.killed_node = 0
        self.totals: dict[str, int] = {}

    def wall_to_mono(self, at: datetime) -> float:
        return self.mono_at_start + (at - self.wall_at_start).total_seconds()

    async def start(self) -> JetStreamContext:
        self.cluster.start()
        self.nc = await nats.connect(
            servers=self.cluster.urls,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            error_cb=quiet,  # a node away is what is measured, not news
        )
        js = self.nc.jetstream()
        # The collector owns METRICS; it is not running here (the generator stands in for
        # every host's collector), so declare it as it would.
        await js.add_stream(config=METRICS.declaration(3))
        self.replicas = make_replicas(self.root, self.cluster.url, self.args.detectors)
        for replica in self.replicas:
            replica.start()
        self.tasks.append(asyncio.create_task(supervise(self.replicas)))
        await self.wait_healthy(self.replicas, 180)
        return js

    async def wait_healthy(self, replicas: list[Replica], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for replica in replicas:
            while (replica.health() or {}).get("status") != "ok":
                if time.monotonic() > deadline:
                    raise harness.BenchError(f"{replica.name} not healthy; see {replica.log}")
                await asyncio.sleep(0.5)

    def active(self, service: str) -> Replica:
        """The replica of ``service`` to kill: the active one where one is active."""
        candidates = [r for r in self.replicas if r.service == service]
        for replica in candidates:
            if replica.role() == "active":
                return replica
        return candidates[0]

    async def window(self, name: str, js: JetStreamContext, fault: Any, heal: Any) -> Window:
        w = Window(name, time.monotonic())
        self.windows.append(w)
        print(f"  {name} ...", flush=True)
        killed: Replica | None = await fault()
        settle_end = w.started + self.args.settle
        threshold = self.args.hosts  # one interval's batches
        while time.monotonic() < settle_end:
            now = time.monotonic() - w.started
            if (
                w.takeover_s is None
                and killed is not None
                and killed.service != "executor"
                and await self.taken_over(js, killed)
            ):
                w.takeover_s = now
            if w.flowing_after_s is None:
                planned = self.books.probe_plans
                if any(at > w.started and self.probe_after(w.started, at) for at in planned):
                    w.flowing_after_s = now
            with contextlib.suppress(Exception):
                lag = await detector_lag(js)
                if w.lag_recovered_s is None and lag <= threshold and now > 1:
                    w.lag_recovered_s = now
            await asyncio.sleep(0.25)
        with contextlib.suppress(Exception):
            w.lag_end = await detector_lag(js)
        await heal(killed)
        w.ended = time.monotonic()
        return w

    def probe_after(self, fault_at: float, plan_at: float) -> bool:
        """Whether a probe published after the fault could have caused a plan at ``plan_at``."""
        return any(fault_at <= sent <= plan_at for sent, _ in self.books.probes)

    async def taken_over(self, js: JetStreamContext, killed: Replica) -> bool:
        if killed.service == "detector":
            held = await partitions_held(js, killed.name)
            return bool(held)
        others = [r for r in self.replicas if r.service == killed.service and r is not killed]
        return any(r.role() == "active" for r in others)

    def kill_replica(self, service: str) -> Any:
        async def fault() -> Replica:
            victim = self.active(service)
            victim.kill()
            return victim

        return fault

    async def restart_replica(self, killed: Replica | None) -> None:
        if killed is not None:
            killed.start()
            await self.wait_healthy([killed], 120)

    async def leader_of(self, js: JetStreamContext, stream: str) -> int:
        info = await js.stream_info(stream)
        leader = info.cluster.leader if info.cluster else None
        for node in self.cluster.nodes:
            if node.name == leader:
                return node.index
        return 0

    async def run_faults(self, js: JetStreamContext) -> None:
        chosen = set(self.args.faults)
        for service in ("detector", "planner", "approver", "executor"):
            if service in chosen:
                await self.window(
                    f"kill -9 {service}", js, self.kill_replica(service), self.restart_replica
                )

        async def kill_follower() -> None:
            # the node leading the fewest of the pipeline's streams (METRICS last): when
            # each node leads one, the one leading ISSUES or PLANS
            leaders = [await self.leader_of(js, s.name) for s in (ISSUES, PLANS, METRICS)]
            victim = min(
                (n.index for n in self.cluster.nodes),
                key=lambda i: (leaders.count(i), leaders[-1] == i),
            )
            self.killed_node = victim
            self.cluster.kill(victim)

        async def kill_leader() -> None:
            self.killed_node = await self.leader_of(js, METRICS.name)
            self.cluster.kill(self.killed_node)

        async def restart_node(_: object) -> None:
            self.cluster.start_node(self.killed_node)
            await asyncio.to_thread(self.cluster.wait_ready, 60.0, [self.killed_node])

        async def stop_leader() -> None:
            self.killed_node = await self.leader_of(js, METRICS.name)
            await asyncio.to_thread(self.cluster.stop_node, self.killed_node)

        async def restart_all() -> None:
            await asyncio.to_thread(self.cluster.stop)
            for node in self.cluster.nodes:
                self.cluster.start_node(node.index)
            await asyncio.to_thread(self.cluster.wait_ready, 120.0)

        async def nothing(_: object) -> None:
            return None

        nodes = [
            ("nats-follower", "kill -9 a NATS node (follower)", kill_follower, restart_node),
            ("metrics-leader", "kill -9 the METRICS leader node", kill_leader, restart_node),
            ("metrics-leader-sigterm", "SIGTERM the METRICS leader", stop_leader, restart_node),
            ("cluster-restart", "restart the whole cluster", restart_all, nothing),
        ]
        for key, name, fault, heal in nodes:
            if key in chosen:
                await self.window(name, js, fault, heal)

    async def tally(self, js: JetStreamContext) -> None:
        """Count losses and repeats, each in the window where it happened."""
        metrics = await stored_ids(js, METRICS)
        issues = await stored_ids(js, ISSUES)
        plans = await stored_ids(js, PLANS)
        results = await stored_ids(js, RESULTS)
        stored = {**issues, **plans, **results}
        for event_id, acked_at in self.books.acked.items():
            if event_id not in metrics:
                self.count("lost", acked_at, f"metric batch {event_id}")
        for event_id, (subject, seen_at) in self.books.wire.items():
            if event_id in stored:
                continue
            if event_id in self.books.wire_acked:
                self.count("lost", seen_at, f"{subject} {event_id}, acknowledged")
            else:  # its publisher was never told it was stored, so it was not lost
                self.count("unconfirmed", seen_at, f"{subject} {event_id}, never acknowledged")
        for kind, at, what in duplicates(issues, plans, results):
            self.count(kind, self.wall_to_mono(at), what)
        self.totals = {
            "metric_batches_acked": len(self.books.acked),
            "issues": sum(1 for _, b in issues.values() if b.get("type") == "issue.opened"),
            "plans": len(plans),
            "steps_started": sum(1 for _, b in results.values() if b.get("status") == "started"),
            "publish_retries": self.books.publish_errors,
        }

    def count(self, kind: str, at: float, what: str) -> None:
        for w in self.windows:
            if w.holds(at):
                w.counts[kind] += 1
                w.details.append(f"{kind}: {what}")
                return
        self.outside[kind] += 1
        self.outside_details.append(f"{kind}: {what}")


async def baseline_latency(bench: Bench, seconds: float) -> dict[str, Any]:
    """Probe publish -> its plan, before any fault."""
    start = time.monotonic()
    await asyncio.sleep(seconds)
    probes = [(sent, s) for sent, s in bench.books.probes if sent >= start]
    plans = sorted(bench.books.probe_plans)
    values = []
    for sent, _ in probes:
        after = [at for at in plans if at >= sent]
        if after:
            values.append(after[0] - sent)
    figures: dict[str, Any] = harness.stats(values)
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="medbay-faults-"))
    bench = Bench(args, root)
    result: dict[str, Any] = {"machine": harness.machine(), "git": harness.git_state()}
    try:
        js = await bench.start()
        assert bench.nc is not None
        await observe(bench.nc, bench.books)
        bench.tasks += [
            asyncio.create_task(generate(js, args.hosts, args.metrics, args.interval, bench.books)),
            asyncio.create_task(probe(js, args.probe_seconds, bench.books)),
        ]
        if args.soak:
            result["soak"] = await soak(bench, js, args.soak)
            return result
        print(f"warming up for {args.warmup:g} s ...", flush=True)
        result["baseline_probe_to_plan_s"] = await baseline_latency(bench, args.warmup)
        await bench.run_faults(js)
        await asyncio.sleep(args.settle)
        for task in bench.tasks:
            task.cancel()
        await asyncio.gather(*bench.tasks, return_exceptions=True)
        await asyncio.sleep(5)  # the last events land
        await bench.tally(js)
        result["faults"] = [
            {
                "fault": w.name,
                "lost": w.counts["lost"],
                "duplicate_issues": w.counts["duplicate_issues"],
                "duplicate_plans": w.counts["duplicate_plans"],
                "duplicate_steps": w.counts["duplicate_steps"],
                "takeover_s": w.takeover_s,
                "flowing_after_s": w.flowing_after_s,
                "lag_recovered_s": w.lag_recovered_s,
                "lag_end": w.lag_end,
                "unconfirmed": w.counts["unconfirmed"],
                "details": w.details,
            }
            for w in bench.windows
        ]
        result["outside_windows"] = dict(bench.outside)
        result["outside_details"] = bench.outside_details
        result["crashes"] = {r.name: r.crashes for r in bench.replicas if r.crashes}
        result["totals"] = bench.totals
        return result
    finally:
        for task in bench.tasks:
            task.cancel()
        for replica in bench.replicas:
            harness.stop(replica.proc)
        if bench.nc is not None:
            with contextlib.suppress(Exception):
                await bench.nc.close()
        bench.cluster.stop()
        result["logs"] = str(root)


async def soak(bench: Bench, js: JetStreamContext, seconds: float) -> dict[str, Any]:
    warmup = min(300.0, seconds / 6)
    print(f"soak: warming up {warmup:g} s, then {seconds:g} s ...", flush=True)
    await asyncio.sleep(warmup)
    start = {r.name: r.rss_mib() for r in bench.replicas}
    stored_before = (await js.stream_info(METRICS.name)).state.last_seq
    lags = []
    began = time.monotonic()
    end_at = began + seconds
    while time.monotonic() < end_at:
        await asyncio.sleep(min(60.0, end_at - time.monotonic()))
        with contextlib.suppress(Exception):
            lags.append(await detector_lag(js))
    end = {r.name: r.rss_mib() for r in bench.replicas}
    stored = (await js.stream_info(METRICS.name)).state.last_seq - stored_before
    return {
        "seconds": seconds,
        "batches_per_second": stored / (time.monotonic() - began),
        "rss_mib_start": start,
        "rss_mib_end": end,
        "rss_growth": {n: (end[n] - start[n]) / start[n] for n in start if start[n] > 0},
        "lag_samples": lags,
        "lag_end": lags[-1] if lags else None,
        "lag_max": max(lags) if lags else None,
    }


def samples_evaluated(replica: Replica) -> float:
    """The detector's ``medbay_detector_samples_total`` from its /metrics (NaN if away)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    found = re.search(r"^medbay_detector_samples_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


async def measure_scaling(args: argparse.Namespace, count: int) -> dict[str, Any]:
    """Samples evaluated per detector CPU-second with ``count`` replicas on a fresh cluster."""
    root = Path(tempfile.mkdtemp(prefix=f"medbay-scaling-{count}-"))
    cluster = LocalCluster(root / "cluster", str(harness.NATS_SERVER))
    replicas = [r for r in make_replicas(root, cluster.url, count) if r.service == "detector"]
    nc = None
    tasks: list[asyncio.Task[None]] = []
    try:
        cluster.start()
        nc = await nats.connect(servers=cluster.urls)
        js = nc.jetstream()
        await js.add_stream(config=METRICS.declaration(3))
        for replica in replicas:
            replica.start()
        bench = Bench(args, root)
        bench.replicas = replicas
        await bench.wait_healthy(replicas, 180)
        books = Books()
        tasks.append(
            asyncio.create_task(generate(js, args.hosts, args.metrics, args.interval, books))
        )
        await asyncio.sleep(args.warmup)
        cpu0 = sum(harness.cpu_seconds(r.proc.pid) for r in replicas)
        samples0 = sum(samples_evaluated(r) for r in replicas)
        await asyncio.sleep(args.settle * 2)
        cpu = sum(harness.cpu_seconds(r.proc.pid) for r in replicas) - cpu0
        samples = sum(samples_evaluated(r) for r in replicas) - samples0
        return {
            "detectors": count,
            "samples": samples,
            "cpu_seconds": cpu,
            "samples_per_cpu_second": samples / cpu if cpu > 0 else float("nan"),
        }
    finally:
        for task in tasks:
            task.cancel()
        for replica in replicas:
            harness.stop(replica.proc)
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        cluster.stop()


async def scaling(args: argparse.Namespace) -> dict[str, Any]:
    """``--rounds`` pairs of runs, one replica then ``--detectors``, under the same offered
    load: scaling without waste. On a shared machine one run alone swings by a third, so each
    round's ratio compares two runs made minutes apart and the median ratio is the figure."""
    rounds = []
    for number in range(1, args.rounds + 1):
        one = await measure_scaling(args, 1)
        many = await measure_scaling(args, args.detectors)
        ratio = many["samples_per_cpu_second"] / one["samples_per_cpu_second"]
        print(
            f"round {number}: 1 replica {one['samples_per_cpu_second']:,.0f}, "
            f"{args.detectors} replicas {many['samples_per_cpu_second']:,.0f} samples per "
            f"CPU-s: {ratio:.1%}",
            flush=True,
        )
        rounds.append({"one": one, "many": many, "efficiency": ratio})
    ratios = [r["efficiency"] for r in rounds]
    return {
        "rounds": rounds,
        "efficiency": statistics.median(ratios),
        "efficiency_min": min(ratios),
        "efficiency_max": max(ratios),
    }


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"medbay bench faults: 3 NATS nodes, {args.detectors} detectors, 2 planners, "
        f"2 approvers, 2 executors; {args.hosts} hosts x {args.metrics} metrics every "
        f"{args.interval:g} s; commit {result['git']['commit'][:10]}"
        f"{' (dirty)' if result['git']['dirty'] else ''}",
    ]
    if "scaling" in result:
        sc = result["scaling"]
        for number, row in enumerate(sc["rounds"], 1):
            one, many = row["one"], row["many"]
            lines.append(
                f"  round {number}: 1 detector {one['samples']:,.0f} samples in "
                f"{one['cpu_seconds']:.1f} CPU-s, {many['detectors']} detectors "
                f"{many['samples']:,.0f} in {many['cpu_seconds']:.1f} CPU-s: "
                f"{row['efficiency']:.1%}"
            )
        lines.append(
            f"  {args.detectors} replicas / 1 replica, samples per CPU-second: median "
            f"{sc['efficiency']:.1%} over {len(sc['rounds'])} rounds (range "
            f"{sc['efficiency_min']:.1%} to {sc['efficiency_max']:.1%}; goal >= 90 %)"
        )
        return "\n".join(lines)
    if "soak" in result:
        soaked = result["soak"]
        rate = soaked["batches_per_second"]
        lines.append(
            f"offered during the soak: {rate:,.0f} batches/s, {rate * args.metrics:,.0f} "
            f"samples/s: each host scraped every {args.hosts / rate:.2f} s on average "
            "(the load generator's pace on this machine)"
        )
        lines.append(f"soak {soaked['seconds']:g} s: RSS MiB start -> end (growth)")
        for name, start in soaked["rss_mib_start"].items():
            growth = soaked["rss_growth"].get(name, float("nan"))
            end = soaked["rss_mib_end"][name]
            lines.append(f"  {name:<12} {start:7.1f} -> {end:7.1f} ({growth:+.1%})")
        lines.append(f"lag at the end {soaked['lag_end']}, max {soaked['lag_max']}")
        return "\n".join(lines)
    base = result["baseline_probe_to_plan_s"]
    if base.get("count"):
        lines.append(
            f"baseline probe -> plan: p50 {base['p50']:.2f} s, p99 {base['p99']:.2f} s "
            f"({base['count']} probes)"
        )
    header = (
        f"{'fault':<34} {'lost':>5} {'dup iss':>7} {'dup pl':>6} {'dup st':>6} "
        f"{'takeover':>9} {'flowing':>8} {'lag ok':>7} {'lag end':>7}"
    )
    lines += [header, "-" * len(header)]

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} s"

    for f in result["faults"]:
        lines.append(
            f"{f['fault']:<34} {f['lost']:>5} {f['duplicate_issues']:>7} "
            f"{f['duplicate_plans']:>6} {f['duplicate_steps']:>6} {s(f['takeover_s']):>9} "
            f"{s(f['flowing_after_s']):>8} {s(f['lag_recovered_s']):>7} {f['lag_end']:>7}"
        )
    for f in result["faults"]:
        lines += [f"  {f['fault']}: {what}" for what in f["details"]]
    lines.append(f"outside the fault windows: {result['outside_windows'] or 'nothing'}")
    lines += [f"  {what}" for what in result["outside_details"]]
    lines.append(f"replicas that exited by themselves (restarted): {result['crashes'] or 'none'}")
    lines.append(f"totals: {result['totals']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.hosts is None:
        args.hosts = 1000 if args.soak else 200
    args.faults = args.faults or list(FAULTS)
    if unknown := [f for f in args.faults if f not in FAULTS]:
        print(
            f"medbay bench faults: unknown --faults {', '.join(unknown)}; choose from "
            f"{', '.join(FAULTS)}",
            file=sys.stderr,
        )
        return 2
    try:
        if args.scaling:
            result = {
                "machine": harness.machine(),
                "git": harness.git_state(),
                "scaling": asyncio.run(scaling(args)),
            }
        else:
            result = asyncio.run(run(args))
    except harness.BenchError as exc:
        print(f"medbay bench faults: {exc}", file=sys.stderr)
        return 1
    print(report(result, args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"written to {args.json}")
    if "logs" in result:
        print(f"logs in {result['logs']}")
    return 0
