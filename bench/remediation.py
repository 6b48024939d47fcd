"""Time from a threshold-crossing sample to the executor starting the fix.

``medbay bench remediation [--incidents N] [--rate R]`` runs a private
nats-server (JetStream, temp dir, free port) with the real detector, planner and
executor as processes; the executor is in dry-run with one allowlisted
``process`` target per simulated service, so nothing is touched.

Each incident is one MetricBatch with ``service_up{service="svc-i"} = 0`` (a
threshold crossing: the detector's service_down rule needs one sample), for a
new service each time so that every incident is independent of cooldowns. The
clock starts just before that batch is published and stops when the executor's
``ActionResult`` with ``status: started`` for ``svc-i`` arrives; the issue and
plan arrival times give the share of each service.

Baseline, measured in the same run: the same message crossing three JetStream
hops (publish, consume, publish again, as detector, planner and executor do)
through three tiny nats-py relays in this process. The ratio says what Medbay's
own work adds to the bare bus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from medbay.cli.bench import load
from medbay.common.events import MetricBatch, MetricSample
from medbay.common.streams import METRICS, metrics_subject

harness = load("harness")
SERVICES = ("detector", "planner", "executor")
HOST = "bench-host"


def executor_config(root: Path, n: int) -> Path:
    names = [f"svc-{i}" for i in range(n)] + ["svc-warm"]
    lines = ["mode: dry-run", "targets:"]
    lines += [f"  {name}: {{kind: process, command: ['true', {name}]}}" for name in names]
    lines += ["safety:", "  allow:", f"    restart_service: [{', '.join(names)}]"]
    path = root / "executor.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_services(url: str, root: Path, n: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEDBAY_"))}
    env.update(
        MEDBAY_NATS_URL=url,
        MEDBAY_HTTP_PORT="0",
        MEDBAY_LOG_LEVEL="WARNING",
        MEDBAY_EXECUTOR_CONFIG=str(executor_config(root, n)),
        PYTHONUNBUFFERED="1",
    )
    return {
        name: harness.spawn(
            [sys.executable, "-m", f"medbay.{name}.main"], root / f"{name}.log", env
        )
        for name in SERVICES
    }


def down_batch(service: str) -> MetricBatch:
    sample: MetricSample = {"name": "service_up", "value": 0.0, "labels": {"service": service}}
    return MetricBatch(host=HOST, collected_at=datetime.now(UTC), samples=[sample])


class Clock:
    """Arrival times of each incident's issue, plan and started action, by service name."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.stages: dict[str, dict[str, float]] = {"issue": {}, "plan": {}, "started": {}}
        self.done: dict[str, asyncio.Event] = {}

    async def on_msg(self, msg: Msg) -> None:
        now = time.perf_counter()
        event = json.loads(msg.data)
        kind = event.get("type")
        if kind == "issue.opened":
            self.stages["issue"].setdefault(event["resource"], now)
        elif kind == "plan.created":
            self.stages["plan"].setdefault(event["steps"][0]["target"], now)
        elif kind == "action.result" and event["status"] == "started":
            self.stages["started"].setdefault(event["target"], now)
            if event["target"] in self.done:
                self.done[event["target"]].set()


async def incidents(url: str, n: int, rate: float, procs: dict[str, Any]) -> dict[str, Any]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    clock = Clock()
    for subject in ("medbay.issues.opened.>", "medbay.plans.>", "medbay.results.>"):
        await nc.subscribe(subject, cb=clock.on_msg)
    try:
        # warm-up: wait until the whole chain answers once
        clock.done["svc-warm"] = asyncio.Event()
        deadline = time.monotonic() + 90
        while not clock.done["svc-warm"].is_set():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise harness.BenchError(f"{name} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise harness.BenchError("no action started for the warm-up incident in 90 s")
            batch = down_batch("svc-warm")
            await js.publish(metrics_subject(HOST), batch.model_dump_json().encode())
            await asyncio.sleep(1.0)
        for i in range(n):
            name = f"svc-{i}"
            clock.done[name] = asyncio.Event()
            data = down_batch(name).model_dump_json().encode()
            clock.sent[name] = time.perf_counter()
            await js.publish(metrics_subject(HOST), data)
            await asyncio.sleep(1.0 / rate)
        waiting = [clock.done[f"svc-{i}"].wait() for i in range(n)]
        async with asyncio.timeout(60):
            await asyncio.gather(*waiting)
    finally:
        await nc.close()
    ms = {
        stage: [(times[name] - clock.sent[name]) * 1000 for name in clock.sent if name in times]
        for stage, times in clock.stages.items()
    }
    return {stage: harness.stats(values) for stage, values in ms.items()}


async def ensure_metrics_stream(url: str) -> None:
    """The collector owns METRICS; it is not running here, so declare it as it would."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(config=METRICS.declaration())
    finally:
        await nc.close()


async def relay_baseline(url: str, n: int, rate: float) -> dict[str, Any]:
    """The same message through three JetStream hops with bare nats-py relays."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(config=StreamConfig(name="BENCHHOPS", subjects=["hop.>"]))
    arrived: dict[bytes, float] = {}
    everything = asyncio.Event()

    async def relay(src: str, dst: str | None) -> None:
        sub = await js.pull_subscribe(f"hop.{src}", durable=f"relay-{src}", stream="BENCHHOPS")
        while True:
            try:
                msgs = await sub.fetch(64, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                if dst is None:
                    arrived[msg.data] = time.perf_counter()
                    if len(arrived) >= n:
                        everything.set()
                else:
                    await js.publish(f"hop.{dst}", msg.data)

    relays = [
        asyncio.create_task(relay("a", "b")),
        asyncio.create_task(relay("b", "c")),
        asyncio.create_task(relay("c", None)),
    ]
    sent: dict[bytes, float] = {}
    try:
        for i in range(n):
            data = down_batch(f"svc-{i}").model_dump_json().encode()
            sent[data] = time.perf_counter()
            await js.publish("hop.a", data)
            await asyncio.sleep(1.0 / rate)
        async with asyncio.timeout(60):
            await everything.wait()
    finally:
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        await nc.close()
    return dict(harness.stats([(arrived[d] - sent[d]) * 1000 for d in sent if d in arrived]))


def report(r: dict[str, Any]) -> str:
    lines = [
        f"Remediation latency, {r['incidents']} incidents at {r['rate']}/s, dry-run "
        f"({r['machine']['nproc']} cores, load {r['machine']['loadavg_at_start'][0]:.1f})",
        f"  {'from the crossing sample to':<34} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}",
    ]
    names = {
        "issue": "issue opened (detector)",
        "plan": "plan created (planner)",
        "started": "action started (executor)",
        "baseline": "baseline: 3 bare JetStream hops",
    }
    for key, label in names.items():
        s = r["latency_ms"][key]
        lines.append(f"  {label:<34} {s['p50']:>8.1f} {s['p90']:>8.1f} {s['p99']:>8.1f}")
    started, base = r["latency_ms"]["started"], r["latency_ms"]["baseline"]
    lines.append(
        f"  action started vs baseline: p50 {started['p50'] / base['p50']:.1f}x, "
        f"p99 {started['p99'] / base['p99']:.1f}x   (target: p99 under 1000 ms)"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.incidents < 1 or args.rate <= 0:
        print("medbay bench remediation: need --incidents >= 1 and --rate > 0", file=sys.stderr)
        return 1
    info = harness.machine()
    procs: dict[str, Any] = {}
    server = None
    with tempfile.TemporaryDirectory(prefix="medbay-bench-") as tmp:
        root = Path(tmp)
        try:
            server, url = harness.start_server(root)
            asyncio.run(ensure_metrics_stream(url))
            procs = start_services(url, root, args.incidents)
            latency = asyncio.run(incidents(url, args.incidents, args.rate, procs))
            latency["baseline"] = asyncio.run(relay_baseline(url, args.incidents, args.rate))
        except (harness.BenchError, TimeoutError) as exc:
            logs = "\n".join(
                f"--- {name}.log\n{(root / f'{name}.log').read_text()[-1500:]}"
                for name in SERVICES
                if (root / f"{name}.log").exists()
            )
            print(f"medbay bench remediation: {exc!r}\n{logs}", file=sys.stderr)
            return 1
        finally:
            for proc in procs.values():
                harness.stop(proc)
            harness.stop(server)
    results = {
        "incidents": args.incidents,
        "rate": args.rate,
        "machine": info,
        "git": harness.git_state(),
        "latency_ms": latency,
    }
    print(report(results))
    return 0
