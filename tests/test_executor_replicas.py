"""Executor replicas sharing plans under leases, as real processes on real servers.

A plan runs under its lease, which its executor renews while a step runs: a
second executor starting meanwhile (a rolling update) leaves the plan alone, and
the plan ends with the real result. When the executor running it is killed with
-9, another takes the plan over once the server has dropped the lease, reports
the step it was in interrupted (once, never run again), and ends the plan. An
executor frozen for longer than its lease that then gets through after all has the
last word: its real result replaces the interrupted one. A NATS node killed under a
running step takes nothing over: the renewals go on through the bucket's new leader.

The step's command waits for a file the test creates, so how long it runs is up
to the test, not to the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from medbay.common.bus import event_headers
from medbay.common.events import ActionResult, Plan, PlanFinished, new_event_id
from medbay.common.lease import LeaseRecord, read_holder
from medbay.common.reading import read
from medbay.common.records import EXECUTOR_RAILS, PLAN_BOOK, PlanRecord, read_plan
from medbay.common.streams import PLANS, PREFIX, RESULTS, plan_subject
from medbay.executor.rails import UNAVAILABLE, StepState, run_key, step_key
from tests import factories
from tests.helpers import wait_for

if TYPE_CHECKING:
    from conftest import NatsServer, SecuredCluster, StartReplica, StartService

TTL = 6
"""The plan lease's TTL in these tests (seconds), renewed every second: five seconds of
a stalled executor or server on a busy machine do not lose it."""
WAIT = 90.0
"""Seconds to wait for anything: generous, for a busy shared machine."""
T = TypeVar("T")


@dataclass
class Gated:
    """A command target whose one action appends ``run`` to ``runs``, waits until
    ``gate`` exists, then appends ``done``."""

    runs: Path
    gate: Path

    def config(self, tmp_path: Path, ttl: int = TTL, renew: float = 1) -> str:
        script = (
            f"echo run >> {self.runs}; while [ ! -e {self.gate} ]; do sleep 0.1; done; "
            f"echo done >> {self.runs}"
        )
        argv = json.dumps(["sh", "-c", script])
        path = tmp_path / "executor.yaml"
        path.write_text(
            "mode: live\n"
            "verify_window_seconds: 0.5\n"
            f"lease: {{ttl_seconds: {ttl}, renew_seconds: {renew}}}\n"
            "targets:\n"
            f"  gated: {{kind: command, commands: {{restart_service: {argv}}}}}\n"
            "safety:\n"
            "  allow: {restart_service: [gated]}\n"
            "  cooldown_seconds: 0\n"
        )
        return str(path)

    def lines(self) -> list[str]:
        return self.runs.read_text().split() if self.runs.exists() else []

    def open(self) -> None:
        self.gate.touch()


def gated_plan() -> Plan:
    return factories.plan(
        factories.step("restart_service", "gated"),
        plan_id=new_event_id(),
        host="test-host",
        labels={"service": "gated"},
    )


@dataclass
class Stored:
    """What RESULTS holds about one plan, in stream order (what consumers get: a
    repeat JetStream dropped as a duplicate is not here)."""

    results: list[tuple[int, ActionResult]]
    ends: list[tuple[int, PlanFinished]]

    def finished(self) -> list[tuple[int, ActionResult]]:
        return [(seq, r) for seq, r in self.results if r.status == "finished"]


class Observer:
    """Reads what the executors leave: RESULTS, the plan book, the plan's lease; each
    read asked again while a cluster does not answer (a node lost, a leader elected)."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def stored(self, plan_id: str) -> Stored:
        return await patiently(lambda: self._stored(plan_id))

    async def _stored(self, plan_id: str) -> Stored:
        found = Stored([], [])
        async for msgs in read(self.js, RESULTS, ">"):
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if msg.subject.startswith(f"{PREFIX}.results."):
                    result = ActionResult.model_validate_json(msg.data)
                    if result.plan_id == plan_id:
                        found.results.append((seq, result))
                elif msg.subject.startswith(f"{PREFIX}.outcomes."):
                    end = PlanFinished.model_validate_json(msg.data)
                    if end.plan_id == plan_id:
                        found.ends.append((seq, end))
        return found

    async def record(self, plan_id: str) -> PlanRecord | None:
        async def read() -> PlanRecord | None:
            record, _ = await read_plan(await self.js.key_value(PLAN_BOOK.name), plan_id)
            return record

        return await patiently(read)

    async def lease(self, plan_id: str) -> LeaseRecord | None:
        async def read() -> LeaseRecord | None:
            rails = await self.js.key_value(EXECUTOR_RAILS.name)
            return await read_holder(rails, run_key(plan_id))

        return await patiently(read)

    async def claim(self, plan_id: str, index: int) -> StepState:
        async def read() -> StepState:
            rails = await self.js.key_value(EXECUTOR_RAILS.name)
            entry = await rails.get(step_key(plan_id, index))
            return StepState.model_validate_json(entry.value or b"")

        return await patiently(read)

    async def ended(self, plan_id: str, count: int = 1) -> Stored | None:
        """What RESULTS holds about the plan once it has ``count`` ends; None before."""
        stored = await self.stored(plan_id)
        return stored if len(stored.ends) >= count else None


async def patiently(read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, asked again while NATS does not answer, for up to ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return await read()
        except UNAVAILABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def publish_plan(js: JetStreamContext, plan: Plan) -> None:
    headers = {**event_headers(plan), "Nats-Msg-Id": plan.event_id}
    data = plan.model_dump_json().encode()
    await patiently(lambda: js.publish(plan_subject(plan), data, headers=headers))


async def started(observer: Observer, plan: Plan) -> LeaseRecord:
    """Wait until the plan's step has started; its lease as then."""

    async def step_started() -> bool:
        stored = await observer.stored(plan.plan_id)
        return any(r.status == "started" for _, r in stored.results)

    await wait_for("step started", step_started, timeout=WAIT)
    lease = await observer.lease(plan.plan_id)
    assert lease is not None
    return lease


async def test_a_replica_starting_during_a_long_step_leaves_it_to_its_executor(
    nats_server: NatsServer, services: StartService, tmp_path: Path
) -> None:
    """The rolling-update race: B starts while A's step outlasts the lease's TTL
    several times over; A's renewals keep B off, and the plan ends with A's result."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(config=PLANS.declaration())  # its owner, the planner, is not run
    observer = Observer(js)
    gated = Gated(tmp_path / "runs", tmp_path / "gate")
    config = gated.config(tmp_path)
    a = services("executor", "--config", config)
    try:
        plan = gated_plan()
        await publish_plan(js, plan)
        lease = await started(observer, plan)
        services("executor", "--config", config)  # B, while A's step runs

        # two TTLs after B is up, with the step still running: B never stepped in
        renewals: set[datetime] = set()
        until = time.monotonic() + 2 * TTL
        while time.monotonic() < until:
            stored = await observer.stored(plan.plan_id)
            assert stored.finished() == [] and stored.ends == [], (stored, a.logs()[-4000:])
            record = await observer.record(plan.plan_id)
            assert record is not None and record.state == "running"
            now = await observer.lease(plan.plan_id)
            assert now is not None and now.holder == lease.holder, a.logs()[-4000:]  # A's
            renewals.add(now.acquired_at)
            await asyncio.sleep(0.3)
        assert len(renewals) >= 3  # A renewed it over and over

        gated.open()
        stored = await wait_for("plan end", lambda: observer.ended(plan.plan_id), timeout=WAIT)
        [(result_seq, result)] = stored.finished()
        assert (result.outcome, result.verified) == ("success", False)  # A's own result
        assert "interrupted" not in result.output
        [(end_seq, end)] = stored.ends
        assert end_seq > result_seq  # the plan ended after A's result, not before
        assert (end.outcome, end.steps_run) == ("not_fixed", 1)
        record = await observer.record(plan.plan_id)
        assert record is not None and (record.state, record.outcome) == ("done", "not_fixed")
        assert gated.lines() == ["run", "done"]  # run once, to its end
        await asyncio.sleep(2 * TTL)  # and nothing more happens to it
        assert await observer.stored(plan.plan_id) == stored
    finally:
        gated.open()
        await nc.close()


async def test_a_killed_executors_step_is_reported_interrupted_once_its_lease_lapses(
    nats_cluster: SecuredCluster, cluster_services: StartReplica, tmp_path: Path
) -> None:
    """On a 3-node cluster: A is killed with -9 mid-step; B, already running, reports
    the step interrupted only once the server dropped A's lease, once, and ends the
    plan without running the step again."""
    planner = await nats.connect(**nats_cluster.client("planner"))  # no planner runs here
    await patiently(lambda: planner.jetstream().add_stream(config=PLANS.declaration(3)))
    reader: Client = await nats.connect(**nats_cluster.client("cli"))
    observer = Observer(reader.jetstream())
    gated = Gated(tmp_path / "runs", tmp_path / "gate")
    config = gated.config(tmp_path)
    a = cluster_services("executor", "--config", config, replica="a")
    try:
        plan = gated_plan()
        await publish_plan(planner.jetstream(), plan)
        await started(observer, plan)
        cluster_services("executor", "--config", config, replica="b")
        before = await observer.lease(plan.plan_id)
        a.stop(signal.SIGKILL)
        after = await observer.lease(plan.plan_id)  # A's last renewal, unless it lapsed already
        last_renewal = max(r.acquired_at for r in (before, after) if r is not None)
        stored = await wait_for("plan end", lambda: observer.ended(plan.plan_id), timeout=WAIT)
        [(_, result)] = stored.finished()  # one report, B's
        assert result.outcome == "interrupted" and result.output.startswith("interrupted")
        # not before the lease lapsed: TTL seconds after A's last renewal
        assert result.timestamp >= last_renewal + timedelta(seconds=TTL - 0.5), (
            result.timestamp,
            last_renewal,
        )
        [(_, end)] = stored.ends
        assert (end.outcome, end.steps_run, end.escalated) == ("interrupted", 1, False)
        record = await observer.record(plan.plan_id)
        assert record is not None and (record.state, record.outcome) == ("done", "interrupted")
        assert gated.lines() == ["run"]  # never run again
        await asyncio.sleep(2 * TTL)  # and reported once
        assert await observer.stored(plan.plan_id) == stored
    finally:
        gated.open()
        await planner.close()
        await reader.close()


async def test_an_executor_frozen_past_its_lease_that_gets_through_has_the_last_word(
    nats_server: NatsServer, services: StartService, tmp_path: Path
) -> None:
    """A is frozen (SIGSTOP) mid-step for longer than its lease: B takes the plan over
    and ends it interrupted. A then wakes up and its step gets through: its result (an
    event of its own, not dropped as a repeat of B's) is what the step's claim and the
    plan book keep, and the plan's last end is the real one."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(config=PLANS.declaration())
    observer = Observer(js)
    gated = Gated(tmp_path / "runs", tmp_path / "gate")
    config = gated.config(tmp_path)
    a = services("executor", "--config", config)
    assert a.proc is not None
    try:
        plan = gated_plan()
        await publish_plan(js, plan)
        await started(observer, plan)
        services("executor", "--config", config)  # B
        os.kill(a.proc.pid, signal.SIGSTOP)
        stored = await wait_for(
            "B's interrupted end", lambda: observer.ended(plan.plan_id), timeout=WAIT
        )
        [(_, interrupted)] = stored.finished()
        assert interrupted.output.startswith("interrupted")
        assert [e.outcome for _, e in stored.ends] == ["interrupted"]

        os.kill(a.proc.pid, signal.SIGCONT)
        gated.open()
        stored = await wait_for("A's end", lambda: observer.ended(plan.plan_id, 2), timeout=WAIT)
        by_b, by_a = (r for _, r in stored.finished())
        assert by_b == interrupted and by_a.event_id != interrupted.event_id
        assert (by_a.outcome, by_a.verified) == ("success", False)
        assert [e.outcome for _, e in stored.ends] == ["interrupted", "not_fixed"]
        record = await observer.record(plan.plan_id)
        assert record is not None and (record.state, record.outcome) == ("done", "not_fixed")
        claim = await observer.claim(plan.plan_id, 0)
        assert claim.outcome == "success" and claim.executor_id != ""
        assert gated.lines() == ["run", "done"]  # run once
    finally:
        if a.proc.poll() is None:
            os.kill(a.proc.pid, signal.SIGCONT)
        gated.open()
        await nc.close()


async def test_a_nats_node_killed_mid_step_takes_nothing_over(
    nats_cluster: SecuredCluster, cluster_services: StartReplica, tmp_path: Path
) -> None:
    """On a 3-node cluster, the node leading the executor's bucket is killed with -9
    while A's step runs: A's renewals go on through the new leader (the lease's TTL
    here outlasts the election even on a busy machine), B never steps in, and the
    plan ends with A's result."""
    planner = await nats.connect(**nats_cluster.client("planner"))
    await patiently(lambda: planner.jetstream().add_stream(config=PLANS.declaration(3)))
    reader: Client = await nats.connect(
        **nats_cluster.client("cli"), max_reconnect_attempts=-1, reconnect_time_wait=0.5
    )
    observer = Observer(reader.jetstream())
    gated = Gated(tmp_path / "runs", tmp_path / "gate")
    config = gated.config(tmp_path, ttl=15, renew=2)
    a = cluster_services("executor", "--config", config, replica="a")
    try:
        plan = gated_plan()
        await publish_plan(planner.jetstream(), plan)
        lease = await started(observer, plan)
        cluster_services("executor", "--config", config, replica="b")
        info = await patiently(lambda: reader.jetstream().stream_info(f"KV_{EXECUTOR_RAILS.name}"))
        assert info.cluster is not None
        leader = info.cluster.leader
        victim = next(n.index for n in nats_cluster.cluster.nodes if n.name == leader)
        nats_cluster.cluster.kill(victim)

        async def renewed_elsewhere() -> bool:
            """A new leader for the bucket, and A's renewal stored through it."""
            info = await reader.jetstream().stream_info(f"KV_{EXECUTOR_RAILS.name}")
            now = await observer.lease(plan.plan_id)
            return (
                info.cluster is not None
                and info.cluster.leader not in (None, leader)
                and now is not None
                and now.holder == lease.holder
                and now.acquired_at > lease.acquired_at
            )

        await wait_for("A's renewal through a new leader", renewed_elsewhere, timeout=WAIT)
        gated.open()
        try:
            stored = await wait_for("plan end", lambda: observer.ended(plan.plan_id), timeout=WAIT)
        except AssertionError as missing:
            raise AssertionError(f"{missing}; A's log:\n{a.logs()[-6000:]}") from None
        [(_, result)] = stored.finished()
        assert result.outcome == "success", a.logs()[-4000:]  # A's, never interrupted
        [(_, end)] = stored.ends
        assert end.outcome == "not_fixed"
        assert gated.lines() == ["run", "done"]
    finally:
        gated.open()
        await planner.close()
        await reader.close()
